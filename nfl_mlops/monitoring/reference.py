"""The reference profile a model version is monitored against, saved beside its weights.

It holds, for the version's held-out test texts: the text descriptors, the predicted label and
its confidence; and the vocabulary of its training texts (for the out-of-vocabulary share).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nfl_mlops import LABELS
from nfl_mlops.features.text import build_vocabulary, compute_features

REFERENCE_DIR = "reference"
NUMERICAL = ("n_chars", "n_words", "n_hashtags", "n_mentions", "n_urls", "n_nfl_entities", "oov_share",
             "confidence")
CATEGORICAL = ("topic", "predicted_label")


@dataclass(frozen=True)
class ReferenceProfile:
    frame: pd.DataFrame  # NUMERICAL + CATEGORICAL columns
    vocabulary: frozenset[str]


def monitoring_frame(texts: Sequence[str], labels: Sequence[str], confidences: Sequence[float],
                     vocabulary: frozenset[str]) -> pd.DataFrame:
    """Descriptors + prediction columns of a set of texts, as monitoring compares them."""
    feats = compute_features(list(texts), vocabulary=vocabulary)
    feats["predicted_label"] = list(labels)
    feats["confidence"] = np.asarray(confidences, dtype=float)
    return feats[list(NUMERICAL) + list(CATEGORICAL)]


def build_reference(train_texts: Sequence[str], test_texts: Sequence[str], test_proba: np.ndarray) -> ReferenceProfile:
    vocab = build_vocabulary(train_texts)
    labels = [LABELS[i] for i in test_proba.argmax(axis=1)]
    frame = monitoring_frame(test_texts, labels, test_proba.max(axis=1), vocab)
    return ReferenceProfile(frame=frame, vocabulary=vocab)


def save_reference(profile: ReferenceProfile, model_dir: Path) -> Path:
    folder = Path(model_dir) / REFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    profile.frame.to_parquet(folder / "profile.parquet", index=False)
    (folder / "vocabulary.json").write_text(json.dumps(sorted(profile.vocabulary)))
    return folder


def load_reference(model_dir: Path) -> ReferenceProfile:
    folder = Path(model_dir) / REFERENCE_DIR
    if not (folder / "profile.parquet").exists():
        raise FileNotFoundError(f"{model_dir} has no reference profile ({REFERENCE_DIR}/profile.parquet)")
    vocab = frozenset(json.loads((folder / "vocabulary.json").read_text()))
    return ReferenceProfile(frame=pd.read_parquet(folder / "profile.parquet"), vocabulary=vocab)
