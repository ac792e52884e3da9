"""The feature store: versioned feature groups and immutable training datasets.

`FeatureStore` is the interface; `LocalFeatureStore` is the embedded default (Parquet files under
MLOPS_HOME/feature_store, metadata rows in the state DB) and `HopsworksFeatureStore`
(`nfl_mlops.features.hopsworks_store`) the real backend, chosen by `get_feature_store` when
HOPSWORKS_API_KEY is set. Both keep their metadata rows in the state DB, so lineage can be read
without the backend.

- A feature group version is identified by its content hash: the same data and feature code give
  the same version back; a new data version (or new feature code) makes the next version.
- A training dataset is an immutable snapshot of one feature-group version with its split column,
  one per feature-group version; its files are read-only and checked against their hashes on read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import JSON, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from nfl_mlops.db import Base, get_engine, session_scope, utcnow
from nfl_mlops.features.text import FEATURE_COLUMNS, build_vocabulary, compute_features
from nfl_mlops.versions import allocate, highest

FEATURE_GROUP = "tweet_features"
"""Name of the feature group the training flow writes."""

TRAINING_DATASET = "tweet_sentiment"
"""Name of the training dataset (a feature view in Hopsworks) built from it."""

FEATURE_PIPELINE_VERSION = 1
"""Bump when `build_feature_frame` changes what it computes: the content hash changes with it."""

PRIMARY_KEY: tuple[str, ...] = ("tweet_id", "split")
SPLIT_ORDER: tuple[str, ...] = ("train", "val", "test", "recent")


class FeatureStoreError(Exception):
    """A feature-store request that cannot be served (unknown version, tampered files, backend error)."""


class FeatureStoreNotFound(FeatureStoreError, LookupError):
    pass


# --------------------------------------------------------------------------------------------
# Metadata rows (state DB)
# --------------------------------------------------------------------------------------------


class FeatureGroupRow(Base):
    """One version of a feature group, in whichever backend holds its data."""

    __tablename__ = "feature_groups"
    __table_args__ = (UniqueConstraint("backend", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    data_version: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    split_counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    primary_key: Mapped[list[Any]] = mapped_column(JSON, default=list)
    location: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    pipeline_version: Mapped[int] = mapped_column(Integer, default=FEATURE_PIPELINE_VERSION)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingDatasetRow(Base):
    """One immutable training dataset: a snapshot of a feature-group version with its splits."""

    __tablename__ = "training_datasets"
    __table_args__ = (UniqueConstraint("backend", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backend: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    feature_group: Mapped[str] = mapped_column(String(200))
    feature_group_version: Mapped[int] = mapped_column(Integer)
    splits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


_TABLES = (FeatureGroupRow.__table__, TrainingDatasetRow.__table__)
_ready: set[str] = set()


def ensure_tables(db_url: str | None = None) -> None:
    """Create the feature-store tables if the engine was made before this module was imported."""
    key = db_url or ""
    if key not in _ready:
        Base.metadata.create_all(get_engine(db_url), tables=list(_TABLES))  # type: ignore[arg-type]
        _ready.add(key)


# --------------------------------------------------------------------------------------------
# What the store hands back
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureGroupVersion:
    """A feature-group version: what lineage records about it."""

    name: str
    version: int
    backend: str
    data_version: str
    content_hash: str
    n_rows: int
    schema: dict[str, str]
    location: str
    split_counts: dict[str, int] = field(default_factory=dict)
    primary_key: list[str] = field(default_factory=lambda: list(PRIMARY_KEY))
    description: str | None = None
    pipeline_version: int = FEATURE_PIPELINE_VERSION
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@dataclass(frozen=True)
class TrainingDatasetVersion:
    """An immutable training dataset built from one feature-group version."""

    name: str
    version: int
    backend: str
    feature_group: str
    feature_group_version: int
    splits: dict[str, int]
    content_hash: str
    location: str
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


def _fg(row: FeatureGroupRow) -> FeatureGroupVersion:
    return FeatureGroupVersion(
        name=row.name,
        version=row.version,
        backend=row.backend,
        data_version=row.data_version,
        content_hash=row.content_hash,
        n_rows=row.n_rows,
        schema=dict(row.schema or {}),
        split_counts=dict(row.split_counts or {}),
        location=row.location,
        primary_key=list(row.primary_key or []),
        description=row.description,
        pipeline_version=row.pipeline_version,
        created_at=row.created_at,
    )


def _td(row: TrainingDatasetRow) -> TrainingDatasetVersion:
    return TrainingDatasetVersion(
        name=row.name,
        version=row.version,
        backend=row.backend,
        feature_group=row.feature_group,
        feature_group_version=row.feature_group_version,
        splits=dict(row.splits or {}),
        content_hash=row.content_hash,
        location=row.location,
        created_at=row.created_at,
    )


# --------------------------------------------------------------------------------------------
# The feature pipeline (pure)
# --------------------------------------------------------------------------------------------


def build_feature_frame(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The feature-group rows of a dataset: keys, split, cleaned text, label and the text features.

    Args:
        splits: split name -> frame with `text` (already cleaned), `label` and `norm` (dedupe key).
            The out-of-vocabulary share is measured against the training split's vocabulary.

    Returns:
        One row per (tweet, split): `tweet_id` (hash of the dedupe key), `split`, `text`, `norm`,
        `label`, FEATURE_COLUMNS and `topic`, sorted by the primary key.
    """
    frames = []
    train = splits.get("train")
    vocabulary = build_vocabulary(train["text"].tolist()) if train is not None and len(train) else frozenset()
    for name in SPLIT_ORDER:
        frame = splits.get(name)
        if frame is None or not len(frame):
            continue
        feats = compute_features(frame["text"].tolist(), vocabulary=vocabulary)
        norm = frame["norm"].astype(str).tolist() if "norm" in frame else frame["text"].astype(str).tolist()
        frames.append(
            pd.concat(
                [
                    pd.DataFrame(
                        {
                            "tweet_id": [hashlib.sha1(n.encode()).hexdigest()[:16] for n in norm],
                            "split": name,
                            "text": frame["text"].astype(str).tolist(),
                            "norm": norm,
                            "label": frame["label"].astype(str).tolist(),
                        }
                    ),
                    feats,
                ],
                axis=1,
            )
        )
    columns = ["tweet_id", "split", "text", "norm", "label", *FEATURE_COLUMNS, "topic"]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    out = pd.concat(frames, ignore_index=True)[columns]
    out["topic"] = out["topic"].astype(str)
    return out.sort_values(list(PRIMARY_KEY), kind="stable").reset_index(drop=True)


def split_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows per split, in SPLIT_ORDER."""
    counts = frame["split"].value_counts().to_dict() if "split" in frame else {}
    return {k: int(counts[k]) for k in SPLIT_ORDER if k in counts}


def frame_schema(frame: pd.DataFrame) -> dict[str, str]:
    """Column -> dtype name, in column order."""
    return {str(c): str(t) for c, t in frame.dtypes.items()}


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the schema and every value (row order and index ignored after sorting by all columns)."""
    h = hashlib.sha256(json.dumps(frame_schema(frame), sort_keys=False).encode())
    h.update(str(FEATURE_PIPELINE_VERSION).encode())
    if len(frame):
        ordered = frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)
        h.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------


class FeatureStore(ABC):
    """Write feature-group versions, snapshot training datasets, read both back."""

    backend: str = "abstract"

    def __init__(self, db_url: str | None = None) -> None:
        self.db_url = db_url

    # Backend-specific
    @abstractmethod
    def _write_group(self, name: str, version: int, frame: pd.DataFrame, description: str) -> str:
        """Store the rows of a new feature-group version; returns its location."""

    @abstractmethod
    def read_feature_group(self, name: str, version: int) -> pd.DataFrame:
        """All rows of a feature-group version."""

    @abstractmethod
    def _snapshot(self, name: str, fg: FeatureGroupVersion, version: int | None) -> tuple[int, str, str]:
        """Materialise the training dataset of `fg`; returns (version, location, content hash)."""

    @abstractmethod
    def read_training_dataset(self, name: str, version: int) -> dict[str, pd.DataFrame]:
        """The splits of a training dataset (split name -> rows)."""

    def _next_remote_version(self, name: str) -> int:
        """The highest version the backend already holds (0 when it holds none)."""
        return 0

    # Shared
    def write_feature_group(
        self, name: str, frame: pd.DataFrame, data_version: str, description: str = ""
    ) -> FeatureGroupVersion:
        """Store `frame` as a feature-group version; the same content returns the existing version."""
        ensure_tables(self.db_url)
        missing = [c for c in PRIMARY_KEY if c not in frame.columns]
        if missing:
            raise FeatureStoreError(f"feature frame lacks primary-key columns {missing}")
        if frame.duplicated(list(PRIMARY_KEY)).any():
            raise FeatureStoreError(f"feature frame has duplicate primary keys {list(PRIMARY_KEY)}")
        digest = content_hash(frame)
        existing = self._find_group(name, digest)
        if existing is not None:
            return existing

        def create(s: Session, version: int) -> FeatureGroupVersion:
            version = max(version, self._next_remote_version(name) + 1)
            location = self._write_group(name, version, frame, description)
            row = FeatureGroupRow(
                backend=self.backend,
                name=name,
                version=version,
                data_version=data_version,
                content_hash=digest,
                n_rows=len(frame),
                schema=frame_schema(frame),
                split_counts=split_counts(frame),
                primary_key=list(PRIMARY_KEY),
                location=location,
                description=description,
                pipeline_version=FEATURE_PIPELINE_VERSION,
            )
            s.add(row)
            s.flush()
            return _fg(row)

        return allocate(
            self.db_url,
            lambda s: highest(
                s,
                FeatureGroupRow.version,
                FeatureGroupRow.backend == self.backend,
                FeatureGroupRow.name == name,
            ),
            create,
            f"feature group {name}",
            FeatureStoreError,
            on_conflict=lambda: self._find_group(name, digest),  # a concurrent writer stored the same content
        )

    def _find_group(self, name: str, digest: str) -> FeatureGroupVersion | None:
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(FeatureGroupRow)
                .where(
                    FeatureGroupRow.backend == self.backend,
                    FeatureGroupRow.name == name,
                    FeatureGroupRow.content_hash == digest,
                )
                .order_by(FeatureGroupRow.version)
            )
            return _fg(row) if row is not None else None

    def get_feature_group(self, name: str, version: int | None = None) -> FeatureGroupVersion:
        """A feature-group version (the latest when `version` is None)."""
        ensure_tables(self.db_url)
        with session_scope(self.db_url) as s:
            q = select(FeatureGroupRow).where(
                FeatureGroupRow.backend == self.backend, FeatureGroupRow.name == name
            )
            q = (
                q.where(FeatureGroupRow.version == version)
                if version is not None
                else q.order_by(FeatureGroupRow.version.desc())
            )
            row = s.scalars(q).first()
            if row is None:
                raise FeatureStoreNotFound(
                    f"feature group {name} v{version or 'latest'} not found ({self.backend})"
                )
            return _fg(row)

    def list_feature_groups(self, name: str | None = None) -> list[FeatureGroupVersion]:
        ensure_tables(self.db_url)
        with session_scope(self.db_url) as s:
            q = select(FeatureGroupRow).where(FeatureGroupRow.backend == self.backend)
            if name is not None:
                q = q.where(FeatureGroupRow.name == name)
            return [_fg(r) for r in s.scalars(q.order_by(FeatureGroupRow.name, FeatureGroupRow.version))]

    def create_training_dataset(self, name: str, fg: FeatureGroupVersion) -> TrainingDatasetVersion:
        """The immutable training dataset of a feature-group version (made once, then returned as is)."""
        ensure_tables(self.db_url)
        existing = self._find_dataset(name, fg)
        if existing is not None:
            return existing

        def create(s: Session, next_version: int) -> TrainingDatasetVersion:
            version, location, digest = self._snapshot(name, fg, next_version)
            row = TrainingDatasetRow(
                backend=self.backend,
                name=name,
                version=version,
                feature_group=fg.name,
                feature_group_version=fg.version,
                splits=dict(fg.split_counts),
                content_hash=digest,
                location=location,
            )
            s.add(row)
            s.flush()
            return _td(row)

        return allocate(
            self.db_url,
            lambda s: highest(
                s,
                TrainingDatasetRow.version,
                TrainingDatasetRow.backend == self.backend,
                TrainingDatasetRow.name == name,
            ),
            create,
            f"training dataset {name}",
            FeatureStoreError,
            on_conflict=lambda: self._find_dataset(name, fg),
        )

    def _find_dataset(self, name: str, fg: FeatureGroupVersion) -> TrainingDatasetVersion | None:
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(TrainingDatasetRow)
                .where(
                    TrainingDatasetRow.backend == self.backend,
                    TrainingDatasetRow.name == name,
                    TrainingDatasetRow.feature_group == fg.name,
                    TrainingDatasetRow.feature_group_version == fg.version,
                )
                .order_by(TrainingDatasetRow.version)
            )
            return _td(row) if row is not None else None

    def get_training_dataset(self, name: str, version: int | None = None) -> TrainingDatasetVersion:
        ensure_tables(self.db_url)
        with session_scope(self.db_url) as s:
            q = select(TrainingDatasetRow).where(
                TrainingDatasetRow.backend == self.backend, TrainingDatasetRow.name == name
            )
            q = (
                q.where(TrainingDatasetRow.version == version)
                if version is not None
                else q.order_by(TrainingDatasetRow.version.desc())
            )
            row = s.scalars(q).first()
            if row is None:
                raise FeatureStoreNotFound(
                    f"training dataset {name} v{version or 'latest'} not found ({self.backend})"
                )
            return _td(row)


# --------------------------------------------------------------------------------------------
# Embedded default
# --------------------------------------------------------------------------------------------


class LocalFeatureStore(FeatureStore):
    """Feature groups as Parquet + schema.json under `root`; training datasets as read-only Parquet splits."""

    backend = "local"

    def __init__(self, root: Path | str, db_url: str | None = None) -> None:
        super().__init__(db_url)
        self.root = Path(root)

    def _group_dir(self, name: str, version: int) -> Path:
        return self.root / "feature_groups" / name / f"v{version}"

    def _dataset_dir(self, name: str, version: int) -> Path:
        return self.root / "training_datasets" / name / f"v{version}"

    def _write_group(self, name: str, version: int, frame: pd.DataFrame, description: str) -> str:
        final = self._group_dir(name, version)
        if final.exists():
            # Left by a writer that crashed before its row was committed: no row points at it.
            shutil.rmtree(final, onerror=_force_remove)
        tmp = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        frame.to_parquet(tmp / "data.parquet", index=False)
        (tmp / "schema.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "version": version,
                    "columns": frame_schema(frame),
                    "primary_key": list(PRIMARY_KEY),
                    "content_hash": content_hash(frame),
                    "file_sha256": _file_sha256(tmp / "data.parquet"),
                    "n_rows": len(frame),
                    "pipeline_version": FEATURE_PIPELINE_VERSION,
                    "description": description,
                },
                indent=2,
            )
        )
        _make_read_only(tmp)
        tmp.rename(final)
        return str(final.resolve())

    def read_feature_group(self, name: str, version: int) -> pd.DataFrame:
        folder = self._group_dir(name, version)
        if not (folder / "schema.json").exists():
            raise FeatureStoreNotFound(f"feature group {name} v{version} has no files under {folder}")
        meta = json.loads((folder / "schema.json").read_text())
        if _file_sha256(folder / "data.parquet") != meta["file_sha256"]:
            raise FeatureStoreError(f"feature group {name} v{version} was modified after it was written")
        return pd.read_parquet(folder / "data.parquet")

    def _snapshot(self, name: str, fg: FeatureGroupVersion, version: int | None) -> tuple[int, str, str]:
        assert version is not None
        frame = self.read_feature_group(fg.name, fg.version)
        final = self._dataset_dir(name, version)
        if final.exists():
            shutil.rmtree(final, onerror=_force_remove)
        tmp = final.with_name(f".{final.name}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        files = {}
        for split in SPLIT_ORDER:
            part = frame[frame["split"] == split].reset_index(drop=True)
            if len(part):
                part.to_parquet(tmp / f"{split}.parquet", index=False)
                files[split] = {"rows": len(part), "sha256": _file_sha256(tmp / f"{split}.parquet")}
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        (tmp / "manifest.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "version": version,
                    "feature_group": fg.name,
                    "feature_group_version": fg.version,
                    "feature_group_hash": fg.content_hash,
                    "files": files,
                    "content_hash": digest,
                },
                indent=2,
            )
        )
        _make_read_only(tmp)
        tmp.rename(final)
        return version, str(final.resolve()), digest

    def read_training_dataset(self, name: str, version: int) -> dict[str, pd.DataFrame]:
        folder = self._dataset_dir(name, version)
        if not (folder / "manifest.json").exists():
            raise FeatureStoreNotFound(f"training dataset {name} v{version} has no files under {folder}")
        manifest = json.loads((folder / "manifest.json").read_text())
        out = {}
        for split, meta in manifest["files"].items():
            path = folder / f"{split}.parquet"
            if not path.exists() or _file_sha256(path) != meta["sha256"]:
                raise FeatureStoreError(
                    f"training dataset {name} v{version}: {split} split was modified or removed"
                )
            out[split] = pd.read_parquet(path)
        return out


def _make_read_only(folder: Path) -> None:
    for path in folder.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def _force_remove(func: Any, path: str, _exc: Any) -> None:
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
    func(path)


# --------------------------------------------------------------------------------------------
# Selection by settings
# --------------------------------------------------------------------------------------------


def get_feature_store(settings: Any = None) -> FeatureStore:
    """Hopsworks when HOPSWORKS_API_KEY is set, else the local store under MLOPS_HOME/feature_store."""
    from nfl_mlops.settings import get_settings

    settings = settings or get_settings()
    if settings.hopsworks_api_key is not None:
        from nfl_mlops.features.hopsworks_store import HopsworksFeatureStore

        return HopsworksFeatureStore.from_settings(settings)
    return LocalFeatureStore(settings.feature_store_path, settings.db_url)


def find_feature_group(
    name: str, version: int, backend: str | None = None, db_url: str | None = None
) -> FeatureGroupVersion | None:
    """The metadata row of a feature-group version in any backend (for lineage; no backend call)."""
    ensure_tables(db_url)
    with session_scope(db_url) as s:
        q = select(FeatureGroupRow).where(FeatureGroupRow.name == name, FeatureGroupRow.version == version)
        if backend:
            q = q.where(FeatureGroupRow.backend == backend)
        row = s.scalars(q).first()
        return _fg(row) if row is not None else None


def find_training_dataset(
    name: str, version: int, backend: str | None = None, db_url: str | None = None
) -> TrainingDatasetVersion | None:
    ensure_tables(db_url)
    with session_scope(db_url) as s:
        q = select(TrainingDatasetRow).where(
            TrainingDatasetRow.name == name, TrainingDatasetRow.version == version
        )
        if backend:
            q = q.where(TrainingDatasetRow.backend == backend)
        row = s.scalars(q).first()
        return _td(row) if row is not None else None


__all__ = [
    "FEATURE_GROUP",
    "FEATURE_PIPELINE_VERSION",
    "PRIMARY_KEY",
    "TRAINING_DATASET",
    "FeatureGroupRow",
    "FeatureGroupVersion",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureStoreNotFound",
    "LocalFeatureStore",
    "TrainingDatasetRow",
    "TrainingDatasetVersion",
    "build_feature_frame",
    "content_hash",
    "ensure_tables",
    "find_feature_group",
    "find_training_dataset",
    "get_feature_store",
]
