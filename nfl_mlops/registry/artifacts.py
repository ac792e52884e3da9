"""Models by URI: where a registered version's files live, and the one way every process gets them.

At registration (`Registry.register`) the complete version folder is hashed (`hash_folder`: sha256 per
file, the *manifest*) and handed to the artifact store that `MLOPS_ARTIFACT_URI` selects (`store_for`):

- unset: the local folder under MODELS_DIR itself (`file://...`); nothing is copied, no network.
- `s3://bucket/prefix`: the files go to `prefix/<model>/v<N>-<manifest hash[:12]>/` through s3fs (any
  S3-compatible store; `MLOPS_S3_ENDPOINT_URL`, credentials from the standard AWS variables/boto config).
  The key holds the content hash, so objects left by an attempt that crashed are never mistaken for a
  version and never overwritten by a different one.
- `hf://org/repo`: a commit of the Hugging Face Hub repo, tagged `v<N>` (immutable) once the version's
  number is secured; versions load by that tag (`hf://org/repo@v<N>`).

Objects are written first and the registry row (with the version's URI and manifest) is committed last, so
no row ever points at an incomplete artifact.

Every consumer (API replicas, flows, monitoring, the gate, labelling) loads a version through
`resolve_version`: a local folder is used in place after its files are checked against the manifest; a
remote one is downloaded once per host into `MLOPS_HOME/cache/artifacts/<sha256 of the manifest>/` (into a
temporary folder, verified file by file, then renamed into place atomically, under a per-hash file lock,
so another process never sees a half-filled folder). A file whose sha256 differs from the manifest (corrupt,
truncated, replaced) or that is missing raises `ArtifactIntegrityError`/`ArtifactMissing`, naming the file,
the version and the source; the API then keeps serving what it has and reports the error in its heartbeat
(the rollout rolls back).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from nfl_mlops.registry.hub import IGNORE_PATTERNS

log = logging.getLogger(__name__)

REQUIRED_FILES = ("config.json", "model.safetensors")
"""What a version folder must hold to load (also checked for versions registered without a manifest)."""
CHUNK = 1 << 20
STALE_TMP_S = 24 * 3600.0
"""A temporary download folder this old was left by a process that died; the next download removes it."""


class ArtifactError(RuntimeError):
    """A registered version's files cannot be made available on this host."""


class ArtifactMissing(ArtifactError):
    """A file of the version (or the whole folder) is not where the registry says it is."""


class ArtifactIntegrityError(ArtifactError):
    """A file of the version does not match the sha256 the registry recorded: refused, never loaded."""


# Manifests -------------------------------------------------------------------------------------------------


NOT_VERSION_FILES = (*IGNORE_PATTERNS, ".git/*", ".cache/huggingface/*")
"""Never part of a version (work files, and what `upload_folder` skips anyway, so every store holds the
manifest's files exactly)."""


def _ignored(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in NOT_VERSION_FILES)


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=512)
def _sha256_memo(path: str, size: int, mtime_ns: int, inode: int) -> str:
    return sha256_file(path)


def _sha256_cached(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime, inode) in this process."""
    st = path.stat()
    return _sha256_memo(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def hash_folder(folder: Path | str) -> dict[str, str]:
    """The manifest of a version folder: {relative POSIX path: sha256} of every file (symbolic links and
    the store's ignored patterns excluded), sorted by path."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink() or not p.is_file() or _ignored(rel):
            continue
        out[rel] = sha256_file(p)
    return out


def manifest_digest(files: Mapping[str, str]) -> str:
    """The content hash of a version: sha256 of its manifest as canonical JSON (the cache folder's name)."""
    return hashlib.sha256(json.dumps(dict(files), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _safe_rel(rel: str, label: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ArtifactIntegrityError(f"{label}: the manifest names an unsafe path {rel!r}; refused")
    return p


def verify_folder(folder: Path, files: Mapping[str, str], label: str, source: str | None = None) -> None:
    """Raise unless every file of the manifest is in `folder` with its recorded sha256.

    Raises:
        ArtifactMissing: the folder or a file is missing. ArtifactIntegrityError: a file's content differs.
    """
    where = source or str(folder)
    if not folder.is_dir():
        raise ArtifactMissing(f"{label}: its folder {folder} does not exist on this host")
    for rel, want in sorted(files.items()):
        path = folder / _safe_rel(rel, label)
        try:
            got = _sha256_cached(path)
        except FileNotFoundError:
            raise ArtifactMissing(f"{label}: {rel} is missing from {where}") from None
        if got != want:
            raise ArtifactIntegrityError(_mismatch(label, rel, got, want, path.stat().st_size, where))


def _mismatch(label: str, rel: str, got: str, want: str, size: int, where: str) -> str:
    return (
        f"{label}: {rel} from {where} does not match the registry (sha256 {got[:16]}..., {size} bytes; "
        f"recorded {want[:16]}...): corrupt or incomplete, refused"
    )


# Stores ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Staged:
    """A version's files written to a store: its URI, and the step that publishes it once the registry row
    has secured the version number (the Hub's tag; nothing for the others)."""

    uri: str
    publish: Callable[[], None] = lambda: None


class ArtifactStore(Protocol):
    """Where versions' files live besides the registering host (S3, the Hub)."""

    def stage(self, folder: Path, files: Mapping[str, str], model_name: str, version: int) -> Staged:
        """Write `folder`'s files (those of `files`) and return their URI."""
        ...

    def fetch(self, uri: str, rel: str, dest: Path) -> None:
        """Download the file `rel` of the version at `uri` to `dest` (raises FileNotFoundError when absent)."""
        ...


class S3Store:
    """An S3 bucket (AWS or any S3-compatible store) through s3fs."""

    def __init__(self, base_uri: str | None, settings: Any) -> None:
        self.base_uri = (base_uri or "").rstrip("/")
        self.settings = settings
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import s3fs

            # no listing or instance caches: a replaced object must be read as it is now
            self._fs = s3fs.S3FileSystem(
                endpoint_url=self.settings.s3_endpoint_url,
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        return self._fs

    def stage(self, folder: Path, files: Mapping[str, str], model_name: str, version: int) -> Staged:
        uri = f"{self.base_uri}/{model_name}/v{version}-{manifest_digest(files)[:12]}"
        started = time.perf_counter()
        for rel in sorted(files):
            self.fs.put_file(str(folder / rel), f"{uri.removeprefix('s3://')}/{rel}")
        took = time.perf_counter() - started
        log.info("uploaded %d files of %s v%d to %s in %.1fs", len(files), model_name, version, uri, took)
        return Staged(uri)

    def fetch(self, uri: str, rel: str, dest: Path) -> None:
        key = f"{uri.removeprefix('s3://').rstrip('/')}/{rel}"
        with self.fs.open(key, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


class HubStore:
    """A Hugging Face Hub repo: one commit per version, tagged `v<N>`; loaded by that tag."""

    def __init__(self, base_uri: str | None, settings: Any, api: Any = None) -> None:
        self.repo = (base_uri or "").removeprefix("hf://").strip("/")
        self.settings = settings
        self._api = api

    @property
    def api(self) -> Any:
        if self._api is None:
            from nfl_mlops.registry.hub import hub_api

            self._api = hub_api(self.settings)
        return self._api

    def repo_for(self, model_name: str) -> str:
        """The repo of a model: the URI's for MLOPS_MODEL_NAME, `<repo>-<model>` for others (as the mirror)."""
        return self.repo if model_name == self.settings.model_name else f"{self.repo}-{model_name}"

    def stage(self, folder: Path, files: Mapping[str, str], model_name: str, version: int) -> Staged:
        from nfl_mlops.registry import hub

        repo, tag = self.repo_for(model_name), hub.version_tag(version)
        sha, tagged = hub.commit_version(
            self.api, repo, folder, tag, model_name, version, private=self.settings.huggingface_private
        )

        def publish() -> None:
            if not tagged:
                hub.tag_version(self.api, repo, tag, sha, model_name)

        return Staged(f"hf://{repo}@{tag}", publish)

    def fetch(self, uri: str, rel: str, dest: Path) -> None:
        from huggingface_hub.errors import EntryNotFoundError

        from nfl_mlops.registry import hub

        repo, _, revision = uri.removeprefix("hf://").partition("@")
        try:
            hub.download_file(self.api, repo, revision or "main", rel, dest)
        except EntryNotFoundError as exc:
            raise FileNotFoundError(f"{rel} is not in {uri}") from exc


def store_for(uri: str, settings: Any = None) -> ArtifactStore:
    """The store of a remote URI (a version's, or MLOPS_ARTIFACT_URI). The default, a local folder, needs
    none: the registry folder is the artifact."""
    from nfl_mlops.settings import get_settings

    settings = settings or get_settings()
    if uri.startswith("s3://"):
        return S3Store(uri, settings)
    if uri.startswith("hf://"):
        return HubStore(uri.split("@", 1)[0], settings)
    raise ArtifactError(f"unknown artifact URI {uri!r} (expected s3:// or hf://)")


def local_path(uri: str) -> Path:
    """The folder of a `file://` URI."""
    return Path(unquote(urlparse(uri).path))


def describe(uri: str | None) -> str:
    """A URI as it may be shown (no credentials: they never go into URIs here, but be sure)."""
    if not uri:
        return "-"
    parsed = urlparse(uri)
    if parsed.password or parsed.username:
        return uri.replace(parsed.netloc, parsed.hostname or "", 1)
    return uri


# Resolving -------------------------------------------------------------------------------------------------


class _Version(Protocol):
    """What `resolve_version` reads of a version (`VersionInfo`, or a `ModelVersion` row)."""

    @property
    def model_name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def artifact_uri(self) -> str | None: ...
    @property
    def files(self) -> Any: ...


def resolve_version(info: _Version, settings: Any = None, store: ArtifactStore | None = None) -> Path:
    """The local folder of a registered version, its files verified against the registry's sha256; the one
    way any process gets a version's files to load.

    Args:
        info: the version (`VersionInfo` or a `ModelVersion` row): its URI, manifest and registering path.
        store: where to download from (default: the store of the version's URI).

    Returns:
        A folder holding exactly the version's files: the local registry folder (the default store, or the
        host that registered it), else `MLOPS_HOME/cache/artifacts/<manifest hash>`.

    Raises:
        ArtifactMissing, ArtifactIntegrityError: with the file, the version and the source in the message.
    """
    from nfl_mlops.settings import get_settings

    settings = settings or get_settings()
    label = f"{info.model_name} v{info.version}"
    files: dict[str, str] = dict(info.files or {})
    uri = info.artifact_uri
    if not files:  # registered before manifests (migration 0004): the folder as it is
        folder = Path(info.path)
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise ArtifactMissing(f"{label}: {', '.join(missing)} missing from {folder}")
        return folder
    if not uri or uri.startswith("file:"):
        folder = local_path(uri) if uri else Path(info.path)
        verify_folder(folder, files, label)
        return folder
    own = Path(info.path) if info.path else None
    if own is not None and _within(own, settings.models_path) and own.is_dir():
        try:  # the host that registered it: its own registry folder, when intact
            verify_folder(own, files, label)
            return own
        except ArtifactError as exc:
            log.warning("%s; loading it from %s instead", exc, describe(uri))
    return fetch_into_cache(
        uri, files, label, settings.artifact_cache_path, store or store_for(uri, settings)
    )


def _within(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(Path(root).resolve())
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes and threads (each `open` is its own lock holder)."""
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def fetch_into_cache(
    uri: str, files: Mapping[str, str], label: str, root: Path, store: ArtifactStore
) -> Path:
    """`root/<manifest hash>`, downloaded from `uri` when this host does not hold it yet (see the module)."""
    root = Path(root)
    digest = manifest_digest(files)
    final = root / digest
    if final.is_dir():
        try:
            verify_folder(final, files, label, source=f"the cache ({final})")
            return final
        except ArtifactError as exc:  # damaged on this disk: fetch it again
            log.warning("%s; fetching it again from %s", exc, describe(uri))
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{digest}.lock"):
        if final.is_dir():
            try:  # another process finished it while this one waited
                verify_folder(final, files, label, source=f"the cache ({final})")
                return final
            except ArtifactError:
                _discard(final, root)
        _clean_stale(root)
        started = time.perf_counter()
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{digest[:12]}-", dir=root))
        try:
            size = 0
            for rel, want in sorted(files.items()):
                dest = work / _safe_rel(rel, label)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    store.fetch(uri, rel, dest)
                except FileNotFoundError as exc:
                    raise ArtifactMissing(f"{label}: {rel} is missing from {describe(uri)} ({exc})") from exc
                got = sha256_file(dest)
                if got != want:
                    raise ArtifactIntegrityError(
                        _mismatch(label, rel, got, want, dest.stat().st_size, describe(uri))
                    )
                size += dest.stat().st_size
            os.rename(work, final)  # atomic: readers see the whole folder or none
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info(
            "fetched %s (%d files, %.1f MB) from %s into %s in %.1fs",
            label,
            len(files),
            size / 1e6,
            describe(uri),
            final,
            time.perf_counter() - started,
        )
    return final


def _discard(folder: Path, root: Path) -> None:
    aside = root / f".discard-{folder.name[:12]}-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(OSError):
        folder.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)


def _clean_stale(root: Path) -> None:
    now = time.time()
    for p in root.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
