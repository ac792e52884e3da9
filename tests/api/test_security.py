"""Secure by default over real HTTP (issue 11, item 6): loopback only without a key, reads behind the key,
register only below an import root, secrets redacted from error bodies, any valid text scored and stored."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from nfl_mlops.security import IMPORT_REFUSAL, NO_KEY_REFUSAL
from tests.api.helpers import (
    api_settings,
    make_client,
    register_versions,
    start_server,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KEY = "security-key-3b9e5d01"


def _detail(r: httpx.Response) -> str:
    return r.json()["detail"]


def _outward_address() -> str | None:
    """A non-loopback address of this host (the route to a documentation address; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_without_a_key_only_loopback_clients_are_served(settings, tiny_model_dir):
    addr = _outward_address()
    if addr is None:
        pytest.fail("this host has no non-loopback IPv4 address to test from")
    for allow in (False, True):
        handle = start_server(api_settings("security-nokey", allow_no_auth=allow), host="0.0.0.0")
        try:
            port = handle.base_url.rsplit(":", 1)[1]
            with make_client(handle.base_url) as local, make_client(f"http://{addr}:{port}") as remote:
                assert local.get("/mlops/health/live").status_code == 200
                assert local.get("/mlops/models").status_code == 200
                for method, path in (
                    ("get", "/mlops/health/live"),
                    ("get", "/mlops/models"),
                    ("post", "/mlops/feedback"),
                ):
                    r = remote.request(method, path, json={})
                    if allow:
                        assert r.status_code != 403, (path, r.text)
                    else:
                        assert r.status_code == 403 and _detail(r) == NO_KEY_REFUSAL, (path, r.text)
        finally:
            handle.stop()


def test_the_cli_refuses_to_serve_other_hosts_without_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_API_KEY", "MLOPS_ALLOW_NO_AUTH")}
    env["MLOPS_HOME"] = str(tmp_path)
    cli = [sys.executable, "-m", "deployments.cli", "serve", "--host", "0.0.0.0", "--port", "1"]
    out = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "refusing to serve on 0.0.0.0 without an API key" in out.stderr and "MLOPS_API_KEY" in out.stderr


@pytest.fixture(scope="module")
def reads_open_server(settings, tiny_model_dir):
    """A keyed server whose open groups are `reads` only: predictions and health need the key."""
    from nfl_mlops.rollout import state as rollouts

    s = api_settings("security-groups", api_key=KEY, open_endpoints={"reads"})
    register_versions(s.model_name, tiny_model_dir, 1, s)
    rollouts.activate(s.model_name, 1, reason="security tests", db_url=s.db_url)
    handle = start_server(s)
    try:
        yield handle
    finally:
        handle.stop()


def test_open_endpoint_groups_are_a_setting(reads_open_server):
    key = {"X-API-Key": KEY}
    with make_client(reads_open_server.base_url, forbidden=("Traceback", KEY)) as c:
        wait_until(lambda: c.get("/mlops/health", headers=key).json().get("serving_version") == 1, 60)
        for path in ("/mlops/models", "/mlops/deployments", "/mlops/status", "/mlops/experiments"):
            assert c.get(path).status_code == 200, path
        for method, path, body in (
            ("post", "/mlops/predict/sentiment", {"text": "go pats"}),
            ("post", "/mlops/predict/sentiment/batch", {"texts": ["go pats"]}),
            ("get", "/mlops/health/live", None),
            ("get", "/mlops/health/ready", None),
            ("get", "/metrics", None),
        ):
            assert c.request(method, path, json=body).status_code == 401, path
            assert c.request(method, path, json=body, headers=key).status_code == 200, path
        # mutations always need the key, whatever is open
        assert c.post("/mlops/deployments", json={"model_id": "x", "model_version": 1}).status_code == 401


def test_register_reads_only_real_folders_below_an_import_root(client, tiny_model_dir, tmp_path_factory):
    import shutil

    root = Path(os.environ["MLOPS_HOME"]).resolve().parent  # the tests' import root (helpers.api_settings)
    outside = Path("/var/tmp") / f"nfl-mlops-outside-{os.getpid()}"
    shutil.copytree(tiny_model_dir, outside, dirs_exist_ok=True)
    base = tmp_path_factory.mktemp("imports")
    linked = base / "linked-model"
    linked.symlink_to(outside, target_is_directory=True)
    leaky = base / "leaky"
    shutil.copytree(tiny_model_dir, leaky)
    (leaky / "tokenizer.json").unlink(missing_ok=True)
    (leaky / "tokenizer.json").symlink_to("/etc/passwd")
    try:
        before = client.get("/mlops/models/security-import").status_code
        for path in (outside, linked, leaky, root / "no-such-folder", "/etc", "relative/model"):
            r = client.post(
                "/mlops/models/register", json={"model_name": "security-import", "model_path": str(path)}
            )
            assert r.status_code == 422 and _detail(r) == IMPORT_REFUSAL, (path, r.text)
        assert (
            before == 404 and client.get("/mlops/models/security-import").status_code == 404
        )  # nothing registered
        r = client.post(
            "/mlops/models/register",
            json={"model_name": "security-import", "model_path": str(tiny_model_dir)},
        )
        assert r.status_code == 201, r.text
        source = r.json()["lineage"]["source_path"]  # what a model card shows: no machine path
        assert not source.startswith("/") and source.endswith(tiny_model_dir.name), source
    finally:
        shutil.rmtree(outside, ignore_errors=True)


ODD = [
    "nul\x00inside the Pats game",
    "bell\x07 tab\t esc\x1b del\x7f what a drive",
    "🏈🔥 TD!!! 👨‍👩‍👧",
    "هدف رائع للفريق",
    "zero\u200bwidth\u200djoiner",
]


def test_any_valid_text_is_scored_and_stored(client, on_v1, main_settings):
    from nfl_mlops.db import Prediction, session_scope

    ids = {}
    for text in ODD:
        r = client.post("/mlops/predict/sentiment", json={"text": text})
        assert r.status_code == 200, (text, r.text)
        ids[r.json()["prediction_id"]] = text
    r = client.post("/mlops/predict/sentiment/batch", json={"texts": ODD})
    assert r.status_code == 200 and len(r.json()["predictions"]) == len(ODD)

    def stored() -> dict[str, str] | None:
        with session_scope(main_settings.db_url) as s:
            rows = dict(s.execute(select(Prediction.id, Prediction.text).where(Prediction.id.in_(ids))).all())
        return rows if len(rows) == len(ids) else None

    rows = wait_until(stored, 30, what="the odd texts' rows")
    assert rows == {i: t.replace("\x00", "\ufffd") for i, t in ids.items()}
    # what cannot be a text at all: a lone surrogate has no UTF-8 form
    for body in (b'{"text": "go \\ud800 pats"}', b'{"texts": ["fine", "\\udfff"]}'):
        path = "/mlops/predict/sentiment" + ("/batch" if b"texts" in body else "")
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and "lone surrogate" in _detail(r), r.text


def test_error_bodies_never_carry_a_configured_secret(tmp_path):
    """Any 4xx detail that would echo a secret value (a driver's error with the DSN, say) is redacted."""
    from fastapi import HTTPException
    from fastapi.testclient import TestClient

    from nfl_mlops.serving.app import create_app

    password = "pw-7d1e0c4b99"
    s = api_settings("security-errors", api_key=KEY)
    from nfl_mlops.security import protect
    from nfl_mlops.settings import Settings

    protect(Settings(database_url=f"postgresql://u:{password}@db:5432/x", mlops_home=tmp_path))
    app = create_app(s)

    @app.get("/boom")
    async def boom() -> None:
        raise HTTPException(400, f"could not connect with key {KEY} to postgresql://u:{password}@db:5432/x")

    with TestClient(app) as c:
        r = c.get("/boom")
    assert r.status_code == 400
    assert KEY not in r.text and password not in r.text and "postgresql://u:***@db:5432/x" in _detail(r)
    assert json.loads(r.text)["detail"].startswith("could not connect with key ***")
