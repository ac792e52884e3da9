"""Hugging Face Hub mirror of the registry: one commit and one tag `v{N}` per registered version.

Active when HUGGINGFACE_TOKEN and HUGGINGFACE_REPO are set. Every push first lands in a queue
(`hub_pushes` in the state DB), then is sent with retries and backoff; a push that still fails
stays queued and never fails the registration that asked for it. `nfl-mlops registry sync` sends
what is queued.

A version mirrored this way loads by revision:
`AutoModelForSequenceClassification.from_pretrained(repo, revision="v3")`.
The repo mirrors MLOPS_MODEL_NAME; another model name goes to `<HUGGINGFACE_REPO>-<model name>`.

The Hub can also be the model store itself (`MLOPS_ARTIFACT_URI=hf://org/repo`, `registry.artifacts`):
then registration commits and tags the version before its row is committed (`commit_version`,
`tag_version`), and every process downloads it by tag (`download_file`), verified by sha256. Both paths
share the functions below, so a mirror of the same repo finds the tag already there and does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint, or_, select
from sqlalchemy.orm import Mapped, mapped_column

from nfl_mlops.db import Base, get_engine, session_scope, utcnow

BACKOFF_SECONDS: tuple[float, ...] = (2.0, 5.0, 15.0)
"""Waits between attempts of one push (so 4 attempts); `registry sync` uses the same list."""

IGNORE_PATTERNS: tuple[str, ...] = (".staging-*", "*.tmp", "__pycache__/*")


class HubPushRow(Base):
    """A version waiting for (or done with) its upload to the Hub."""

    __tablename__ = "hub_pushes"
    __table_args__ = (UniqueConstraint("model_name", "version", "repo_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    repo_id: Mapped[str] = mapped_column(String(300))
    tag: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | pushed | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    commit_sha: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    pushed_at: Mapped[datetime | None] = mapped_column(nullable=True)


_ready: set[str] = set()


def ensure_tables(db_url: str | None = None) -> None:
    key = db_url or ""
    if key not in _ready:
        Base.metadata.create_all(get_engine(db_url), tables=[HubPushRow.__table__])  # type: ignore[list-item]
        _ready.add(key)


@dataclass(frozen=True)
class HubPush:
    """The state of one version's mirror."""

    model_name: str
    version: int
    repo_id: str
    tag: str
    status: str
    attempts: int
    last_error: str | None
    commit_sha: str | None
    pushed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "repo_id": self.repo_id,
            "tag": self.tag,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "commit_sha": self.commit_sha,
            "pushed_at": self.pushed_at.isoformat() if self.pushed_at else None,
        }


def _push(row: HubPushRow) -> HubPush:
    return HubPush(
        row.model_name,
        row.version,
        row.repo_id,
        row.tag,
        row.status,
        row.attempts,
        row.last_error,
        row.commit_sha,
        row.pushed_at,
    )


def classify_error(exc: BaseException) -> str:
    """What to do after a failed attempt: "retry" (network, 5xx, 429), "queue" (offline mode: wait for
    `registry sync` without retrying now) or "fail" (4xx, missing files: retrying will not help)."""
    if type(exc).__name__ == "OfflineModeIsEnabled":
        return "queue"
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return "retry" if status >= 500 or status in (408, 429) else "fail"
    if isinstance(
        exc, HubTagCollision | FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError
    ):
        return "fail"
    network = isinstance(exc, OSError | TimeoutError | ConnectionError) or type(exc).__module__.startswith(
        ("httpx", "httpcore", "requests", "urllib3")
    )
    return "retry" if network else "fail"


class HubTagCollision(RuntimeError):
    """The version's tag already names other files on the Hub; tags are immutable, so the push is refused."""


def git_blob_sha1(data: bytes) -> str:
    """The id git (and the Hub's tree listing) gives a file's content."""
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id


def version_tag(version: int) -> str:
    return f"v{version}"


def hub_api(settings: Any) -> Any:
    """The real `huggingface_hub` client for the settings' endpoint and token (the token stays a secret)."""
    from huggingface_hub import HfApi

    token = settings.huggingface_token
    return HfApi(
        endpoint=settings.huggingface_endpoint, token=token.get_secret_value() if token is not None else None
    )


class HubMirror:
    """Queue and send registry versions to the Hugging Face Hub."""

    def __init__(
        self,
        settings: Any = None,
        api: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Sequence[float] | None = None,
    ) -> None:
        """
        Args:
            api: a `huggingface_hub.HfApi` (built from the settings when None).
            sleep, backoff: how to wait between attempts (default BACKOFF_SECONDS; tests pass a recorder).
        """
        from nfl_mlops.settings import get_settings

        self.settings = settings or get_settings()
        self._api = api
        self.sleep = sleep
        self.backoff = tuple(BACKOFF_SECONDS if backoff is None else backoff)
        self.db_url = self.settings.db_url

    @property
    def enabled(self) -> bool:
        return self.settings.huggingface_token is not None and bool(self.settings.huggingface_repo)

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = hub_api(self.settings)
        return self._api

    def repo_for(self, model_name: str) -> str:
        repo = self.settings.huggingface_repo
        if not repo:
            raise ValueError("HUGGINGFACE_REPO is not set")
        return repo if model_name == self.settings.model_name else f"{repo}-{model_name}"

    # Queue
    def enqueue(self, model_name: str, version: int, path: str | Path) -> HubPush:
        """Put a version in the queue (once; a pushed version stays pushed)."""
        ensure_tables(self.db_url)
        repo = self.repo_for(model_name)
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(HubPushRow).where(
                    HubPushRow.model_name == model_name,
                    HubPushRow.version == version,
                    HubPushRow.repo_id == repo,
                )
            )
            if row is None:
                row = HubPushRow(
                    model_name=model_name,
                    version=version,
                    repo_id=repo,
                    tag=version_tag(version),
                    path=str(path),
                    status="pending",
                    attempts=0,
                )
                s.add(row)
                s.flush()
            return _push(row)

    def queued(self, include_failed: bool = True) -> list[HubPush]:
        ensure_tables(self.db_url)
        states = ("pending", "failed") if include_failed else ("pending",)
        with session_scope(self.db_url) as s:
            rows = s.scalars(select(HubPushRow).where(HubPushRow.status.in_(states)).order_by(HubPushRow.id))
            return [_push(r) for r in rows]

    def status(self, model_name: str, version: int) -> HubPush | None:
        return push_status(model_name, version, self.db_url)

    # Sending
    def mirror(self, model_name: str, version: int, path: str | Path) -> HubPush | None:
        """Queue and send one version; never raises (a failed push stays queued). None when disabled."""
        if not self.enabled:
            return None
        try:
            self.enqueue(model_name, version, path)
            return self.push(model_name, version)
        except Exception as exc:  # the mirror must never fail a registration
            return HubPush(
                model_name,
                version,
                self.settings.huggingface_repo or "",
                version_tag(version),
                "pending",
                0,
                f"{type(exc).__name__}: {exc}",
                None,
                None,
            )

    def push(self, model_name: str, version: int) -> HubPush:
        """Send a queued version: attempts with backoff on network errors; the row records the outcome."""
        ensure_tables(self.db_url)
        repo = self.repo_for(model_name)
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(HubPushRow).where(
                    HubPushRow.model_name == model_name,
                    HubPushRow.version == version,
                    HubPushRow.repo_id == repo,
                )
            )
            if row is None:
                raise LookupError(f"{model_name} v{version} is not queued for {repo}")
            if row.status == "pushed":
                return _push(row)
            path, tag = row.path, row.tag
        waits = list(self.backoff)
        attempts, error, sha, state = 0, None, None, "pending"
        while True:
            attempts += 1
            try:
                sha = self._send(repo, Path(path), tag, model_name, version)
                state, error = "pushed", None
                break
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:2000]
                verdict = classify_error(exc)
                if verdict != "retry" or not waits:
                    state = "failed" if verdict == "fail" else "pending"
                    break
                self.sleep(waits.pop(0))
        with session_scope(self.db_url) as s:
            row = s.scalar(
                select(HubPushRow).where(
                    HubPushRow.model_name == model_name,
                    HubPushRow.version == version,
                    HubPushRow.repo_id == repo,
                )
            )
            if row is None:  # the row is made when the push is queued, before any attempt
                raise LookupError(f"no Hub push recorded for {model_name} v{version} -> {repo}")
            row.attempts = (row.attempts or 0) + attempts
            row.status, row.last_error = state, error
            if state == "pushed":
                row.commit_sha, row.pushed_at = sha, utcnow()
            return _push(row)

    def sync(self, limit: int | None = None) -> list[HubPush]:
        """Send every queued version (pending, then failed ones again), oldest first."""
        out = []
        for item in self.queued()[:limit]:
            out.append(self.push(item.model_name, item.version))
        return out

    def _send(self, repo: str, folder: Path, tag: str, model_name: str, version: int) -> str:
        sha, tagged = commit_version(
            self.api, repo, folder, tag, model_name, version, private=self.settings.huggingface_private
        )
        if not tagged:
            tag_version(self.api, repo, tag, sha, model_name)
        return sha


# One version's revision on the Hub: the mirror above and the Hub artifact store (`registry.artifacts`) ------


def commit_version(
    api: Any, repo: str, folder: Path, tag: str, model_name: str, version: int, private: bool = True
) -> tuple[str, bool]:
    """Commit `folder` as the whole content of `repo`'s main branch, unless tag `tag` already names exactly
    these files (a push whose answer was lost). Returns (commit sha, whether `tag` already points at it).

    Raises:
        HubTagCollision: `tag` exists and names other files (tags are immutable, never moved).
        FileNotFoundError: `folder` is not a model folder.
    """
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a model folder (was the version deleted?)")
    api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True)
    # A tag is immutable once created (model cards tell users to pin revision="vN"): an existing tag
    # is either this very push done before (same files: nothing to do) or another model (refused).
    refs = api.list_repo_refs(repo_id=repo, repo_type="model")
    existing = next((t for t in refs.tags if t.name == tag), None)
    if existing is not None:
        if same_files(api, repo, tag, folder):
            return existing.target_commit, True
        raise HubTagCollision(
            f"tag {tag} of {repo} already names other files (commit {existing.target_commit[:12]}); Hub "
            "versions are immutable, so it is not moved. This registry's numbering collides with an earlier "
            "one: mirror it to another repo (HUGGINGFACE_REPO), or delete that tag on the Hub deliberately"
        )
    commit = api.upload_folder(
        repo_id=repo,
        repo_type="model",
        folder_path=str(folder),
        commit_message=f"{model_name} {tag}",
        commit_description=f"Registry version {version} of {model_name}, mirrored by nfl-mlops.",
        ignore_patterns=list(IGNORE_PATTERNS),
        delete_patterns="*",  # the revision holds exactly this version's files
    )
    return commit.oid, False


def tag_version(api: Any, repo: str, tag: str, sha: str, model_name: str) -> None:
    """Create the immutable tag `tag` on commit `sha`; another writer tagging it meanwhile is an error,
    never a move."""
    api.create_tag(
        repo_id=repo,
        tag=tag,
        revision=sha,
        tag_message=f"{model_name} {tag}",
        repo_type="model",
        exist_ok=False,
    )


def same_files(api: Any, repo: str, revision: str, folder: Path) -> bool:
    """Whether `revision` holds exactly the files a push of `folder` would upload, byte for byte."""
    from huggingface_hub.utils import filter_repo_objects

    remote = {
        f.path: f
        for f in api.list_repo_tree(repo_id=repo, revision=revision, recursive=True, repo_type="model")
        if hasattr(f, "blob_id")
    }
    local = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    kept = set(filter_repo_objects(list(local), ignore_patterns=list(IGNORE_PATTERNS)))
    if kept != set(remote):
        return False
    for rel in kept:
        data, f = local[rel].read_bytes(), remote[rel]
        if f.lfs is not None:
            import hashlib

            if hashlib.sha256(data).hexdigest() != f.lfs.sha256:
                return False
        elif git_blob_sha1(data) != f.blob_id:
            return False
    return True


def download_file(api: Any, repo: str, revision: str, filename: str, dest: Path) -> None:
    """Download one file of `repo` at `revision` to `dest` (through a throwaway Hub cache beside it, so
    nothing of it outlives the call; the caller verifies the bytes)."""
    import os
    import shutil
    import tempfile

    dest = Path(dest)
    scratch = Path(tempfile.mkdtemp(prefix=".hf-", dir=dest.parent))
    try:
        got = api.hf_hub_download(
            repo_id=repo, filename=filename, revision=revision, repo_type="model", cache_dir=str(scratch)
        )
        os.replace(os.path.realpath(got), dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def push_status(model_name: str, version: int, db_url: str | None = None) -> HubPush | None:
    """The mirror state of a version (any repo; the latest row), without calling the Hub."""
    ensure_tables(db_url)
    with session_scope(db_url) as s:
        row = s.scalars(
            select(HubPushRow)
            .where(HubPushRow.model_name == model_name, HubPushRow.version == version)
            .order_by(HubPushRow.id.desc())
        ).first()
        return _push(row) if row is not None else None


def queued_count(db_url: str | None = None) -> int:
    ensure_tables(db_url)
    with session_scope(db_url) as s:
        return len(
            list(
                s.scalars(
                    select(HubPushRow.id).where(
                        or_(HubPushRow.status == "pending", HubPushRow.status == "failed")
                    )
                )
            )
        )
