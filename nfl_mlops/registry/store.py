"""The model registry: versions as Hugging Face folders plus rows in the state DB.

A version becomes visible only when its folder is complete and its row is committed; a failure
anywhere in between leaves neither (registration is atomic). The row keeps the sha256 of every file and
the version's artifact URI (the local folder, or its copy in the store MLOPS_ARTIFACT_URI names, written
before the row); processes load a version through `registry.artifacts.resolve_version`.
"""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from nfl_mlops.db import Alias, ModelVersion, session_scope, utcnow
from nfl_mlops.registry.artifacts import REQUIRED_FILES, ArtifactStore, hash_folder, store_for
from nfl_mlops.versions import allocate, highest

log = logging.getLogger(__name__)


class RegistryError(Exception):
    """A registry request that cannot be served (unknown model/version, bad files)."""


class InvalidModelFolder(RegistryError, ValueError):
    """The folder is not a servable Hugging Face sequence-classification model of this project."""


def check_model_folder(path: Path) -> None:
    """Raise `InvalidModelFolder` unless `path` holds a Hugging Face sequence-classification model with
    this project's labels, in this order, and safetensors weights. Used by `POST /models/register` and
    the SDK before anything is copied."""
    import json

    from nfl_mlops import LABELS

    try:
        is_dir = path.is_dir()
    except OSError as exc:  # name too long, permission denied, ...
        raise InvalidModelFolder(f"model_path is not readable: {type(exc).__name__}") from exc
    if not is_dir:
        raise InvalidModelFolder(f"model_path {str(path)!r} is not a folder on this host")
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError as exc:
        raise InvalidModelFolder(f"model_path {str(path)!r} has no config.json") from exc
    except ValueError as exc:
        raise InvalidModelFolder(f"config.json in {str(path)!r} is not readable JSON") from exc
    except OSError as exc:  # name too long, permission denied, ...
        raise InvalidModelFolder(f"model_path is not readable: {type(exc).__name__}") from exc
    if not isinstance(config, dict):
        raise InvalidModelFolder(f"config.json in {str(path)!r} is not a JSON object")
    id2label = config.get("id2label") or {}
    try:
        labels = [id2label[k] for k in sorted(id2label, key=int)]
    except (TypeError, ValueError, KeyError):
        labels = []
    if labels != list(LABELS):
        raise InvalidModelFolder(f"the model's labels are {labels}; expected {list(LABELS)} in that order")
    if not (path / "model.safetensors").is_file():
        raise InvalidModelFolder(
            f"model_path {str(path)!r} has no model.safetensors (only safetensors weights are accepted)"
        )


class NotFoundError(RegistryError, LookupError):
    pass


@dataclass(frozen=True)
class VersionInfo:
    model_name: str
    version: int
    status: str
    path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    lineage: dict[str, Any]
    created_at: datetime
    description: str | None = None
    reason: str | None = None
    model_type: str = "sentiment_analysis"
    aliases: list[str] = field(default_factory=list)
    artifact_uri: str | None = None  # where every process loads it from (None: registered before 0004)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    @property
    def model_id(self) -> str:
        return self.model_name


def _info(row: ModelVersion, aliases: list[str]) -> VersionInfo:
    return VersionInfo(
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        path=row.path,
        metrics=dict(row.metrics or {}),
        params=dict(row.params or {}),
        lineage=dict(row.lineage or {}),
        created_at=row.created_at,
        description=row.description,
        reason=row.reason,
        model_type=row.model_type,
        aliases=sorted(aliases),
        artifact_uri=row.artifact_uri,
        files=dict(row.files or {}),
    )


class Registry:
    """Register, look up and alias model versions."""

    def __init__(
        self, models_dir: Path, db_url: str | None = None, store: ArtifactStore | None = None
    ) -> None:
        """
        Args:
            store: where registered versions are copied for other hosts (`registry.artifacts`); None keeps
                them in `models_dir` only.
        """
        self.models_dir = Path(models_dir)
        self.db_url = db_url
        self.store = store

    @classmethod
    def from_settings(cls, settings: Any = None) -> Registry:
        from nfl_mlops.settings import get_settings

        settings = settings or get_settings()
        store = store_for(settings.artifact_uri, settings) if settings.artifact_uri else None
        return cls(settings.models_path, settings.db_url, store)

    # Writing
    def register(
        self,
        model_name: str,
        source_dir: Path | str,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
        description: str | None = None,
        status: str = "ready",
        reason: str | None = None,
        model_type: str = "sentiment_analysis",
        write_card: Callable[[Path, VersionInfo], None] | None = None,
    ) -> VersionInfo:
        """Copy `source_dir` into the registry as the next version of `model_name`.

        Args:
            status: "ready" (servable) or "rejected" (kept for the record, never served).
            write_card: writes the model card into the staged folder before it becomes visible.
        """
        source = Path(source_dir)
        missing = [f for f in REQUIRED_FILES if not (source / f).exists()]
        if not source.is_dir() or missing:
            raise RegistryError(
                f"{source} is not a Hugging Face model folder (missing {missing or 'folder'})"
            )
        if status not in ("ready", "rejected"):
            raise RegistryError(f"status must be 'ready' or 'rejected', not {status!r}")
        root = self.models_dir / model_name
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".staging-{uuid.uuid4().hex[:8]}"
        shutil.copytree(source, staging)
        try:

            def create(s: Session, version: int) -> VersionInfo:
                return self._commit(
                    s,
                    version,
                    staging,
                    model_name,
                    metrics,
                    params,
                    lineage,
                    description,
                    status,
                    reason,
                    model_type,
                    write_card,
                )

            return allocate(
                self.db_url,
                lambda s: highest(s, ModelVersion.version, ModelVersion.model_name == model_name),
                create,
                model_name,
                RegistryError,
            )
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _commit(
        self,
        s: Session,
        version: int,
        staging: Path,
        model_name: str,
        metrics: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        lineage: Mapping[str, Any] | None,
        description: str | None,
        status: str,
        reason: str | None,
        model_type: str,
        write_card: Callable[[Path, VersionInfo], None] | None,
    ) -> VersionInfo:
        """Add version `version` in session `s` and move the staged folder into place.

        Order: the card, the manifest, the store's copy (objects first, under a content-addressed key or a
        commit not yet tagged), then the row (its unique constraint secures the number), the store's publish
        step (the Hub's tag) and the folder's move; the commit comes last. A failure anywhere leaves no row.
        """
        final = self.models_dir / model_name / f"v{version}"
        if final.exists():
            # Not made by this transaction (an earlier registry with another state DB, a copy by hand): a
            # version's folder is immutable once created and the registry never removes what it did not
            # make, so this version goes to a fresh location of its own.
            stale = final
            final = final.with_name(f"v{version}-{uuid.uuid4().hex[:8]}")
            log.warning(
                "%s exists and is not this registry's v%d; registering it at %s instead",
                stale,
                version,
                final,
            )
        row = ModelVersion(
            model_name=model_name,
            version=version,
            status=status,
            path=str(final.resolve()),
            metrics=dict(metrics or {}),
            params=dict(params or {}),
            lineage=dict(lineage or {}),
            description=description,
            reason=reason,
            model_type=model_type,
            created_at=utcnow(),
        )
        if write_card is not None:
            write_card(staging, _info(row, []))
        row.files = hash_folder(staging)
        if self.store is None:
            row.artifact_uri = final.resolve().as_uri()
            publish = None
        else:
            staged = self.store.stage(staging, row.files, model_name, version)
            row.artifact_uri, publish = staged.uri, staged.publish
        s.add(row)
        s.flush()  # the unique constraint fires here, before the version is published or its folder moves
        if publish is not None:
            publish()
        info = _info(row, [])
        staging.rename(final)
        try:
            s.flush()
        except BaseException:
            final.rename(staging)
            raise
        return info

    def set_alias(self, model_name: str, alias: str, version: int) -> None:
        """Point `alias` at `version` (which must exist and be servable)."""
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(ModelVersion).where(
                    ModelVersion.model_name == model_name, ModelVersion.version == version
                )
            )
            if row is None:
                raise NotFoundError(f"{model_name} has no version {version}")
            if row.status != "ready":
                raise RegistryError(
                    f"{model_name} v{version} is {row.status}; only ready versions take aliases"
                )
            existing = s.get(Alias, (model_name, alias))
            if existing is None:
                s.add(Alias(model_name=model_name, alias=alias, version=version))
            else:
                existing.version = version

    def promote(self, model_name: str, version: int) -> None:
        """Make `version` the champion; a `challenger` alias on the same version is cleared."""
        self.set_alias(model_name, "champion", version)
        with session_scope(self.db_url) as s:
            challenger = s.get(Alias, (model_name, "challenger"))
            if challenger is not None and challenger.version == version:
                s.delete(challenger)

    def delete_alias(self, model_name: str, alias: str) -> None:
        with session_scope(self.db_url) as s:
            existing = s.get(Alias, (model_name, alias))
            if existing is not None:
                s.delete(existing)

    # Reading
    def _aliases(self, s, model_name: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in s.scalars(select(Alias).where(Alias.model_name == model_name)):
            out.setdefault(a.version, []).append(a.alias)
        return out

    def get(self, model_name: str, version: int | str) -> VersionInfo:
        """A version by number, by `v3`/`3`, or by alias (`champion`)."""
        with session_scope(self.db_url) as s:
            number = self._resolve(s, model_name, version)
            row = s.scalar(
                select(ModelVersion).where(
                    ModelVersion.model_name == model_name, ModelVersion.version == number
                )
            )
            if row is None:
                raise NotFoundError(f"{model_name} has no version {version}")
            return _info(row, self._aliases(s, model_name).get(row.version, []))

    def _resolve(self, s, model_name: str, version: int | str) -> int:
        number = self._number(s, model_name, version)
        if not 0 < number < 2**31:  # version columns are 32-bit (PostgreSQL would raise on the query)
            raise NotFoundError(f"{model_name} has no version {version}")
        return number

    def _number(self, s, model_name: str, version: int | str) -> int:
        if isinstance(version, int):
            return version
        text = str(version).strip()
        if text.lower().startswith("v") and text[1:].isdigit():
            return int(text[1:])
        if text.isdigit():
            return int(text)
        m = re.fullmatch(r"v?(\d+)(?:\.0+)*", text, flags=re.I)
        if m:  # "1.0" (the SDK examples' style) means v1
            return int(m.group(1))
        alias = s.get(Alias, (model_name, text))
        if alias is None:
            raise NotFoundError(f"{model_name} has no alias {text!r}")
        return alias.version

    def get_alias(self, model_name: str, alias: str) -> VersionInfo | None:
        try:
            return self.get(model_name, alias)
        except NotFoundError:
            return None

    def list_versions(self, model_name: str | None = None) -> list[VersionInfo]:
        with session_scope(self.db_url) as s:
            q = select(ModelVersion).order_by(ModelVersion.model_name, ModelVersion.version)
            if model_name is not None:
                q = q.where(ModelVersion.model_name == model_name)
            rows = list(s.scalars(q))
            aliases = {name: self._aliases(s, name) for name in {r.model_name for r in rows}}
            return [_info(r, aliases[r.model_name].get(r.version, [])) for r in rows]

    def list_models(self) -> list[str]:
        with session_scope(self.db_url) as s:
            return list(
                s.scalars(select(ModelVersion.model_name).distinct().order_by(ModelVersion.model_name))
            )
