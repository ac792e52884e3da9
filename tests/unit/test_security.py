"""Secrets by value and by key, masked URLs, redacted logs, portable paths, import roots (issue 11, item 6)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nfl_mlops import security
from nfl_mlops.security import (
    IMPORT_REFUSAL,
    ImportRefused,
    import_folder,
    is_loopback_bind,
    is_loopback_client,
    mask_url,
    portable_path,
    redact,
    scrub,
    secret_key,
)
from nfl_mlops.settings import Settings

API_SECRET = "sk-unit-4f1c9e2b7a"
DB_PASSWORD = "pg-pass-93ad1"
REDIS_PASSWORD = "redis-pass-77e0"


@pytest.fixture()
def protected(tmp_path) -> Settings:
    s = Settings(
        mlops_home=tmp_path / "home",
        api_key=API_SECRET,
        database_url=f"postgresql+psycopg://mlops:{DB_PASSWORD}@db.internal:5432/state",
        redis_url=f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0",
    )
    security.protect(s)
    return s


@pytest.mark.parametrize(
    "key",
    [
        "hf_token",
        "authToken",
        "access_key",
        "AWS_SECRET_ACCESS_KEY",
        "accessKey",
        "api-key",
        "apiKey",
        "WANDB_API_KEY",
        "db_password",
        "client_secret",
        "credentials",
        "Authorization",
        "private_key",
    ],
)
def test_secret_keys_are_recognised_in_every_spelling(key: str) -> None:
    assert secret_key(key)


@pytest.mark.parametrize(
    "key", ["tokenizer", "max_tokens", "base_model", "learning_rate", "keyword", "monkey"]
)
def test_ordinary_keys_are_not_secrets(key: str) -> None:
    assert not secret_key(key)


def test_settings_mask_urls_and_keys(protected: Settings) -> None:
    shown = repr(protected) + str(protected.model_dump()) + json.dumps(protected.backends())
    for secret in (API_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in shown
    assert protected.db_url.endswith("@db.internal:5432/state")  # the engine still gets the real URL
    assert protected.redis_dsn and REDIS_PASSWORD in protected.redis_dsn
    assert mask_url(protected.db_url) == "postgresql+psycopg://mlops:***@db.internal:5432/state"


def test_redact_by_value_and_any_url_password(protected: Settings) -> None:
    text = (
        f"connect failed for {protected.db_url}; key={API_SECRET}; password {DB_PASSWORD} rejected; "
        "also s3://AKIAX:wJalrXUtnFEMI@minio:9000/bucket"
    )
    out = redact(text)
    for secret in (API_SECRET, DB_PASSWORD, "wJalrXUtnFEMI"):
        assert secret not in out
    assert "db.internal:5432/state" in out and "minio:9000/bucket" in out  # only the secret parts go


def test_scrub_redacts_values_and_makes_paths_portable(protected: Settings) -> None:
    home = Path(protected.mlops_home).resolve()
    config = {
        "output_dir": str(home / "runs" / "r1"),
        "data_path": Path("/srv/data/tweets/nfl.csv"),
        "note": f"trained with token {API_SECRET}",
        "dsn": protected.db_url,
        "nested": {"authToken": "x", "paths": [str(home / "datasets" / "d1")]},
        "epochs": 2,
        "tokenizer": "bert",
    }
    out = scrub(config)
    assert out["output_dir"] == "MLOPS_HOME/runs/r1"
    assert out["data_path"] == ".../tweets/nfl.csv"
    assert API_SECRET not in out["note"] and DB_PASSWORD not in out["dsn"]
    assert out["nested"] == {"paths": ["MLOPS_HOME/datasets/d1"]}
    assert out["epochs"] == 2 and out["tokenizer"] == "bert"
    assert portable_path("relative/path") == "relative/path"


def test_logs_never_show_a_configured_secret(protected: Settings, caplog) -> None:
    logger = logging.getLogger("nfl_mlops.test.security")
    with caplog.at_level(logging.INFO, logger="nfl_mlops.test.security"):
        logger.warning("could not reach %s with key %s", protected.db_url, API_SECRET)
        try:
            raise RuntimeError(f"redis auth failed: {REDIS_PASSWORD}")
        except RuntimeError:
            logger.exception("cache down")
    text = caplog.text
    assert "could not reach" in text and "cache down" in text and "RuntimeError" in text
    for secret in (API_SECRET, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in text


def test_a_child_process_reading_its_settings_redacts_its_own_logs(tmp_path) -> None:
    """`get_settings()` protects every process: a flow or a worker logs through the same factory."""
    code = (
        "import logging, sys\n"
        "from nfl_mlops.settings import get_settings\n"
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO)\n"
        "get_settings()\n"
        f"logging.getLogger('x').info('key is %s', {API_SECRET!r})\n"
    )
    env = {**os.environ, "MLOPS_HOME": str(tmp_path), "MLOPS_API_KEY": API_SECRET}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "key is ***" in out.stdout and API_SECRET not in out.stdout + out.stderr


def test_open_endpoints_and_import_roots_read_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MLOPS_OPEN_ENDPOINTS", "health, reads")
    monkeypatch.setenv("MLOPS_IMPORT_ROOTS", f"{tmp_path}/a,{tmp_path}/b")
    s = Settings()
    assert s.open_endpoints == {"health", "reads"}
    assert s.import_root_paths == (tmp_path / "a", tmp_path / "b")
    monkeypatch.setenv("MLOPS_OPEN_ENDPOINTS", "health,everything")
    with pytest.raises(ValueError, match="MLOPS_OPEN_ENDPOINTS"):
        Settings()
    monkeypatch.delenv("MLOPS_IMPORT_ROOTS")
    monkeypatch.delenv("MLOPS_OPEN_ENDPOINTS")
    assert Settings(mlops_home=tmp_path).import_root_paths == (tmp_path,)
    assert Settings().open_endpoints == {"health", "predictions"}


def test_loopback_addresses() -> None:
    assert is_loopback_client("127.0.0.1") and is_loopback_client("::1") and is_loopback_client(None)
    assert not is_loopback_client("10.1.2.3") and not is_loopback_client("2001:db8::1")
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("localhost") and is_loopback_bind("::1")
    assert not is_loopback_bind("0.0.0.0") and not is_loopback_bind("::") and not is_loopback_bind("10.0.0.4")


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"x")
    return path


def test_import_folder_only_below_a_root_and_without_links(tmp_path) -> None:
    root = tmp_path / "imports"
    good = _model_folder(root / "m1")
    assert import_folder(str(good), [root]) == good.resolve()

    outside = _model_folder(tmp_path / "elsewhere" / "m2")
    linked_folder = root / "link-to-elsewhere"
    linked_folder.symlink_to(outside, target_is_directory=True)
    inner_link = _model_folder(root / "m3")
    (inner_link / "secret.txt").symlink_to("/etc/passwd")
    through_dotdot = f"{root}/../elsewhere/m2"
    refused = [
        outside,
        linked_folder,
        inner_link,
        root / "missing",
        through_dotdot,
        "relative/m1",
        root / "m1" / "config.json",
    ]
    messages = set()
    for path in refused:
        with pytest.raises(ImportRefused) as info:
            import_folder(path, [root])
        messages.add(str(info.value))
    assert messages == {IMPORT_REFUSAL}  # missing and forbidden read the same: nothing about the host leaks
