"""Unit tests of the local model registry (folders + DB rows) and of model cards."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from nfl_mlops.db import ModelVersion, session_scope
from nfl_mlops.registry.card import render_model_card, write_model_card
from nfl_mlops.registry.store import NotFoundError, Registry, RegistryError, VersionInfo


def _fake_hf_folder(root: Path, marker: str = "x") -> Path:
    folder = root / f"src-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "marker": marker}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


@pytest.fixture()
def model_name() -> str:
    return f"reg-{uuid.uuid4().hex[:8]}"


def _rows(model_name: str) -> list[int]:
    with session_scope() as s:
        return sorted(s.scalars(select(ModelVersion.version).where(ModelVersion.model_name == model_name)))


def _entries(registry: Registry, model_name: str) -> list[str]:
    root = registry.models_dir / model_name
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --------------------------------------------------------------------------------------------
# Registering and reading
# --------------------------------------------------------------------------------------------


def test_register_makes_increasing_versions(registry: Registry, model_name: str, tmp_path: Path) -> None:
    v1 = registry.register(
        model_name,
        _fake_hf_folder(tmp_path, "one"),
        metrics={"test": {"macro_f1": 0.6}},
        params={"epochs": 1},
        lineage={"data_hash": "abc"},
        description="first",
    )
    v2 = registry.register(model_name, _fake_hf_folder(tmp_path, "two"))
    assert (v1.version, v2.version) == (1, 2)
    assert v1.status == v2.status == "ready"
    assert v1.metrics == {"test": {"macro_f1": 0.6}} and v1.params == {"epochs": 1}
    assert v1.lineage == {"data_hash": "abc"} and v1.description == "first"
    assert Path(v1.path) == (registry.models_dir / model_name / "v1").resolve()
    # the files were copied, each version its own
    assert json.loads((Path(v1.path) / "config.json").read_text())["marker"] == "one"
    assert json.loads((Path(v2.path) / "config.json").read_text())["marker"] == "two"
    assert (Path(v2.path) / "tokenizer.json").exists()
    assert _entries(registry, model_name) == ["v1", "v2"]  # no staging left behind
    assert _rows(model_name) == [1, 2]


def test_versions_are_numbered_per_model(registry: Registry, tmp_path: Path) -> None:
    a, b = f"reg-a-{uuid.uuid4().hex[:6]}", f"reg-b-{uuid.uuid4().hex[:6]}"
    registry.register(a, _fake_hf_folder(tmp_path))
    registry.register(a, _fake_hf_folder(tmp_path))
    assert registry.register(b, _fake_hf_folder(tmp_path)).version == 1
    assert {a, b} <= set(registry.list_models())


def test_get_by_number_string_and_alias(registry: Registry, model_name: str, tmp_path: Path) -> None:
    registry.register(model_name, _fake_hf_folder(tmp_path))
    registry.register(model_name, _fake_hf_folder(tmp_path))
    for ref in (2, "v2", "V2", "2", " 2 ", "2.0", "v2.0"):  # "2.0": the SDK examples write versions so
        assert registry.get(model_name, ref).version == 2, ref
    for ref in ("2.1", 2**40, str(2**40), 0, -1):  # beyond the 32-bit column: not found, never a DB error
        with pytest.raises(NotFoundError):
            registry.get(model_name, ref)
    assert registry.get(model_name, 1).version == 1
    registry.set_alias(model_name, "champion", 1)
    champ = registry.get(model_name, "champion")
    assert champ.version == 1 and champ.aliases == ["champion"]
    assert registry.get(model_name, 2).aliases == []
    # moving the alias
    registry.set_alias(model_name, "champion", 2)
    assert registry.get(model_name, "champion").version == 2
    assert registry.get(model_name, 1).aliases == []
    registry.set_alias(model_name, "challenger", 2)
    assert registry.get(model_name, 2).aliases == ["challenger", "champion"]
    assert registry.get_alias(model_name, "challenger").version == 2
    registry.delete_alias(model_name, "challenger")
    assert registry.get_alias(model_name, "challenger") is None


def test_list_versions_carries_aliases(registry: Registry, model_name: str, tmp_path: Path) -> None:
    registry.register(model_name, _fake_hf_folder(tmp_path))
    registry.register(model_name, _fake_hf_folder(tmp_path), status="rejected", reason="gate failed")
    registry.set_alias(model_name, "champion", 1)
    versions = registry.list_versions(model_name)
    assert [(v.version, v.status, v.aliases) for v in versions] == [
        (1, "ready", ["champion"]),
        (2, "rejected", []),
    ]
    assert versions[1].reason == "gate failed"


def test_set_alias_on_rejected_version_fails(registry: Registry, model_name: str, tmp_path: Path) -> None:
    registry.register(model_name, _fake_hf_folder(tmp_path), status="rejected", reason="worse")
    with pytest.raises(RegistryError, match="rejected"):
        registry.set_alias(model_name, "champion", 1)
    assert registry.get_alias(model_name, "champion") is None


def test_unknown_version_or_alias_raises_not_found(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    registry.register(model_name, _fake_hf_folder(tmp_path))
    with pytest.raises(NotFoundError):
        registry.get(model_name, 7)
    with pytest.raises(NotFoundError):
        registry.get(model_name, "v7")
    with pytest.raises(NotFoundError, match="alias"):
        registry.get(model_name, "champion")
    with pytest.raises(NotFoundError):
        registry.get("no-such-model", 1)
    with pytest.raises(NotFoundError):
        registry.set_alias(model_name, "champion", 7)
    assert issubclass(NotFoundError, RegistryError) and issubclass(NotFoundError, LookupError)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_files_are_refused(registry: Registry, model_name: str, tmp_path: Path, missing: str) -> None:
    src = _fake_hf_folder(tmp_path)
    (src / missing).unlink()
    with pytest.raises(RegistryError, match=missing):
        registry.register(model_name, src)
    assert _rows(model_name) == []
    assert _entries(registry, model_name) == []


def test_missing_folder_and_bad_status_are_refused(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    with pytest.raises(RegistryError):
        registry.register(model_name, tmp_path / "nope")
    with pytest.raises(RegistryError, match="status"):
        registry.register(model_name, _fake_hf_folder(tmp_path), status="archived")
    assert _rows(model_name) == []


# --------------------------------------------------------------------------------------------
# Atomicity
# --------------------------------------------------------------------------------------------


def test_failing_card_writer_leaves_nothing_behind(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    registry.register(model_name, _fake_hf_folder(tmp_path))
    calls: list[VersionInfo] = []

    def broken_card(folder: Path, info: VersionInfo) -> None:
        calls.append(info)
        (folder / "README.md").write_text("half written")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.register(model_name, _fake_hf_folder(tmp_path), write_card=broken_card)
    assert [c.version for c in calls] == [2]
    assert _rows(model_name) == [1]
    assert _entries(registry, model_name) == ["v1"]  # no v2, no .staging-*
    with pytest.raises(NotFoundError):
        registry.get(model_name, 2)

    nxt = registry.register(model_name, _fake_hf_folder(tmp_path), write_card=write_model_card)
    assert nxt.version == 2
    assert _rows(model_name) == [1, 2]
    assert _entries(registry, model_name) == ["v1", "v2"]
    assert (Path(nxt.path) / "README.md").read_text().startswith("---\n")


def test_a_folder_the_registry_did_not_create_is_never_touched(
    registry: Registry, model_name: str, tmp_path: Path
) -> None:
    """A v1 folder without a row (an earlier registry with another state DB, say) keeps its files: the new
    v1 gets a fresh location of its own, recorded in its row."""
    old = registry.models_dir / model_name / "v1"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"the model users pinned")
    info = registry.register(model_name, _fake_hf_folder(tmp_path))
    assert info.version == 1 and Path(info.path) != old.resolve()
    assert Path(info.path).name.startswith("v1-") and (Path(info.path) / "config.json").exists()
    assert (old / "model.safetensors").read_bytes() == b"the model users pinned"
    assert sorted(p.name for p in old.iterdir()) == ["model.safetensors"]
    assert registry.get(model_name, 1).path == info.path
    nxt = registry.register(model_name, _fake_hf_folder(tmp_path / "b"))
    assert Path(nxt.path).name == "v2"


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def secret_token(monkeypatch: pytest.MonkeyPatch):
    from nfl_mlops.settings import get_settings

    token = "hf_SeCrEtTokenValue1234567890abcdef"
    monkeypatch.setenv("HUGGINGFACE_TOKEN", token)
    get_settings.cache_clear()
    assert get_settings().huggingface_token.get_secret_value() == token
    yield token
    monkeypatch.delenv("HUGGINGFACE_TOKEN")
    get_settings.cache_clear()


def _front_matter(text: str) -> str:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 4)
    return text[4:end]


def test_model_card_has_metadata_and_no_secret(
    registry: Registry, model_name: str, tmp_path: Path, secret_token: str
) -> None:
    import yaml

    from nfl_mlops.settings import get_settings

    settings = get_settings()
    metrics = {
        "test": {
            "n": 600,
            "accuracy": 0.71234,
            "macro_f1": 0.65432,
            "f1": {"negative": 0.8},
            "confusion": [[10, 1, 2], [3, 20, 4], [5, 6, 30]],
        },
        "recent": {"n": 50, "accuracy": 0.6, "macro_f1": 0.55, "f1": {}},
    }
    params = {"epochs": 2, "base_model": settings.base_model, "settings": settings.model_dump(mode="json")}
    info = registry.register(
        model_name,
        _fake_hf_folder(tmp_path),
        metrics=metrics,
        params=params,
        lineage={"base_model": "sentence-transformers/all-MiniLM-L6-v2", "data_hash": "d1"},
        write_card=write_model_card,
    )
    text = (Path(info.path) / "README.md").read_text()
    assert secret_token not in text
    assert "SeCrEt" not in text

    meta = yaml.safe_load(_front_matter(text))
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["pipeline_tag"] == "text-classification"
    [entry] = meta["model-index"]
    assert entry["name"] == f"{model_name}-v1"
    values = {m["name"]: m["value"] for m in entry["results"][0]["metrics"]}
    assert values == {"accuracy": pytest.approx(0.7123), "macro_f1": pytest.approx(0.6543)}
    # body
    assert f"# {model_name} v1" in text
    assert "| test | 600 | 0.7123 | 0.6543 |" in text
    assert "| recent | 50 | 0.6000 | 0.5500 |" in text
    assert "| **neutral** | 3 | 20 | 4 |" in text
    assert "- **data_hash**: `d1`" in text
    assert "## Limitations" in text


def test_model_card_base_model_falls_back_to_params_then_unknown() -> None:
    import yaml

    class Info:
        model_name, version, description = "m", 3, None
        metrics: dict = {}
        lineage: dict = {}
        params = {"base_model": "my/base"}

    assert yaml.safe_load(_front_matter(render_model_card(Info)))["base_model"] == "my/base"
    Info.params = {}
    meta = yaml.safe_load(_front_matter(render_model_card(Info)))
    assert meta["base_model"] == "unknown"
    assert "model-index" not in meta  # no metrics, no model-index (an empty one is not valid Hub metadata)


def test_secret_token_env_is_not_in_any_registered_file(
    registry: Registry, model_name: str, tmp_path: Path, secret_token: str
) -> None:
    info = registry.register(model_name, _fake_hf_folder(tmp_path), write_card=write_model_card)
    for path in Path(info.path).rglob("*"):
        if path.is_file():
            assert secret_token not in path.read_text(errors="ignore"), path
    assert os.environ["HUGGINGFACE_TOKEN"] == secret_token  # the fixture really set it
