"""The local feature store for real: versioned Parquet feature groups, immutable training sets, DB rows."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from nfl_mlops.features.store import (
    FeatureGroupRow,
    FeatureStoreError,
    FeatureStoreNotFound,
    LocalFeatureStore,
    build_feature_frame,
    content_hash,
    find_feature_group,
    get_feature_store,
)
from nfl_mlops.features.text import FEATURE_COLUMNS


def _split(texts: list[str], labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": texts, "label": labels, "norm": [t.lower() for t in texts]})


@pytest.fixture()
def splits() -> dict[str, pd.DataFrame]:
    return {
        "train": _split(
            [
                "Go @Patriots! #SB49 http://t.co/x",
                "Brady deflated the balls",
                "meh, another game",
                "LOVE the Seahawks defense",
                "my flight was delayed again",
            ],
            ["positive", "negative", "neutral", "positive", "negative"],
        ),
        "val": _split(["Belichick press conference today"], ["neutral"]),
        "test": _split(
            ["Goodell should resign #deflategate", "what a catch by Edelman!"], ["negative", "positive"]
        ),
        "recent": _split(["Brady deflated the balls"], ["negative"]),  # same tweet as in train: another split
    }


@pytest.fixture()
def store(tmp_path: Path, settings) -> LocalFeatureStore:
    """A store with a state DB of its own (version numbers start at 1 whatever ran before)."""
    return LocalFeatureStore(tmp_path / "fs", f"sqlite:///{tmp_path / 'fs-state.db'}")


def test_feature_frame_has_keys_features_and_split(splits) -> None:
    frame = build_feature_frame(splits)
    assert list(frame.columns) == ["tweet_id", "split", "text", "norm", "label", *FEATURE_COLUMNS, "topic"]
    assert len(frame) == 9
    assert not frame.duplicated(["tweet_id", "split"]).any()
    assert frame["split"].value_counts().to_dict() == {"train": 5, "val": 1, "test": 2, "recent": 1}
    row = frame[frame["text"].str.startswith("Go @Patriots")].iloc[0]
    assert (row["n_hashtags"], row["n_mentions"], row["n_urls"]) == (1, 1, 1)
    assert row["n_nfl_entities"] >= 2 and row["topic"] == "nfl"
    assert frame.loc[frame["text"].str.startswith("my flight"), "n_nfl_entities"].item() == 0
    assert frame["oov_share"].notna().all()  # measured against the training vocabulary


def test_content_hash_is_order_independent_and_content_sensitive(splits) -> None:
    frame = build_feature_frame(splits)
    assert content_hash(frame) == content_hash(frame.sample(frac=1, random_state=0))
    changed = frame.copy()
    changed.loc[0, "label"] = "neutral" if changed.loc[0, "label"] != "neutral" else "positive"
    assert content_hash(changed) != content_hash(frame)


def test_same_data_same_version_new_data_new_version(store, splits, settings) -> None:
    frame = build_feature_frame(splits)
    v1 = store.write_feature_group("fg_versions", frame, data_version="data-a")
    again = store.write_feature_group(
        "fg_versions", frame.sample(frac=1, random_state=1), data_version="data-a"
    )
    assert (v1.version, again.version) == (1, 1)
    more = dict(splits, train=pd.concat([splits["train"], _split(["Kraft is furious"], ["negative"])]))
    v2 = store.write_feature_group("fg_versions", build_feature_frame(more), data_version="data-b")
    assert v2.version == 2 and v2.content_hash != v1.content_hash and v2.data_version == "data-b"
    assert [g.version for g in store.list_feature_groups("fg_versions")] == [1, 2]
    assert store.get_feature_group("fg_versions").version == 2
    # files: Parquet + schema with the hash, read back equal
    folder = Path(v1.location)
    schema = json.loads((folder / "schema.json").read_text())
    assert schema["content_hash"] == v1.content_hash and schema["columns"] == v1.schema
    pd.testing.assert_frame_equal(store.read_feature_group("fg_versions", 1), frame)
    # the metadata row is in the state DB, found without the store
    assert find_feature_group("fg_versions", 2, "local", store.db_url).content_hash == v2.content_hash


def test_training_dataset_is_immutable_with_its_split(store, splits) -> None:
    fg = store.write_feature_group("fg_td", build_feature_frame(splits), data_version="d")
    td = store.create_training_dataset("td_test", fg)
    assert (td.version, td.feature_group, td.feature_group_version) == (1, "fg_td", 1)
    assert td.splits == {"train": 5, "val": 1, "test": 2, "recent": 1}
    again = store.create_training_dataset("td_test", fg)  # made once
    assert (again.version, again.location, again.content_hash) == (td.version, td.location, td.content_hash)
    parts = store.read_training_dataset("td_test", 1)
    assert {k: len(v) for k, v in parts.items()} == td.splits
    assert set(parts["test"]["text"]) == set(splits["test"]["text"])
    # read-only files, and a modified file is detected
    path = Path(td.location) / "train.parquet"
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    assert stat.S_IMODE(path.stat().st_mode) & stat.S_IWUSR == 0
    path.chmod(0o644)
    parts["train"].iloc[:2].to_parquet(path, index=False)
    with pytest.raises(FeatureStoreError, match="modified"):
        store.read_training_dataset("td_test", 1)


def test_unknown_versions_raise_lookup_errors(store) -> None:
    with pytest.raises(FeatureStoreNotFound):
        store.get_feature_group("never_written")
    with pytest.raises(LookupError):
        store.read_training_dataset("never_written", 3)


def test_duplicate_keys_are_refused(store, splits) -> None:
    frame = build_feature_frame(splits)
    with pytest.raises(FeatureStoreError, match="duplicate"):
        store.write_feature_group("fg_dupes", pd.concat([frame, frame.iloc[:1]]), data_version="d")


def test_settings_choose_the_backend(settings, monkeypatch) -> None:
    from nfl_mlops.features.hopsworks_store import HopsworksFeatureStore

    assert isinstance(get_feature_store(settings), LocalFeatureStore)
    hops = settings.model_copy(update={"hopsworks_api_key": __import__("pydantic").SecretStr("k")})
    store = get_feature_store(hops)
    assert isinstance(store, HopsworksFeatureStore)
    assert store.host == "c.app.hopsworks.ai" and store.project_name == settings.hopsworks_project
    assert store._fs is None  # no connection until used


def test_tables_are_created_on_first_use_even_after_the_engine(tmp_path: Path) -> None:
    from sqlalchemy import inspect

    from nfl_mlops.db import get_engine

    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = get_engine(url)  # created (with create_all) before the store is used
    LocalFeatureStore(tmp_path / "fs", url).list_feature_groups()
    assert FeatureGroupRow.__tablename__ in inspect(engine).get_table_names()
