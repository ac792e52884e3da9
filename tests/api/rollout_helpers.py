"""Helpers of the rollout tests: deliberately bad candidates (real folders) and background traffic."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

LONG_TWEETS = [
    "The refs completely blew that pass interference call in the fourth quarter and the league office will "
    "not even admit it, absolutely ridiculous officiating again tonight #NFL #refs",
    "Cannot believe we gave up three touchdowns in the second half after leading by twenty points at the break, "
    "the defense just stopped tackling and nobody on the sideline seemed to care at all",
    "What a season for the rookie quarterback, thirty touchdowns, a playoff win on the road and the whole city "
    "is finally excited about football again after all those miserable losing years",
]
POOL = [
    "Brady is the GOAT, what a comeback in the fourth quarter!",
    "Deflategate again? The refs and the league office are a joke.",
    "Kickoff is at 6:30 tonight on channel 4.",
    "Worst play calling I have ever seen, fire the coordinator",
    "Super Bowl parade downtown tomorrow, so proud of this team #champions",
    "Seahawks vs Patriots, week 12 preview",
    "That interception was painful to watch",
    "Great catch by Gronk, love this team",
]


def truncated_positions_model(src: Path, dst: Path, positions: int = 24) -> Path:
    """A copy whose position-embedding table has only `positions` rows: it loads, warms up and passes the
    smoke test (short texts), then raises on every tweet longer than `positions` tokens."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(src / "model.safetensors"))
    for k in list(weights):
        if "position_embeddings" in k:
            weights[k] = weights[k][:positions].contiguous()
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((src / "config.json").read_text())
    config["max_position_embeddings"] = positions
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def biased_model(src: Path, dst: Path, label_id: int = 2, shift: float = 3.0) -> Path:
    """A copy whose classifier bias pushes every answer to one label: valid outputs, a different model."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(src / "model.safetensors"))
    key = next(k for k in weights if k.startswith("classifier") and k.endswith("bias"))
    weights[key] = weights[key].clone()
    weights[key][label_id] += shift
    save_file(weights, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def slow_down(monkeypatch: Any, model_name: str, version: int, delay_s: float) -> None:
    """Every forward pass of `model_name` v`version` loaded by a serving process takes `delay_s` longer."""
    from nfl_mlops.modeling.predictor import SentimentModel

    original = SentimentModel.predict_proba
    target = f"{model_name}-v{version}"

    def predict_proba(self, texts, batch_size=64):
        if self.name == target:
            time.sleep(delay_s)
        return original(self, texts, batch_size)

    monkeypatch.setattr(SentimentModel, "predict_proba", predict_proba)


@dataclass
class Traffic:
    """Sequential requests from a background thread (unique keys), until stopped."""

    base_url: str
    texts: Callable[[int], str]
    responses: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    errors: list[str] = field(default_factory=list)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as c:
            i = 0
            while not self.stop_event.is_set():
                try:
                    r = c.post(
                        "/mlops/predict/sentiment",
                        json={"text": self.texts(i), "key": f"user-{i}-{id(self)}"},
                    )
                    self.statuses.append(r.status_code)
                    if r.status_code == 200:
                        self.responses.append({**r.json(), "received": time.time()})
                    else:
                        self.errors.append(r.text)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                i += 1

    def __enter__(self) -> Traffic:
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(60)
