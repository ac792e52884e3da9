"""Models by URI (`registry.artifacts`): manifests, the verified cache and the stores.

A registered version's row holds its artifact URI and the sha256 of each file; `resolve_version` gives a
process the version's folder only once every file matches. The remote stores are exercised for real at
their network edge: S3 through s3fs against moto's S3 server on loopback, the Hub through the real
`huggingface_hub` client against the fake Hub of `test_hub_mirror`. An in-memory store (the same two-method
interface) drives the cache's failure cases and the concurrency test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from nfl_mlops.registry.artifacts import (
    ArtifactIntegrityError,
    ArtifactMissing,
    Staged,
    hash_folder,
    manifest_digest,
    resolve_version,
    sha256_file,
)
from nfl_mlops.registry.store import Registry, RegistryError
from tests.unit.test_hub_mirror import REPO, fake_hub  # noqa: F401  (the fixture)

MODEL = "artifact-model"


def _model_folder(path: Path, marker: str = "one", weights: bytes = b"weights " * 4096) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"marker": marker}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text("{}")
    (path / "reference").mkdir()
    (path / "reference" / "profile.parquet").write_bytes(b"PAR1" + marker.encode())
    return path


def _host(settings, root: Path, name: str):
    """Settings of a host of its own: its MLOPS_HOME (models, cache) under `root/name`, the shared state DB."""
    return settings.model_copy(
        update={
            "mlops_home": root / name,
            "models_dir": None,
            "database_url": f"sqlite:///{root / 'state.db'}",
        }
    )


class MemoryStore:
    """A remote store in memory: counts fetches, can be slow, can have its objects damaged."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.fetches: list[str] = []
        self.delay_s = delay_s
        self.fail_after: int | None = None
        self._lock = threading.Lock()

    def stage(self, folder, files, model_name, version):
        uri = f"mem://{model_name}/v{version}-{manifest_digest(files)[:12]}"
        for i, rel in enumerate(sorted(files)):
            if self.fail_after is not None and i >= self.fail_after:
                raise ConnectionError("the store went away mid-upload")
            self.objects[f"{uri}/{rel}"] = (folder / rel).read_bytes()
        return Staged(uri)

    def fetch(self, uri, rel, dest):
        with self._lock:
            self.fetches.append(rel)
        time.sleep(self.delay_s)
        try:
            data = self.objects[f"{uri}/{rel}"]
        except KeyError:
            raise FileNotFoundError(f"{uri}/{rel}") from None
        dest.write_bytes(data[: len(data) // 2])  # written in two parts: a reader must never see half
        time.sleep(self.delay_s)
        with open(dest, "ab") as f:
            f.write(data[len(data) // 2 :])


# Manifests ------------------------------------------------------------------------------------------------


def test_the_manifest_hashes_every_file_and_its_digest_ignores_order(tmp_path) -> None:
    folder = _model_folder(tmp_path / "m")
    (folder / "partial.tmp").write_text("an upload in progress")
    (folder / "link.json").symlink_to(folder / "config.json")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "model.safetensors.metadata").write_text("upload bookkeeping")
    files = hash_folder(folder)
    assert sorted(files) == [
        "config.json",
        "model.safetensors",
        "reference/profile.parquet",
        "tokenizer.json",
    ]
    assert files["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert manifest_digest(dict(reversed(list(files.items())))) == manifest_digest(files)
    assert manifest_digest({**files, "config.json": "0" * 64}) != manifest_digest(files)


# The local store (the default) ----------------------------------------------------------------------------


def test_the_default_registers_a_file_uri_and_loads_the_folder_in_place(settings, tmp_path) -> None:
    host = _host(settings, tmp_path, "a")
    registry = Registry.from_settings(host)
    assert registry.store is None  # no MLOPS_ARTIFACT_URI: no copy anywhere, no network
    info = registry.register(MODEL, _model_folder(tmp_path / "src"))
    folder = Path(info.path)
    assert info.artifact_uri == folder.as_uri() and info.files == hash_folder(folder)
    assert registry.get(MODEL, 1).files == info.files  # kept in the row
    assert resolve_version(info, host) == folder
    assert not host.artifact_cache_path.exists()

    # a corrupted file is refused, naming the file and the version
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + b"X")
    with pytest.raises(ArtifactIntegrityError, match=rf"{MODEL} v1: model.safetensors .* refused"):
        resolve_version(info, host)
    weights.write_bytes(original[:100])  # truncated
    with pytest.raises(ArtifactIntegrityError, match="model.safetensors"):
        resolve_version(info, host)
    weights.unlink()
    with pytest.raises(ArtifactMissing, match=rf"{MODEL} v1: model.safetensors is missing"):
        resolve_version(info, host)


def test_a_version_registered_before_manifests_loads_from_its_path(settings, tmp_path) -> None:
    from dataclasses import replace

    host = _host(settings, tmp_path, "a")
    info = Registry.from_settings(host).register(MODEL, _model_folder(tmp_path / "src"))
    legacy = replace(info, artifact_uri=None, files={})  # a row of migration 0003
    assert resolve_version(legacy, host) == Path(info.path)
    (Path(info.path) / "config.json").unlink()
    with pytest.raises(ArtifactMissing, match="config.json missing"):
        resolve_version(legacy, host)


# The cache ------------------------------------------------------------------------------------------------


def test_another_host_fetches_into_its_cache_once_and_verifies(settings, tmp_path) -> None:
    store = MemoryStore()
    registrar = _host(settings, tmp_path, "registrar")
    info = Registry(registrar.models_path, registrar.db_url, store).register(
        MODEL, _model_folder(tmp_path / "s")
    )
    assert info.artifact_uri.startswith(f"mem://{MODEL}/v1-") and len(store.objects) == 4
    assert resolve_version(info, registrar, store) == Path(info.path)  # the registering host: its own folder
    assert store.fetches == []

    replica = _host(settings, tmp_path, "replica")
    folder = resolve_version(info, replica, store)
    assert folder == replica.artifact_cache_path / manifest_digest(info.files)
    assert hash_folder(folder) == info.files
    assert len(store.fetches) == 4
    assert resolve_version(info, replica, store) == folder and len(store.fetches) == 4  # cached
    assert [p.name for p in replica.artifact_cache_path.iterdir() if not p.name.startswith(".")] == [
        folder.name
    ]

    # the cached copy damaged on this disk: fetched again
    (folder / "tokenizer.json").write_text('{"tampered": true}')
    assert resolve_version(info, replica, store) == folder and hash_folder(folder) == info.files
    assert len(store.fetches) == 8


@pytest.mark.parametrize("damage", ["corrupt", "truncate", "delete"])
def test_a_damaged_object_is_refused_and_nothing_is_cached(settings, tmp_path, damage) -> None:
    store = MemoryStore()
    registrar = _host(settings, tmp_path, "registrar")
    info = Registry(registrar.models_path, registrar.db_url, store).register(
        MODEL, _model_folder(tmp_path / "s")
    )
    key = f"{info.artifact_uri}/model.safetensors"
    if damage == "corrupt":
        store.objects[key] = store.objects[key].replace(b"weights", b"weighty", 1)
    elif damage == "truncate":
        store.objects[key] = store.objects[key][:1000]
    else:
        del store.objects[key]
    replica = _host(settings, tmp_path, "replica")
    error = ArtifactMissing if damage == "delete" else ArtifactIntegrityError
    with pytest.raises(error) as caught:
        resolve_version(info, replica, store)
    message = str(caught.value)
    assert f"{MODEL} v1: model.safetensors" in message and info.artifact_uri in message, message
    if damage == "truncate":
        assert "1000 bytes" in message
    cache = replica.artifact_cache_path
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []  # no folder, no temp left


def test_an_unsafe_path_in_a_manifest_is_refused(settings, tmp_path) -> None:
    from dataclasses import replace

    store = MemoryStore()
    registrar = _host(settings, tmp_path, "registrar")
    info = Registry(registrar.models_path, registrar.db_url, store).register(
        MODEL, _model_folder(tmp_path / "s")
    )
    evil = replace(info, files={**info.files, "../../outside.txt": "0" * 64})
    with pytest.raises(ArtifactIntegrityError, match="unsafe path"):
        resolve_version(evil, _host(settings, tmp_path, "replica"), store)
    assert not (tmp_path / "replica" / "cache" / "outside.txt").exists()


def test_concurrent_resolves_download_once_and_never_show_a_half_filled_folder(settings, tmp_path) -> None:
    store = MemoryStore(delay_s=0.02)
    registrar = _host(settings, tmp_path, "registrar")
    info = Registry(registrar.models_path, registrar.db_url, store).register(
        MODEL, _model_folder(tmp_path / "s")
    )
    replica = _host(settings, tmp_path, "replica")
    final = replica.artifact_cache_path / manifest_digest(info.files)
    seen_incomplete: list[set[str]] = []
    done = threading.Event()

    def watch() -> None:  # whenever the folder exists, it holds every file, complete
        while not done.is_set():
            if final.is_dir():
                got = hash_folder(final)
                if got != info.files:
                    seen_incomplete.append(set(got))
            time.sleep(0.001)

    results: list[Path] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_version(info, replica, store))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=resolve) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    done.set()
    watcher.join(5)
    assert errors == [] and results == [final] * 4
    assert sorted(store.fetches) == sorted(info.files)  # one download, not four
    assert seen_incomplete == []


# Registration with a store --------------------------------------------------------------------------------


def test_a_failed_upload_registers_nothing(settings, tmp_path) -> None:
    store = MemoryStore()
    store.fail_after = 2
    host = _host(settings, tmp_path, "registrar")
    registry = Registry(host.models_path, host.db_url, store)
    with pytest.raises(ConnectionError):
        registry.register(MODEL, _model_folder(tmp_path / "s"))
    assert registry.list_versions(MODEL) == []
    assert not list((host.models_path / MODEL).iterdir())  # no version folder, no staging left
    store.fail_after = None
    assert registry.register(MODEL, tmp_path / "s").version == 1  # the number was not spent


def test_the_artifact_uri_setting(monkeypatch) -> None:
    from pydantic import ValidationError

    from nfl_mlops.settings import Settings

    monkeypatch.setenv("MLOPS_ARTIFACT_URI", "s3://bucket/models/")
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    s = Settings()
    assert s.artifact_uri == "s3://bucket/models" and s.backends()["artifacts"] == "s3"
    assert s.artifact_cache_path == s.mlops_home / "cache" / "artifacts"
    monkeypatch.setenv("MLOPS_ARTIFACT_URI", "hf://org/repo")
    assert Settings().backends()["artifacts"] == "hf"
    for bad in ("ftp://somewhere", "hf://just-a-name", "hf://org/repo/sub", "s3://", "/a/local/path"):
        monkeypatch.setenv("MLOPS_ARTIFACT_URI", bad)
        with pytest.raises(ValidationError, match="MLOPS_ARTIFACT_URI"):
            Settings()
    monkeypatch.delenv("MLOPS_ARTIFACT_URI")
    assert Settings().backends()["artifacts"] == "local"


# S3 through s3fs, against moto's S3 server on loopback -----------------------------------------------------


@pytest.fixture()
def s3_server(monkeypatch):
    """moto's S3 API served over HTTP on 127.0.0.1 (only the network edge is fake), one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    try:
        yield endpoint, client
    finally:
        server.stop()


def test_s3_round_trip_and_a_replaced_object_is_refused(settings, tmp_path, s3_server) -> None:
    from nfl_mlops.registry.artifacts import store_for

    endpoint, client = s3_server
    registrar = _host(settings, tmp_path, "registrar").model_copy(
        update={"artifact_uri": "s3://models/registry", "s3_endpoint_url": endpoint}
    )
    registry = Registry.from_settings(registrar)
    info = registry.register(MODEL, _model_folder(tmp_path / "s"))
    prefix = f"registry/{MODEL}/v1-{manifest_digest(info.files)[:12]}"
    assert info.artifact_uri == f"s3://models/{prefix}"
    # moto's backend is per process: other tests' models may share the bucket, so list this model's keys
    listed = client.list_objects_v2(Bucket="models", Prefix=f"registry/{MODEL}/")["Contents"]
    keys = {o["Key"] for o in listed}
    assert keys == {f"{prefix}/{rel}" for rel in info.files}

    replica = _host(settings, tmp_path, "replica").model_copy(update={"s3_endpoint_url": endpoint})
    folder = resolve_version(registry.get(MODEL, 1), replica)  # the row alone says where
    assert folder.parent == replica.artifact_cache_path and hash_folder(folder) == info.files

    v2 = registry.register(MODEL, _model_folder(tmp_path / "s2", marker="two"))
    client.put_object(
        Bucket="models", Key=f"{v2.artifact_uri[len('s3://models/') :]}/config.json", Body=b"{}"
    )
    with pytest.raises(ArtifactIntegrityError, match=rf"{MODEL} v2: config.json from s3://models/registry/"):
        resolve_version(v2, replica, store_for(v2.artifact_uri, replica))
    assert sorted(p.name for p in replica.artifact_cache_path.iterdir() if p.is_dir()) == [folder.name]


# The Hub, through the real client and the fake Hub --------------------------------------------------------


def test_hub_round_trip_by_immutable_tag_and_a_changed_file_is_refused(
    settings,
    tmp_path,
    fake_hub,  # noqa: F811
) -> None:
    from pydantic import SecretStr

    registrar = _host(settings, tmp_path, "registrar").model_copy(
        update={
            "artifact_uri": f"hf://{REPO}",
            "model_name": MODEL,
            "huggingface_token": SecretStr("hf_test_token"),
        }
    )
    registry = Registry.from_settings(registrar)
    info = registry.register(MODEL, _model_folder(tmp_path / "s"))
    assert info.artifact_uri == f"hf://{REPO}@v1"
    repo = fake_hub.repos[REPO]
    assert set(fake_hub.files_at(REPO, "v1")) == set(info.files)

    replica = _host(settings, tmp_path, "replica").model_copy(
        update={"huggingface_token": SecretStr("hf_test_token")}
    )
    folder = resolve_version(registry.get(MODEL, 1), replica)
    assert folder.parent == replica.artifact_cache_path and hash_folder(folder) == info.files
    assert ("GET", f"/{REPO}/resolve/v1/model.safetensors") in fake_hub.requests

    v2 = registry.register(MODEL, _model_folder(tmp_path / "s2", marker="two"))
    assert v2.artifact_uri == f"hf://{REPO}@v2" and repo["tags"]["v2"] != repo["tags"]["v1"]
    repo["commits"][repo["tags"]["v2"]]["files"]["model.safetensors"] = b"not what was registered"
    with pytest.raises(ArtifactIntegrityError, match=rf"{MODEL} v2: model.safetensors from hf://{REPO}@v2"):
        resolve_version(v2, replica)

    # a registry that numbers from 1 again never moves the Hub's v1: its registration fails, nothing is kept
    other = registrar.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'other.db'}"})
    with pytest.raises(Exception, match="immutable"):
        Registry.from_settings(other).register(MODEL, _model_folder(tmp_path / "s3", marker="three"))
    assert Registry.from_settings(other).list_versions(MODEL) == []
    assert fake_hub.files_at(REPO, "v1")["config.json"] == (Path(info.path) / "config.json").read_bytes()


def test_registry_errors_are_unchanged_for_folders_that_are_not_models(settings, tmp_path) -> None:
    host = _host(settings, tmp_path, "a")
    with pytest.raises(RegistryError, match="missing"):
        Registry.from_settings(host).register(MODEL, tmp_path)
