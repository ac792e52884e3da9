"""The Hub mirror with the real `huggingface_hub` client (HfApi, hf_hub_download) and transformers,
against a fake Hub at the HTTP transport (an `httpx2.MockTransport` installed with
`huggingface_hub.set_client_factory`). Everything above the transport is the real client code:
repo creation, preupload, README YAML validation, the ndjson commit, refs, tags, and downloads
by revision. No request leaves the process; nothing here was run against huggingface.co.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import httpx2
import pytest
from pydantic import SecretStr

from nfl_mlops.registry.hub import HubMirror, classify_error, push_status

REPO = "nfl-org/nfl-sentiment"


class FakeHub:
    """Just enough of the Hub's HTTP API for create_repo, upload_folder, tags and file downloads."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.status_for_all: int | None = None

    # bookkeeping
    def _repo(self, repo: str) -> dict:
        return self.repos[repo]

    def files_at(self, repo: str, revision: str) -> dict[str, bytes]:
        r = self._repo(repo)
        sha = r["branches"].get(revision) or r["tags"].get(revision) or revision
        return r["commits"][sha]["files"]

    def _json(self, data, status: int = 200, headers: dict | None = None) -> httpx2.Response:
        return httpx2.Response(status, json=data, headers=headers)

    def _error(self, status: int, code: str | None = None) -> httpx2.Response:
        headers = {"X-Error-Code": code} if code else {}
        return httpx2.Response(status, json={"error": code or "error"}, headers=headers)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append((request.method, request.url.path))
        if self.down:
            raise httpx2.ConnectError("connection refused", request=request)
        if self.status_for_all is not None:
            return self._error(self.status_for_all)
        path = request.url.path
        if path == "/api/repos/create" and request.method == "POST":
            body = json.loads(request.content)
            repo = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            if repo in self.repos:
                return self._json({"error": "exists", "url": f"https://huggingface.co/{repo}"}, 409)
            self.repos[repo] = {
                "commits": {},
                "branches": {},
                "tags": {},
                "visibility": body.get("visibility"),
            }
            return self._json({"url": f"https://huggingface.co/{repo}"})
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|tree|refs|tag|revision)(?:/(.*))?$", path)
        if m:
            repo, op, rest = m.group(1), m.group(2), m.group(3)
            if repo not in self.repos:
                return self._error(404, "RepoNotFound")
            return getattr(self, f"_op_{op}")(request, repo, rest or "")
        m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m:
            return self._resolve(request, m.group(1), m.group(2), m.group(3))
        return self._error(404)

    def _op_preupload(self, request, repo, rest):
        files = json.loads(request.content)["files"]
        return self._json(
            {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        )

    def _op_tree(self, request, repo, rest):
        revision = rest.split("/")[0]
        r = self._repo(repo)
        if revision not in r["branches"] and revision not in r["tags"]:
            return self._json([]) if not r["commits"] else self._error(404, "RevisionNotFound")
        return self._json(
            [
                {
                    "type": "file",
                    "path": p,
                    "size": len(b),
                    "oid": hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest(),
                }  # git's blob id, as the Hub
                for p, b in sorted(self.files_at(repo, revision).items())
            ]
        )

    def _op_commit(self, request, repo, rest):
        branch = rest or "main"
        r = self._repo(repo)
        parent = r["branches"].get(branch)
        files = dict(r["commits"][parent]["files"]) if parent else {}
        for line in request.content.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            elif item["key"] == "lfsFile":
                return self._error(400)  # this fake only accepts regular uploads
        sha = hashlib.sha1(
            json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())).encode()
            + (parent or "").encode()
        ).hexdigest()
        r["commits"][sha] = {"files": files, "parent": parent}
        r["branches"][branch] = sha
        return self._json(
            {"commitUrl": f"https://huggingface.co/{repo}/commit/{sha}", "commitOid": sha, "success": True}
        )

    def _op_refs(self, request, repo, rest):
        r = self._repo(repo)
        return self._json(
            {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in r["branches"].items()
                ],
                "tags": [
                    {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in r["tags"].items()
                ],
                "converts": [],
            }
        )

    def _op_tag(self, request, repo, rest):
        r = self._repo(repo)
        if request.method == "DELETE":
            r["tags"].pop(rest, None)
            return self._json({})
        body = json.loads(request.content)
        target = r["branches"].get(rest) or (rest if rest in r["commits"] else None)
        if target is None:
            return self._error(404, "RevisionNotFound")
        if body["tag"] in r["tags"]:
            return self._error(409)
        r["tags"][body["tag"]] = target
        return self._json({})

    def _op_revision(self, request, repo, rest):
        revision = rest.split("/")[0]
        r = self._repo(repo)
        sha = r["branches"].get(revision) or r["tags"].get(revision)
        if sha is None:
            return self._error(404, "RevisionNotFound")
        return self._json(
            {
                "id": repo,
                "sha": sha,
                "private": True,
                "siblings": [{"rfilename": p} for p in sorted(r["commits"][sha]["files"])],
            }
        )

    def _resolve(self, request, repo, revision, filename):
        if repo not in self.repos:
            return self._error(404, "RepoNotFound")
        r = self._repo(repo)
        sha = (
            r["branches"].get(revision)
            or r["tags"].get(revision)
            or (revision if revision in r["commits"] else None)
        )
        if sha is None:
            return self._error(404, "RevisionNotFound")
        data = r["commits"][sha]["files"].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound")
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
            "Content-Length": str(len(data)),
            "Content-Type": "application/octet-stream",
        }
        return httpx2.Response(200, content=b"" if request.method == "HEAD" else data, headers=headers)


@pytest.fixture()
def fake_hub(monkeypatch) -> FakeHub:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

    hub = FakeHub()
    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", False
    )  # the suite sets HF_HUB_OFFLINE=1 for everything else
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(hub.handle),
            follow_redirects=True,
            event_hooks={"request": [hf_request_event_hook]},
        )
    )
    yield hub
    huggingface_hub.set_client_factory(default_client_factory)


@pytest.fixture()
def hub_settings(settings, tmp_path):
    """Mirror settings with a state DB of its own, so each test sees only its own queue."""
    return settings.model_copy(
        update={
            "huggingface_token": SecretStr("hf_test_token"),
            "huggingface_repo": REPO,
            "database_url": f"sqlite:///{tmp_path / 'hub-state.db'}",
        }
    )


@pytest.fixture(scope="module")
def version_folder(tmp_path_factory) -> Path:
    """A real (tiny, randomly initialised) BERT classifier in HF layout, with a model card."""
    from transformers import BertConfig, BertForSequenceClassification

    from nfl_mlops import LABELS
    from nfl_mlops.registry.card import write_model_card

    folder = tmp_path_factory.mktemp("hub_version")
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    write_model_card(folder, _info(1, folder), hub_repo=REPO)
    return folder


def _info(version: int, folder: Path):
    from datetime import UTC, datetime

    from nfl_mlops.registry.store import VersionInfo

    test = {
        "n": 10,
        "accuracy": 0.7,
        "macro_f1": 0.6,
        "f1": {"negative": 0.5, "neutral": 0.6, "positive": 0.7},
        "confusion": [[3, 1, 0], [1, 2, 0], [0, 1, 2]],
        "ece": 0.1,
    }
    return VersionInfo(
        model_name="nfl-sentiment",
        version=version,
        status="ready",
        path=str(folder),
        metrics={"test": test},
        params={"train": {"learning_rate": 1e-4}},
        lineage={"base_model": "tiny-bert", "dataset_version": "abc"},
        created_at=datetime.now(UTC),
    )


def test_a_version_is_uploaded_tagged_and_loadable_by_revision(
    fake_hub, hub_settings, version_folder, tmp_path
):
    from huggingface_hub import hf_hub_download
    from transformers import AutoModelForSequenceClassification

    mirror = HubMirror(hub_settings, sleep=lambda s: pytest.fail("no retry expected"))
    push = mirror.mirror("nfl-sentiment", 1, version_folder)
    assert push.status == "pushed" and push.tag == "v1" and push.attempts == 1, push
    repo = fake_hub.repos[REPO]
    assert repo["visibility"] == "private" and repo["tags"]["v1"] == push.commit_sha
    uploaded = fake_hub.files_at(REPO, "v1")
    assert {"config.json", "model.safetensors", "README.md", "confusion_matrix.png"} <= set(uploaded)
    assert uploaded["model.safetensors"] == (version_folder / "model.safetensors").read_bytes()

    # loadable by revision, through the real download code
    readme = hf_hub_download(
        REPO, "README.md", revision="v1", cache_dir=tmp_path / "cache", token="hf_test_token"
    )
    assert 'revision="v1"' in Path(readme).read_text()
    model = AutoModelForSequenceClassification.from_pretrained(
        REPO, revision="v1", cache_dir=tmp_path / "cache", token="hf_test_token"
    )
    assert model.config.id2label[2] == "positive" and model.config.hidden_size == 16
    weights = f"/{REPO}/resolve/{repo['tags']['v1']}/model.safetensors"  # v1 resolved to its commit
    assert ("GET", weights) in fake_hub.requests  # the weights came through the fake Hub

    # v2 replaces the files on main; v1 still resolves to its own commit
    v2 = tmp_path / "v2"
    v2.mkdir()
    for name in ("config.json", "model.safetensors"):
        (v2 / name).write_bytes((version_folder / name).read_bytes())
    (v2 / "README.md").write_text("---\nlicense: apache-2.0\n---\n# v2\n")
    push2 = mirror.mirror("nfl-sentiment", 2, v2)
    assert push2.status == "pushed" and repo["tags"]["v2"] != repo["tags"]["v1"]
    assert "confusion_matrix.png" not in fake_hub.files_at(
        REPO, "v2"
    )  # the revision holds exactly v2's files
    assert "confusion_matrix.png" in fake_hub.files_at(REPO, "v1")
    # pushing a pushed version again does nothing
    n = len(fake_hub.requests)
    assert mirror.mirror("nfl-sentiment", 2, v2).status == "pushed" and len(fake_hub.requests) == n


def test_network_failures_retry_with_backoff_then_wait_in_the_queue(
    fake_hub, hub_settings, version_folder, monkeypatch
):
    waits: list[float] = []
    mirror = HubMirror(hub_settings, sleep=waits.append)
    fake_hub.down = True
    push = mirror.mirror("nfl-sentiment", 11, version_folder)  # never raises
    assert push.status == "pending" and push.attempts == 4 and "ConnectError" in push.last_error
    assert waits == [2.0, 5.0, 15.0]
    assert [(p.model_name, p.version) for p in mirror.queued()] == [("nfl-sentiment", 11)]

    # the network is back: `nfl-mlops registry sync` sends what waits
    fake_hub.down = False
    from deployments import cli
    from nfl_mlops.settings import get_settings

    with monkeypatch.context() as env:
        env.setenv("HUGGINGFACE_TOKEN", "hf_test_token")
        env.setenv("HUGGINGFACE_REPO", REPO)
        env.setenv("MLOPS_DATABASE_URL", hub_settings.db_url)
        get_settings.cache_clear()
        try:
            assert cli.main(["registry", "sync"]) == 0
        finally:
            get_settings.cache_clear()
    done = push_status("nfl-sentiment", 11, hub_settings.db_url)
    assert done.status == "pushed" and done.attempts == 5 and done.last_error is None
    assert fake_hub.repos[REPO]["tags"]["v11"] == done.commit_sha
    assert mirror.queued() == []


def test_client_errors_are_not_retried_and_sync_tries_them_again(fake_hub, hub_settings, version_folder):
    waits: list[float] = []
    mirror = HubMirror(hub_settings, sleep=waits.append)
    fake_hub.status_for_all = 401
    push = mirror.mirror("nfl-sentiment", 21, version_folder)
    assert push.status == "failed" and push.attempts == 1 and waits == []
    fake_hub.status_for_all = None  # the token was fixed
    assert [p.status for p in mirror.sync()] == ["pushed"]


def test_server_errors_are_retried(fake_hub, hub_settings, version_folder):
    waits: list[float] = []
    mirror = HubMirror(hub_settings, sleep=waits.append, backoff=[0.5])
    fake_hub.status_for_all = 503
    push = mirror.mirror("nfl-sentiment", 31, version_folder)
    assert push.status == "pending" and push.attempts == 2 and waits == [0.5]


def test_an_existing_tag_is_never_moved(fake_hub, hub_settings, version_folder, tmp_path):
    """A fresh registry numbers its versions from 1 again; the Hub's v41 keeps naming the model users pinned."""
    from nfl_mlops.db import session_scope
    from nfl_mlops.registry.hub import HubPushRow

    mirror = HubMirror(hub_settings, sleep=lambda s: None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    first = mirror.mirror("nfl-sentiment", 41, other)
    assert first.status == "pushed"

    def forget() -> None:  # as a new state DB would
        with session_scope(hub_settings.db_url) as s:
            for row in s.query(HubPushRow).filter_by(model_name="nfl-sentiment", version=41):
                s.delete(row)

    forget()
    second = mirror.mirror("nfl-sentiment", 41, version_folder)
    assert second.status == "failed" and second.attempts == 1  # refused at once, not retried
    assert "immutable" in second.last_error and "HUGGINGFACE_REPO" in second.last_error
    assert fake_hub.repos[REPO]["tags"]["v41"] == first.commit_sha
    # the same files again (a push whose answer was lost) is not a collision: nothing moves
    forget()
    again = mirror.mirror("nfl-sentiment", 41, other)
    assert again.status == "pushed" and again.commit_sha == first.commit_sha
    assert fake_hub.repos[REPO]["tags"]["v41"] == first.commit_sha


def test_disabled_without_token_and_other_models_get_their_own_repo(settings, hub_settings):
    assert HubMirror(settings).mirror("nfl-sentiment", 1, "/nowhere") is None
    mirror = HubMirror(hub_settings)
    assert mirror.repo_for("nfl-sentiment") == REPO
    assert mirror.repo_for("flow-test-model") == f"{REPO}-flow-test-model"


def test_error_classification():
    class Resp:
        def __init__(self, code):
            self.status_code = code

    class HTTPErr(Exception):
        def __init__(self, code):
            self.response = Resp(code)

    assert classify_error(HTTPErr(503)) == "retry" and classify_error(HTTPErr(429)) == "retry"
    assert classify_error(HTTPErr(401)) == "fail" and classify_error(HTTPErr(404)) == "fail"
    assert classify_error(ConnectionError("reset")) == "retry"
    assert classify_error(FileNotFoundError("gone")) == "fail"
    assert classify_error(ValueError("bad yaml")) == "fail"

    from huggingface_hub.errors import OfflineModeIsEnabled

    assert classify_error(OfflineModeIsEnabled("offline")) == "queue"
