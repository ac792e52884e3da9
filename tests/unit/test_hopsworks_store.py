"""The Hopsworks backend through the real `hopsworks` SDK surface, with only the cluster faked.

What is real: the `hopsworks` package (5.2.1) provides the classes; every handle the adapter gets
is `create_autospec`-ed from the SDK's own `hopsworks.login`, `Project`, `FeatureStore`,
`FeatureGroup` and `FeatureView`, so a call with a parameter the SDK does not have fails here.
What is faked: what a Hopsworks cluster would do behind those calls (REST, Kafka ingestion, the
training-dataset job), by a small in-memory cluster. Nothing here talks to a live cluster.
"""

from __future__ import annotations

from pathlib import Path
from unittest.mock import create_autospec

import pandas as pd
import pytest
from pydantic import SecretStr

hopsworks = pytest.importorskip("hopsworks", reason="the optional `hopsworks` extra is not installed")

from hopsworks.project import Project  # noqa: E402
from hsfs.feature_group import FeatureGroup  # noqa: E402
from hsfs.feature_store import FeatureStore as SdkFeatureStore  # noqa: E402
from hsfs.feature_view import FeatureView  # noqa: E402

from nfl_mlops.features.hopsworks_store import HopsworksFeatureStore  # noqa: E402
from nfl_mlops.features.store import build_feature_frame, get_feature_store  # noqa: E402


class FakeCluster:
    """What the Hopsworks project holds: feature-group rows, feature views, training-dataset snapshots."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], pd.DataFrame | None] = {}
        self.group_meta: dict[tuple[str, int], dict] = {}
        self.views: dict[tuple[str, int], tuple[str, int]] = {}
        self.view_meta: dict[tuple[str, int], dict] = {}
        self.training_data: dict[tuple[str, int], dict[int, pd.DataFrame]] = {}
        self.logins: list[dict] = []
        self.fail_next_insert: Exception | None = None

    # hopsworks.login -> Project -> FeatureStore
    def login(self, **kwargs):
        self.logins.append(kwargs)
        project = create_autospec(Project, instance=True)
        project.get_feature_store.side_effect = lambda name=None: self._feature_store()
        return project

    def _feature_store(self):
        fs = create_autospec(SdkFeatureStore, instance=True)
        fs.get_feature_groups.side_effect = lambda name=None: [
            self._group(n, v) for (n, v) in self.groups if n == name
        ]
        fs.get_or_create_feature_group.side_effect = self._get_or_create_group
        fs.get_feature_group.side_effect = lambda name, version=None: (
            self._group(name, version) if (name, version) in self.groups else None
        )
        fs.get_or_create_feature_view.side_effect = self._get_or_create_view
        fs.get_feature_view.side_effect = lambda name, version=None: self._view(name, version)
        return fs

    def _get_or_create_group(self, name, version=None, **kwargs):
        key = (name, version)
        if key not in self.groups:
            self.groups[key] = None
            self.group_meta[key] = kwargs
        return self._group(name, version)

    def _group(self, name, version):
        fg = create_autospec(FeatureGroup, instance=True)
        fg.name, fg.version = name, version

        def insert(features, **kwargs):
            if self.fail_next_insert is not None:
                exc, self.fail_next_insert = self.fail_next_insert, None
                raise exc
            pk = self.group_meta[(name, version)]["primary_key"]
            old = self.groups[(name, version)]
            merged = features if old is None else pd.concat([old, features]).drop_duplicates(pk, keep="last")
            self.groups[(name, version)] = merged.reset_index(drop=True)
            return None, None

        def delete(force=False, delete_feature_views=False):
            self.groups.pop((name, version), None)
            self.group_meta.pop((name, version), None)

        fg.insert.side_effect = insert
        fg.delete.side_effect = delete
        fg.select_all.side_effect = lambda **kw: ("query", name, version)
        fg.read.side_effect = lambda **kw: self.groups[(name, version)].copy()
        return fg

    def _get_or_create_view(self, name, query, version=None, labels=None, **kwargs):
        key = (name, version)
        if key not in self.views:
            _, fg_name, fg_version = query
            self.views[key] = (fg_name, fg_version)
            self.view_meta[key] = {"labels": labels, **kwargs}
        return self._view(name, version)

    def _view(self, name, version):
        fv = create_autospec(FeatureView, instance=True)
        fv.name, fv.version = name, version
        labels = self.view_meta[(name, version)]["labels"]
        pk = self.group_meta[self.views[(name, version)]]["primary_key"]

        def create_training_data(**kwargs):
            tds = self.training_data.setdefault((name, version), {})
            td_version = len(tds) + 1
            tds[td_version] = self.groups[self.views[(name, version)]].copy()  # an immutable snapshot
            return td_version, None

        def get_training_data(training_dataset_version, primary_key=False, **kwargs):
            frame = self.training_data[(name, version)][training_dataset_version]
            features = frame.drop(columns=labels if primary_key else [*labels, *pk])
            return features, frame[labels]

        fv.create_training_data.side_effect = create_training_data
        fv.get_training_data.side_effect = get_training_data
        return fv


@pytest.fixture()
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture()
def hops_settings(settings, tmp_path):
    """Hopsworks settings with a state DB of its own."""
    return settings.model_copy(
        update={
            "hopsworks_api_key": SecretStr("secret-key"),
            "database_url": f"sqlite:///{tmp_path / 'hops-state.db'}",
        }
    )


@pytest.fixture()
def store(cluster, hops_settings) -> HopsworksFeatureStore:
    login = create_autospec(hopsworks.login, side_effect=cluster.login)
    hops = hops_settings.model_copy(
        update={"hopsworks_project": "nfl_test", "hopsworks_host": "https://hops.example.com"}
    )
    return HopsworksFeatureStore.from_settings(hops, login=login)


def _splits(extra: int = 0) -> dict[str, pd.DataFrame]:
    def part(texts, labels):
        return pd.DataFrame({"text": texts, "label": labels, "norm": [t.lower() for t in texts]})

    train = ["Patriots win! #SB49", "Brady cheated", "game on tonight", "#Seahawks D is elite"]
    train += [f"extra tweet {i} about football" for i in range(extra)]
    return {
        "train": part(train, ["positive", "negative", "neutral", "positive", *["neutral"] * extra]),
        "val": part(["Goodell speaks"], ["neutral"]),
        "test": part(["deflategate again?!", "what a catch"], ["negative", "positive"]),
        "recent": part(["Brady cheated"], ["negative"]),
    }


def test_feature_group_versions_and_training_dataset_through_the_sdk(store, cluster) -> None:
    frame = build_feature_frame(_splits())
    fg = store.write_feature_group("hops_features", frame, data_version="data-a", description="test")
    assert (fg.backend, fg.version) == ("hopsworks", 1)
    assert fg.location == "hopsworks://hops.example.com/nfl_test/feature_groups/hops_features/v1"
    assert cluster.logins == [
        {"host": "hops.example.com", "port": 443, "project": "nfl_test", "api_key_value": "secret-key"}
    ]
    meta = cluster.group_meta[("hops_features", 1)]
    assert meta["primary_key"] == ["tweet_id", "split"] and meta["online_enabled"] is False
    pd.testing.assert_frame_equal(cluster.groups[("hops_features", 1)], frame)

    # same content -> same version, no second insert; new data -> next version
    assert store.write_feature_group("hops_features", frame, data_version="data-a").version == 1
    fg2 = store.write_feature_group(
        "hops_features", build_feature_frame(_splits(extra=2)), data_version="data-b"
    )
    assert fg2.version == 2 and set(cluster.groups) == {("hops_features", 1), ("hops_features", 2)}

    # a training dataset keeps our split (it travels as a column; primary key read back)
    td = store.create_training_dataset("hops_td", fg2)
    assert (td.version, td.feature_group_version, td.backend) == (1, 2, "hopsworks")
    assert cluster.views[("hops_td", 2)] == ("hops_features", 2)
    assert cluster.view_meta[("hops_td", 2)]["labels"] == ["label"]
    assert store.create_training_dataset("hops_td", fg2).version == 1  # made once per feature-group version
    parts = store.read_training_dataset("hops_td", 1)
    assert (
        {k: len(v) for k, v in parts.items()} == td.splits == {"train": 6, "val": 1, "test": 2, "recent": 1}
    )
    assert set(parts["test"]["label"]) == {"negative", "positive"}


def test_versions_continue_after_those_already_in_the_project(store, cluster) -> None:
    cluster._get_or_create_group("hops_existing", 4, primary_key=["tweet_id", "split"])
    fg = store.write_feature_group("hops_existing", build_feature_frame(_splits()), data_version="d")
    assert fg.version == 5


def test_a_failed_insert_records_nothing_and_the_retry_gets_the_same_version(store, cluster) -> None:
    frame = build_feature_frame(_splits())
    cluster.fail_next_insert = ConnectionError("connection reset by peer")
    with pytest.raises(ConnectionError):
        store.write_feature_group("hops_retry", frame, data_version="d")
    assert store.list_feature_groups("hops_retry") == []
    assert ("hops_retry", 1) not in cluster.groups  # the empty group was dropped again
    fg = store.write_feature_group("hops_retry", frame, data_version="d")  # what the task's retry does
    assert fg.version == 1 and len(cluster.groups[("hops_retry", 1)]) == len(frame)


def test_settings_select_hopsworks_and_the_secret_stays_out_of_metadata(
    hops_settings, cluster, monkeypatch
) -> None:
    monkeypatch.setattr(hopsworks, "login", create_autospec(hopsworks.login, side_effect=cluster.login))
    store = get_feature_store(hops_settings)
    fg = store.write_feature_group("hops_settings", build_feature_frame(_splits()), data_version="d")
    assert isinstance(store, HopsworksFeatureStore) and fg.version == 1
    assert cluster.logins[0]["host"] == "c.app.hopsworks.ai"
    assert "secret-key" not in repr(fg.as_dict()) and "secret-key" not in str(cluster.group_meta)


def test_the_adapter_uses_only_parameters_the_sdk_has() -> None:
    """Guards against SDK drift: the keyword arguments the adapter passes exist in the installed SDK."""
    import inspect

    used = {
        hopsworks.login: {"host", "port", "project", "api_key_value"},
        SdkFeatureStore.get_or_create_feature_group: {
            "name",
            "version",
            "description",
            "primary_key",
            "online_enabled",
            "statistics_config",
        },
        SdkFeatureStore.get_or_create_feature_view: {"name", "version", "query", "labels", "description"},
        FeatureGroup.insert: {"features", "write_options"},
        FeatureView.create_training_data: {"description", "data_format", "write_options"},
        FeatureView.get_training_data: {"training_dataset_version", "primary_key"},
    }
    for func, names in used.items():
        assert names <= set(inspect.signature(func).parameters), func.__qualname__
    assert Path(hopsworks.__file__).exists()
