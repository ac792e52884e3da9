"""The reference profile a model version is monitored against, saved beside its weights.

Built at training time from the version's held-out test split (the rows whose predictions are
unbiased), and saved in `<model_dir>/reference/`:

- `profile.parquet`: one row per test text (`split` "test"): the text descriptors, the predicted
  label and its confidence, and, when the test labels are given, `true_label` and `correct` (what the
  label-free performance estimate calibrates on); plus one row per training text (`split` "train",
  a seeded sample of at most `REFERENCE_MAX_TRAIN_ROWS`) with the descriptors only, so the
  descriptor distributions rest on the training data and more rows (prediction columns and the
  out-of-vocabulary share NaN there: training texts are in their own vocabulary);
- `vocabulary.json`: the vocabulary of the training texts (for the out-of-vocabulary share);
- `embeddings.npy`: sentence embeddings of a seeded sample of the test texts from the base encoder
  (absent when no encoder was given);
- `meta.json`: the encoder, sizes, and the predicted-label and confidence distributions.

Cost at training time: descriptors take milliseconds; the embeddings of 500 texts take 2-10 s on 2
CPU cores plus the encoder load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops import LABELS
from nfl_mlops.features.text import build_vocabulary, compute_features
from nfl_mlops.monitoring.thresholds import EMBEDDING_SAMPLE_SIZE, REFERENCE_MAX_TRAIN_ROWS

REFERENCE_DIR = "reference"
FORMAT_VERSION = 2
NUMERICAL = (
    "n_chars",
    "n_words",
    "n_hashtags",
    "n_mentions",
    "n_urls",
    "n_nfl_entities",
    "oov_share",
    "confidence",
)
CATEGORICAL = ("topic", "predicted_label")
DESCRIPTORS = (
    "n_chars",
    "n_words",
    "n_hashtags",
    "n_mentions",
    "n_urls",
    "n_nfl_entities",
    "oov_share",
    "topic",
)
"""The text-descriptor signals; the prediction signals are `PREDICTIONS`."""
PREDICTIONS = ("predicted_label", "confidence")
CONFIDENCE_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class ReferenceProfile:
    """What a version is monitored against (see the module docstring)."""

    frame: pd.DataFrame  # NUMERICAL + CATEGORICAL columns, plus true_label/correct when known
    vocabulary: frozenset[str]
    embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def has_labels(self) -> bool:
        """True when the test labels were stored (calibration and the label-free estimate need them)."""
        return "correct" in self.frame.columns and self.frame["correct"].notna().any()

    @property
    def encoder(self) -> str | None:
        return self.meta.get("encoder") if self.embeddings is not None else None


def monitoring_frame(
    texts: Sequence[str],
    labels: Sequence[str | None],
    confidences: Sequence[float],
    vocabulary: frozenset[str],
) -> pd.DataFrame:
    """Descriptors + prediction columns of a set of texts, as monitoring compares them."""
    feats = compute_features(texts if isinstance(texts, pd.Series) else list(texts), vocabulary=vocabulary)
    feats["predicted_label"] = np.asarray(labels, dtype=object)
    feats["confidence"] = np.asarray(confidences, dtype=float)
    return feats[list(NUMERICAL) + list(CATEGORICAL)]


def prediction_summary(
    labels: Sequence[str | None] | pd.Series, confidences: Sequence[float]
) -> dict[str, Any]:
    """Shares of predicted labels and quantiles of the confidence (the prediction distributions)."""
    labels = pd.Series(list(labels), dtype=object)
    labels = labels[labels.map(lambda v: isinstance(v, str))]
    conf = np.asarray(confidences, dtype=float)
    conf = conf[np.isfinite(conf)]
    n = max(len(labels), 1)
    return {
        "label_shares": {name: float((labels == name).sum() / n) for name in LABELS},
        "confidence_mean": float(conf.mean()) if len(conf) else None,
        "confidence_quantiles": (
            {str(q): float(np.quantile(conf, q)) for q in CONFIDENCE_QUANTILES} if len(conf) else {}
        ),
    }


def build_reference(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    test_proba: np.ndarray,
    test_labels: Sequence[str] | None = None,
    encoder: Any = None,
    embedding_sample: int = EMBEDDING_SAMPLE_SIZE,
    seed: int = 0,
    train_descriptors: bool = True,
    max_train_rows: int = REFERENCE_MAX_TRAIN_ROWS,
    vocabulary: frozenset[str] | None = None,
) -> ReferenceProfile:
    """The reference profile of a version from its training texts and its test-set predictions.

    Args:
        test_proba: class probabilities of the test texts (n x 3, LABELS order).
        test_labels: the test texts' true labels; with them the profile can calibrate confidences.
        encoder: a `SentenceEncoder`, or the name of one (e.g. the base model id); None = no embeddings.
        embedding_sample: how many test texts are embedded (a seeded sample).
        train_descriptors: add the descriptors of (a sample of up to `max_train_rows`) training texts, so
            the descriptor distributions rest on more rows; their prediction columns are NaN.
        vocabulary: the vocabulary for the out-of-vocabulary share; default that of `train_texts` (a refreshed
            reference keeps the vocabulary of what its version was trained on).
    """
    from nfl_mlops.monitoring.embeddings import get_encoder, sample_indices

    test_texts = list(test_texts)
    test_proba = np.asarray(test_proba, dtype=float)
    if len(test_texts) != len(test_proba):
        raise ValueError(f"{len(test_texts)} test texts but {len(test_proba)} probability rows")
    train_texts = list(train_texts)
    vocab = vocabulary if vocabulary is not None else build_vocabulary(train_texts)
    labels = [LABELS[i] for i in test_proba.argmax(axis=1)]
    conf = test_proba.max(axis=1)
    frame = monitoring_frame(test_texts, labels, conf, vocab)
    frame["split"] = "test"
    if test_labels is not None:
        truth = list(test_labels)
        if len(truth) != len(test_texts):
            raise ValueError(f"{len(test_texts)} test texts but {len(truth)} labels")
        frame["true_label"] = np.asarray(truth, dtype=object)
        frame["correct"] = (frame["true_label"] == frame["predicted_label"]).astype(float)
    if train_descriptors and train_texts:
        # more rows for the descriptor distributions; the prediction columns stay NaN there (test rows only)
        idx = sample_indices(len(train_texts), max_train_rows, seed)
        extra = monitoring_frame([train_texts[i] for i in idx], [None] * len(idx), [np.nan] * len(idx), vocab)
        extra["oov_share"] = np.nan  # training texts are in their own vocabulary by construction
        extra["split"] = "train"
        frame = pd.concat([frame, extra], ignore_index=True)
    embeddings, encoder_name = None, None
    if encoder is not None:
        enc = get_encoder(encoder) if isinstance(encoder, str) else encoder
        idx = sample_indices(len(test_texts), embedding_sample, seed)
        embeddings = enc.encode([test_texts[i] for i in idx])
        encoder_name = enc.name
    meta = {
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "n_test": len(test_texts),
        "n_train_descriptor_rows": int((frame["split"] == "train").sum()),
        "n_vocabulary": len(vocab),
        "has_labels": test_labels is not None,
        "encoder": encoder_name,
        "n_embeddings": 0 if embeddings is None else len(embeddings),
        "embedding_seed": seed,
        "predictions": prediction_summary(labels, conf),
    }
    if test_labels is not None:
        meta["test_accuracy"] = float(frame["correct"].mean()) if len(test_texts) else None
    return ReferenceProfile(frame=frame, vocabulary=vocab, embeddings=embeddings, meta=meta)


def save_reference(profile: ReferenceProfile, model_dir: Path) -> Path:
    """Write the profile to `<model_dir>/reference/`; returns that folder."""
    folder = Path(model_dir) / REFERENCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    profile.frame.to_parquet(folder / "profile.parquet", index=False)
    (folder / "vocabulary.json").write_text(json.dumps(sorted(profile.vocabulary)))
    if profile.embeddings is not None:
        np.save(folder / "embeddings.npy", np.asarray(profile.embeddings, dtype=np.float32))
    (folder / "meta.json").write_text(json.dumps(profile.meta, indent=2, default=str))
    return folder


def load_reference(model_dir: Path) -> ReferenceProfile:
    """Read a saved profile; profiles written before embeddings existed load without them."""
    folder = Path(model_dir) / REFERENCE_DIR
    if not (folder / "profile.parquet").exists():
        raise FileNotFoundError(f"{model_dir} has no reference profile ({REFERENCE_DIR}/profile.parquet)")
    vocab = frozenset(json.loads((folder / "vocabulary.json").read_text()))
    emb_path, meta_path = folder / "embeddings.npy", folder / "meta.json"
    embeddings = np.load(emb_path) if emb_path.exists() else None
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"format_version": 1}
    return ReferenceProfile(
        frame=pd.read_parquet(folder / "profile.parquet"), vocabulary=vocab, embeddings=embeddings, meta=meta
    )


MIN_RECENT_REFERENCE = 50
"""A dataset's recent (feedback) window of at least this many rows becomes the version's reference."""

MIN_WINDOW_REFERENCE = 30
"""The episode's own held-out rows are the reference from this many on: a small window of the right traffic
is a better reference than a large mix that includes the traffic before the drift (one soak run rebuilt the
reference from 48 window rows plus 294 older NFL rows, and every ordinary day after alarmed on topic)."""


@dataclass(frozen=True)
class ReferenceRows:
    """What a version's reference profile is built from, and which evaluation set that is (`basis`)."""

    basis: str  # "test" (the general held-out split) or "recent" (the traffic it was retrained for)
    descriptor_texts: list[str]
    texts: list[str]
    proba: np.ndarray
    labels: list[str]


def reference_rows(
    train: pd.DataFrame,
    test: pd.DataFrame,
    recent: pd.DataFrame | None,
    probas: dict[str, np.ndarray],
    n_feedback_train: int = 0,
    min_recent: int = MIN_RECENT_REFERENCE,
    n_recent_window: int | None = None,
    min_window: int = MIN_WINDOW_REFERENCE,
) -> ReferenceRows:
    """The rows a version is monitored against (pure).

    A version trained with a labelled feedback window (a retraining for a drift episode) is monitored
    against the traffic it was retrained for: descriptors of its feedback training rows and of the
    held-out recent window, predictions/calibration/embeddings of the recent window (held out, so its
    predictions are unbiased). So the accepted new normal does not alarm again. Otherwise: the training
    rows and the general test split.

    Args:
        train: the training rows; the last `n_feedback_train` of them came from feedback.
        probas: class probabilities per evaluation set ("test", and "recent" when it was scored).
        n_recent_window: the last rows of `recent` are the drifted traffic (the episode's window); when
            there are at least `min_window` of them they alone are the reference.
    """
    windowed = False
    if (
        recent is not None
        and n_recent_window is not None
        and n_recent_window >= min_window
        and n_recent_window <= len(recent)
        and "recent" in probas
    ):
        recent = recent.tail(n_recent_window)
        probas = {**probas, "recent": np.asarray(probas["recent"])[-n_recent_window:]}
        windowed = True
    if recent is not None and (windowed or len(recent) >= min_recent) and "recent" in probas:
        fb_train = train.tail(n_feedback_train)["text"].tolist() if n_feedback_train > 0 else []
        texts = recent["text"].tolist()
        # the vocabulary and the extra descriptor rows from the feedback it trained on, never from the
        # held-out rows themselves: their OOV share must be out of sample, as live traffic's is
        return ReferenceRows(
            "recent", fb_train, texts, np.asarray(probas["recent"]), recent["label"].tolist()
        )
    return ReferenceRows(
        "test",
        train["text"].tolist(),
        test["text"].tolist(),
        np.asarray(probas["test"]),
        test["label"].tolist(),
    )


# --------------------------------------------------------------------------------------------
# A serving version's reference, refreshed when it holds on new traffic (the accepted new normal)
# --------------------------------------------------------------------------------------------

REBASELINE_DIR = "references"


def rebaseline_root(home: Path, model_name: str, version: int) -> Path:
    """Where refreshed references of a version live (outside its registry folder, which never changes)."""
    return Path(home) / REBASELINE_DIR / model_name / f"v{version}"


def latest_rebaseline(home: Path, model_name: str, version: int) -> Path | None:
    """The newest refreshed reference of the version (a folder holding `reference/`), or None."""
    root = rebaseline_root(home, model_name, version)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if (p / REFERENCE_DIR / "meta.json").exists())
    return done[-1] if done else None


def holds_on(
    recent_metrics: dict[str, float], reference_metrics: dict[str, float] | None, max_drop: float
) -> bool:
    """A version holds on new traffic when its macro-F1 there is within `max_drop` of what it is monitored
    against (pure; no reference metrics: it does not)."""
    if not reference_metrics or "macro_f1" not in reference_metrics:
        return False
    return recent_metrics["macro_f1"] >= reference_metrics["macro_f1"] - max_drop
