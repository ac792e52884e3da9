"""Models by URI across hosts: two API replicas that share no filesystem follow rollouts from a model store.

Each replica is a real `uvicorn` process with a `MLOPS_HOME` of its own; the state is on PostgreSQL; the
versions live in a store reached over HTTP on loopback: moto's S3 server (s3fs/aiobotocore speak the real
S3 protocol to it) or the fake Hub of `tests/unit/test_hub_mirror.py` served over HTTP (the real
`huggingface_hub` client, by immutable tag). Only the network edge is fake. The registering "worker" deletes
its own registry folder once it has registered, so nothing can be loaded except through the store.

Both replicas serve v2 after a blue-green rollout (each fetched it into its own cache, verified); a v3 whose
weights object was replaced after registration is refused by both (sha256 mismatch), they keep serving v2,
and their heartbeats make the rollout roll back by itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import make_client, wait_until
from tests.api.processes import Replica

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(600)]

POLL_SECONDS = 0.2
LOAD_TIMEOUT = 180.0  # a fresh process imports torch and transformers on a busy 2-core machine
BUCKET = "models"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Store:
    """A model store reachable over loopback: what the registrar's settings and the replicas' env need."""

    kind: str
    artifact_uri: str
    settings: dict[str, Any]
    env: dict[str, str]
    corrupt: Callable[[Any], None]  # replace a registered version's weights in the store
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def s3_store() -> Iterator[Store]:
    """moto's S3 API in server mode on 127.0.0.1 (a real HTTP S3 endpoint), one bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws.items():
            mp.setenv(k, v)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)

        def corrupt(info: Any) -> None:
            key = f"{info.artifact_uri.removeprefix(f's3://{BUCKET}/')}/model.safetensors"
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            client.put_object(Bucket=BUCKET, Key=key, Body=body[: len(body) // 2])  # an incomplete upload

        try:
            yield Store(
                "s3",
                f"s3://{BUCKET}/registry",
                {"s3_endpoint_url": endpoint},
                {"MLOPS_S3_ENDPOINT_URL": endpoint, **aws},
                corrupt,
                {"client": client},
            )
        finally:
            server.stop()


class _HubOverHTTP(BaseHTTPRequestHandler):
    """Serves `FakeHub.handle` (written for an in-process transport) over real HTTP."""

    hub: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        import httpx2

        request = httpx2.Request(
            self.command,
            f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "transfer-encoding"],
            content=self._body(),
        )
        try:
            response = self.hub.handle(request)
        except Exception:  # noqa: BLE001 - a connection error of the fake: drop the connection
            self.close_connection = True
            return
        content = response.read()
        self.send_response(response.status_code)
        for k, v in response.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        length = response.headers.get("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve


@pytest.fixture(scope="module")
def hf_store() -> Iterator[Store]:
    """The fake Hub over HTTP on 127.0.0.1; the registrar's huggingface_hub goes online for it."""
    from huggingface_hub import constants

    from tests.unit.test_hub_mirror import REPO, FakeHub

    hub = FakeHub()
    handler = type("Handler", (_HubOverHTTP,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    def corrupt(info: Any) -> None:
        repo = hub.repos[REPO]
        files = repo["commits"][repo["tags"][f"v{info.version}"]]["files"]
        files["model.safetensors"] = b"\0" * len(files["model.safetensors"])  # same size, other bytes

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite is offline for everything else
            from pydantic import SecretStr

            yield Store(
                "hf",
                f"hf://{REPO}",
                {"huggingface_endpoint": endpoint, "huggingface_token": SecretStr("hf_test_token")},
                {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HUGGINGFACE_TOKEN": "hf_test_token"},
                corrupt,
                {"hub": hub},
            )
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def small_models(tmp_path_factory) -> list[Path]:
    """Three real (small, randomly initialised) BERT classifiers with the packaged MiniLM tokenizer, in HF
    layout with safetensors: they load and serve like any version, in a fraction of a second."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from nfl_mlops import LABELS
    from nfl_mlops.modeling.base import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("sentence-transformers/all-MiniLM-L6-v2"))
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            num_labels=3,
            id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)},
        )
        folder = tmp_path_factory.mktemp(f"small_model_{seed}")
        BertForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def _predict(replica: Replica, text: str) -> dict:
    with make_client(replica.base_url) as c:
        r = c.post("/mlops/predict/sentiment", json={"text": text})
        assert r.status_code == 200, f"{replica.name}: {r.status_code} {r.text}"
        return r.json()


def _follow(replicas: list[Replica], version: int, timeout: float) -> float:
    t0 = time.monotonic()
    for r in replicas:
        wait_until(
            lambda r=r: r.serving(version), timeout=timeout, interval=0.05, what=f"{r.name} on v{version}"
        )
    return round(time.monotonic() - t0, 2)


def _cached(home: Path) -> set[str]:
    root = home / "cache" / "artifacts"
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


@pytest.mark.parametrize("kind", ["s3", "hf"])
def test_replicas_without_a_shared_filesystem_serve_versions_from_the_store(
    kind, request, postgres_url, small_models, tmp_path
) -> None:
    from nfl_mlops.registry.artifacts import manifest_digest
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import actions
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    store: Store = request.getfixturevalue(f"{kind}_store")
    name = f"store-{kind}-{uuid.uuid4().hex[:8]}"
    worker = Settings(
        mlops_home=tmp_path / "worker",
        model_name=name,
        database_url=postgres_url,
        artifact_uri=store.artifact_uri,
        **store.settings,
    )
    registry = Registry.from_settings(worker)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in store.env.items():
            if k.startswith("AWS_"):
                mp.setenv(k, v)  # s3fs in this process reads the standard AWS variables
        versions = [registry.register(name, folder) for folder in small_models]
    assert [v.version for v in versions] == [1, 2, 3]
    assert all(v.artifact_uri.startswith(store.artifact_uri) for v in versions), [
        v.artifact_uri for v in versions
    ]
    shutil.rmtree(worker.models_path)  # the worker's folders are gone: only the store holds the versions
    rollouts.activate(name, 1, reason="store test: initial", db_url=postgres_url)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AWS_", "HF_"))}
    env.update(
        MLOPS_DATABASE_URL=postgres_url,
        MLOPS_MODEL_NAME=name,
        MLOPS_ROLLOUT_POLL_SECONDS=str(POLL_SECONDS),
        MLOPS_TORCH_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        TRANSFORMERS_OFFLINE="1",
        **store.env,
    )
    homes = [tmp_path / f"replica-{i}" for i in range(2)]
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    started = [
        Replica(f"{kind}-replica-{i}", {**env, "MLOPS_HOME": str(h)}, log_dir) for i, h in enumerate(homes)
    ]
    try:
        a, b = started
        first_took = _follow(started, 1, LOAD_TIMEOUT)
        digests = [manifest_digest(v.files) for v in versions]
        for home in homes:
            assert _cached(home) == {digests[0]}  # fetched into its own cache, verified
            assert not (home / "models").exists()
        assert {_predict(r, f"Brady again, {r.name}")["model_version"] for r in started} == {1}

        # a blue-green rollout of v2 (made elsewhere: a flow, the SDK): each replica fetches and loads it
        t0 = time.monotonic()
        r2 = actions.deploy(registry, name, 2, "blue_green", driver="api", db_url=postgres_url)
        assert r2.config["phase"] == "promoting", r2.config  # two live replicas must confirm it
        done = wait_until(
            lambda: (lambda x: x if x.config.get("phase") == "promoted" else None)(
                rollouts.get_rollout(r2.id, postgres_url)
            ),
            timeout=LOAD_TIMEOUT,
            what="v2 promoted",
        )
        v2_took = round(time.monotonic() - t0, 2)
        assert (
            sorted(done.history[-1]["replicas"]) == sorted(h.replica_id for h in _live(name, postgres_url))
            and len(done.history[-1]["replicas"]) == 2
        )
        _follow(started, 2, 30)
        for r in started:
            assert _predict(r, f"after the switch on {r.name}")["model_version"] == 2
        for home in homes:
            assert _cached(home) == {digests[0], digests[1]}
        with make_client(started[0].base_url) as c:  # the registry as a replica without the folders shows it
            shown = {v["version"]: v for v in c.get(f"/mlops/models/{name}").json()}
        assert shown[2]["artifact_uri"] == versions[1].artifact_uri, shown[2]
        assert shown[2]["runtimes"]["torch"]["admitted"], shown[2]

        # v3's weights were replaced in the store after registration: refused by both, v2 keeps serving
        store.corrupt(versions[2])
        r3 = actions.deploy(registry, name, 3, "blue_green", driver="api", db_url=postgres_url)
        ended = wait_until(
            lambda: (lambda x: x if x.status != "active" else None)(
                rollouts.get_rollout(r3.id, postgres_url)
            ),
            timeout=LOAD_TIMEOUT,
            what="the rollback of v3",
        )
        assert ended.status == "rolled_back", ended.history
        assert "could not load v3" in ended.reason and "model.safetensors" in ended.reason, ended.reason
        assert "does not match the registry" in ended.reason, ended.reason
        assert rollouts.active_rollout(name, db_url=postgres_url).version == 2
        for r in started:
            assert r.ready()
            assert _predict(r, f"still v2 on {r.name}")["model_version"] == 2
        for home in homes:
            cache = home / "cache" / "artifacts"
            assert _cached(home) == {digests[0], digests[1]}  # nothing of v3 kept, no temporary folder left
            assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
        print(
            f"\n{kind}: both replicas served v1 after {first_took} s (process start, fetch, load, warm-up); "
            f"v2 promoted {v2_took} s after the deploy (fetch + load + warm-up + confirmation)"
        )
    finally:
        for r in started:
            r.stop()
    for r in started:
        text = r.log_path.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert "sha256" in text and "v3" in text, text[-3000:]  # the refusal is logged, with the reason


def _live(name: str, db_url: str) -> list[Any]:
    from nfl_mlops.rollout import replicas

    return replicas.live_replicas(name, db_url=db_url)
