"""Unit tests of the pre-traffic smoke test and of experiment tracking (secret scrubbing, DB rows, W&B offline)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from nfl_mlops import LABEL2ID
from nfl_mlops.db import Experiment, session_scope
from nfl_mlops.rollout.smoke import SMOKE_CASES, smoke_test
from nfl_mlops.security import scrub
from nfl_mlops.tracking.experiments import ExperimentTracker, list_experiments

POS, NEG = LABEL2ID["positive"], LABEL2ID["negative"]

# --------------------------------------------------------------------------------------------
# smoke_test with fake models
# --------------------------------------------------------------------------------------------


class KeywordModel:
    """Scores texts containing a positive keyword as positive (or, inverted, as negative)."""

    POSITIVE_WORDS = ("love", "great", "amazing", "best", "proud", "awesome", "thank")

    def __init__(
        self, inverted: bool = False, delay: float = 0.0, nan: bool = False, unnormalised: bool = False
    ):
        self.inverted, self.delay, self.nan, self.unnormalised = inverted, delay, nan, unnormalised
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        time.sleep(self.delay)
        out = np.full((len(texts), 3), 0.1)
        for i, text in enumerate(texts):
            positive = any(w in text.lower() for w in self.POSITIVE_WORDS)
            out[i, POS if positive != self.inverted else NEG] = 0.8
        if self.nan:
            out[0, :] = np.nan
        if self.unnormalised:
            out *= 2
        return out


def test_good_model_passes() -> None:
    model = KeywordModel()
    result = smoke_test(model)
    assert result["passed"] is True
    assert result["valid_probabilities"] is True
    assert result["positive_margin"] == pytest.approx(0.7)
    assert 0 <= result["latency_ms"] < 5000
    assert model.calls == [SMOKE_CASES["positive"], SMOKE_CASES["negative"]]


def test_inverted_model_fails_on_direction() -> None:
    result = smoke_test(KeywordModel(inverted=True))
    assert result["passed"] is False
    assert result["valid_probabilities"] is True
    assert result["positive_margin"] == pytest.approx(-0.7)


def test_constant_model_fails_with_zero_margin() -> None:
    class Constant:
        def predict_proba(self, texts):
            return np.tile([0.2, 0.3, 0.5], (len(texts), 1))

    result = smoke_test(Constant())
    assert result["passed"] is False
    assert result["positive_margin"] == 0.0


def test_nan_model_fails_as_invalid() -> None:
    result = smoke_test(KeywordModel(nan=True))
    assert result["passed"] is False
    assert result["valid_probabilities"] is False
    assert result["positive_margin"] is None


def test_unnormalised_scores_are_invalid() -> None:
    result = smoke_test(KeywordModel(unnormalised=True))
    assert result["passed"] is False
    assert result["valid_probabilities"] is False


def test_slow_model_fails_latency() -> None:
    model = KeywordModel(delay=0.03)
    assert smoke_test(model, max_latency_ms=10.0)["passed"] is False
    result = smoke_test(model, max_latency_ms=5000.0)
    assert result["passed"] is True and result["latency_ms"] >= 60


def test_custom_cases_are_used() -> None:
    model = KeywordModel()
    cases = {"positive": ["love"], "negative": ["meh"]}
    assert smoke_test(model, cases=cases)["passed"] is True
    assert model.calls == [["love"], ["meh"]]


# --------------------------------------------------------------------------------------------
# scrub
# --------------------------------------------------------------------------------------------


def test_scrub_drops_secret_keys_and_values_recursively() -> None:
    config = {
        "epochs": 2,
        "learning_rate": 1e-4,
        "hf_token": "hf_abc",
        "WANDB_API_KEY": "k",
        "api-key": "k",
        "apikey": "k",
        "db_password": "p",
        "client_secret": "s",
        "credentials": {"user": "u"},
        "anything": SecretStr("hidden"),
        "nested": {"batch_size": 32, "token": "t", "deeper": {"Secret": "s", "keep": 1, "v": SecretStr("x")}},
        "tags": ["a", "b"],
    }
    out = scrub(config)
    assert out == {
        "epochs": 2,
        "learning_rate": 1e-4,
        "nested": {"batch_size": 32, "deeper": {"keep": 1}},
        "tags": ["a", "b"],
    }
    assert config["hf_token"] == "hf_abc"  # the input is not modified
    assert "hidden" not in json.dumps(out, default=str)


def test_scrub_keeps_ordinary_keys() -> None:
    config = {"base_model": "m", "max_length": 64, "seed": 1, "dataset": "corpus", "nullable": None}
    assert scrub(config) == config


# --------------------------------------------------------------------------------------------
# ExperimentTracker
# --------------------------------------------------------------------------------------------


def test_tracker_without_wandb_writes_db_row(settings) -> None:
    tracker = ExperimentTracker(settings, use_wandb=False)
    assert tracker.mode == "disabled"
    name = f"exp-{uuid.uuid4().hex[:8]}"
    exp_id = tracker.start(
        name, config={"epochs": 1, "hf_token": "hf_leak", "k": SecretStr("v")}, tags=["unit"]
    )
    assert tracker.tracker_run_id is None
    with session_scope() as s:
        row = s.get(Experiment, exp_id)
        assert (row.name, row.status, row.tracker) == (name, "running", "wandb-disabled")
        assert row.config == {"epochs": 1} and row.tags == ["unit"]
        assert row.finished_at is None
    tracker.log({"train_loss": 0.9, "note": "text is not a metric"}, step=1)
    tracker.log({"train_loss": 0.5}, step=2)
    tracker.finish({"test_macro_f1": 0.61})
    with session_scope() as s:
        row = s.get(Experiment, exp_id)
        assert row.status == "finished"
        assert row.metrics == {"train_loss": 0.5, "test_macro_f1": 0.61}
        assert row.finished_at is not None
    assert exp_id in {e.id for e in list_experiments()}


def test_tracker_failed_run_is_recorded(settings) -> None:
    tracker = ExperimentTracker(settings, use_wandb=False)
    exp_id = tracker.start(f"exp-{uuid.uuid4().hex[:8]}")
    tracker.finish(status="failed")
    with session_scope() as s:
        assert s.get(Experiment, exp_id).status == "failed"


def _settled_bytes(path: Path, until: bytes, timeout: float = 60.0) -> bytes:
    """The file's bytes once they contain `until` and have stopped growing (or at `timeout`)."""
    deadline = time.monotonic() + timeout
    previous = b""
    while True:
        data = path.read_bytes()
        if (until in data and data == previous) or time.monotonic() > deadline:
            return data
        previous = data
        time.sleep(0.25)


@pytest.fixture()
def fake_secrets(monkeypatch: pytest.MonkeyPatch):
    from nfl_mlops.settings import get_settings

    token = f"hf_TopSecret{uuid.uuid4().hex}"
    monkeypatch.setenv("HUGGINGFACE_TOKEN", token)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # no key: W&B stays offline
    get_settings.cache_clear()
    yield token
    monkeypatch.delenv("HUGGINGFACE_TOKEN")
    get_settings.cache_clear()


def test_wandb_offline_run_has_no_secret(fake_secrets: str) -> None:
    from nfl_mlops.settings import get_settings

    assert os.environ.get("WANDB_MODE") == "offline"
    settings = get_settings()
    tracker = ExperimentTracker(settings)
    assert tracker.mode == "offline"
    config = {
        "epochs": 1,
        "learning_rate": 1e-3,
        "huggingface_token": fake_secrets,
        "hub": {"token": fake_secrets, "repo": "org/x"},
        "key": settings.huggingface_token,
    }
    exp_id = tracker.start(f"exp-{uuid.uuid4().hex[:8]}", config=config, tags=["unit"])
    run_id = tracker.tracker_run_id
    run_dir = Path(tracker.run.dir)
    live_config = dict(tracker.run.config)
    tracker.log({"train_loss": 0.4}, step=1)
    tracker.finish({"test_macro_f1": 0.5})

    # the config W&B holds is the scrubbed one
    assert live_config["epochs"] == 1 and live_config["learning_rate"] == 1e-3
    assert dict(live_config["hub"]) == {"repo": "org/x"}
    assert not {"huggingface_token", "key"} & set(live_config)

    assert run_id
    assert settings.wandb_dir in run_dir.parents
    offline_runs = list(settings.wandb_dir.glob(f"wandb/offline-run-*-{run_id}"))
    assert len(offline_runs) == 1, list(settings.wandb_dir.rglob("offline-run-*"))
    run_root = offline_runs[0]
    [log_file] = run_root.glob("*.wandb")  # the offline run log that `wandb sync` uploads

    # The saved config: the run log stores config items as protobuf strings (key, JSON value).
    # W&B's service may still be writing the log when finish() returns (seen under CPU load): wait.
    saved = _settled_bytes(log_file, until=b'{"repo":"org/x"}')
    assert b"\x06epochs" in saved and b'{"repo":"org/x"}' in saved
    assert b"huggingface_token" not in saved
    config_yaml = run_root / "files" / "config.yaml"  # older W&B versions also write this
    if config_yaml.exists():
        import yaml

        assert not {"huggingface_token", "key"} & set(yaml.safe_load(config_yaml.read_text()))
    for path in run_root.rglob("*"):
        if path.is_file():
            assert fake_secrets.encode() not in path.read_bytes(), path

    with session_scope() as s:
        row = s.get(Experiment, exp_id)
        assert row.tracker == "wandb-offline"
        assert row.tracker_run_id == run_id
        assert row.run_dir == str(run_dir)
        assert row.metrics["test_macro_f1"] == 0.5 and row.status == "finished"
