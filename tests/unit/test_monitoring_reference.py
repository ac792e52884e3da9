"""The reference profile: descriptors, vocabulary, embeddings sample, prediction distributions; save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nfl_mlops.monitoring.reference import (
    CATEGORICAL,
    NUMERICAL,
    REFERENCE_DIR,
    build_reference,
    load_reference,
    save_reference,
)


class HashEncoder:
    """A deterministic stand-in for the sentence encoder: a bag of hashed words, L2-normalised."""

    name = "hash-encoder"
    dim = 16

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, sum(map(ord, w)) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)


TRAIN = [f"@united flight {i} delayed again, gate change #fail" for i in range(40)] + [
    f"thanks @delta for the upgrade {i}" for i in range(40)
]
TEST = [f"@united lost my bag {i} http://t.co/x" for i in range(30)] + [
    f"@jetblue great crew {i}" for i in range(30)
]


def proba(n: int, seed: int = 0) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet([3, 1, 1], n)
    return p


def test_build_reference_with_labels_and_embeddings():
    labels = ["negative"] * 30 + ["positive"] * 30
    profile = build_reference(TRAIN, TEST, proba(60), labels, encoder=HashEncoder(), embedding_sample=25)

    frame = profile.frame
    test_rows, train_rows = frame[frame["split"] == "test"], frame[frame["split"] == "train"]
    assert len(test_rows) == 60 and len(train_rows) == len(TRAIN)
    assert set(NUMERICAL) | set(CATEGORICAL) <= set(frame.columns)
    # predictions, correctness and OOV share only where they mean something
    assert test_rows["predicted_label"].notna().all() and train_rows["predicted_label"].isna().all()
    assert train_rows["confidence"].isna().all() and train_rows["oov_share"].isna().all()
    assert test_rows["oov_share"].notna().all()
    assert (test_rows["correct"] == (test_rows["true_label"] == test_rows["predicted_label"])).all()
    assert profile.has_labels
    # embeddings: a seeded sample of the test texts
    assert profile.embeddings.shape == (25, 16) and profile.encoder == "hash-encoder"
    again = build_reference(TRAIN, TEST, proba(60), labels, encoder=HashEncoder(), embedding_sample=25)
    np.testing.assert_array_equal(profile.embeddings, again.embeddings)
    # the prediction distributions
    shares = profile.meta["predictions"]["label_shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["negative"] == pytest.approx((test_rows["predicted_label"] == "negative").mean())
    assert set(profile.meta["predictions"]["confidence_quantiles"]) == {"0.05", "0.25", "0.5", "0.75", "0.95"}
    assert profile.meta["n_embeddings"] == 25 and profile.meta["has_labels"] is True


def test_save_and_load_round_trip(tmp_path):
    profile = build_reference(TRAIN, TEST, proba(60), ["neutral"] * 60, encoder=HashEncoder())
    folder = save_reference(profile, tmp_path)
    assert folder == tmp_path / REFERENCE_DIR
    assert {p.name for p in folder.iterdir()} == {
        "profile.parquet",
        "vocabulary.json",
        "embeddings.npy",
        "meta.json",
    }
    loaded = load_reference(tmp_path)
    # parquet hands missing labels back as None where the built frame had NaN: compare values, not null kinds
    pd.testing.assert_frame_equal(loaded.frame.fillna(np.nan), profile.frame.fillna(np.nan))
    assert loaded.vocabulary == profile.vocabulary
    np.testing.assert_array_equal(loaded.embeddings, profile.embeddings)
    assert loaded.meta["encoder"] == "hash-encoder"
    assert json.loads((folder / "meta.json").read_text())["n_test"] == 60


def test_without_encoder_or_labels_it_stays_cheap(tmp_path):
    profile = build_reference(TRAIN, TEST, proba(60))
    assert profile.embeddings is None and profile.encoder is None and not profile.has_labels
    save_reference(profile, tmp_path)
    assert not (tmp_path / REFERENCE_DIR / "embeddings.npy").exists()
    assert load_reference(tmp_path).embeddings is None


def test_profiles_written_before_embeddings_still_load(tmp_path):
    """The first format had only profile.parquet and vocabulary.json."""
    folder = tmp_path / REFERENCE_DIR
    folder.mkdir()
    build_reference(TRAIN, TEST, proba(60)).frame.drop(columns=["split"]).to_parquet(
        folder / "profile.parquet"
    )
    (folder / "vocabulary.json").write_text(json.dumps(["united"]))
    loaded = load_reference(tmp_path)
    assert loaded.embeddings is None and loaded.meta == {"format_version": 1} and not loaded.has_labels


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="probability rows"):
        build_reference(TRAIN, TEST, proba(59))
    with pytest.raises(ValueError, match="labels"):
        build_reference(TRAIN, TEST, proba(60), ["negative"] * 3)
    with pytest.raises(FileNotFoundError):
        load_reference(Path("/nonexistent-model-dir"))


def test_a_refreshed_reference_is_found_only_when_complete_and_the_newest_wins(tmp_path) -> None:
    from nfl_mlops.monitoring.reference import REFERENCE_DIR, latest_rebaseline, rebaseline_root

    assert latest_rebaseline(tmp_path, "m", 2) is None
    root = rebaseline_root(tmp_path, "m", 2)
    for name, complete in (("20261201T000000", True), ("20261203T000000", True), ("20261204T000000", False)):
        folder = root / name / REFERENCE_DIR
        folder.mkdir(parents=True)
        if complete:
            (folder / "meta.json").write_text("{}")
    assert latest_rebaseline(tmp_path, "m", 2) == root / "20261203T000000"  # a half-written one is ignored
    assert latest_rebaseline(tmp_path, "m", 3) is None  # per version


def test_a_version_holds_on_new_traffic_within_the_drop() -> None:
    from nfl_mlops.monitoring.reference import holds_on

    assert holds_on({"macro_f1": 0.70}, {"macro_f1": 0.72}, 0.05)
    assert not holds_on({"macro_f1": 0.60}, {"macro_f1": 0.72}, 0.05)
    assert not holds_on({"macro_f1": 0.90}, None, 0.05)  # nothing to compare with: no
