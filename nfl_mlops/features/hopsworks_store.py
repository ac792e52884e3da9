"""The Hopsworks backend of the feature store (feature groups, feature views, training datasets).

Written against the `hopsworks` SDK (tested with 5.2.1; install with the `hopsworks` extra). The
SDK is imported only here, only when a store is used, so the project runs without it.

Mapping:
- a feature-group version      -> a Hopsworks feature group `name`/`version` (offline, primary key
                                  `tweet_id`, `split`), rows written with `FeatureGroup.insert`;
- a training dataset           -> a feature view `name`/`<feature-group version>` over
                                  `fg.select_all()` with label `label`, and a training dataset
                                  made by `FeatureView.create_training_data` (Hopsworks numbers its
                                  versions and keeps them immutable); our split travels as the
                                  `split` column, so Hopsworks never re-splits the rows.

Metadata rows go to the state DB as for the local store (backend `hopsworks`), so lineage is
answered without a call to the cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from nfl_mlops.features.store import (
    PRIMARY_KEY,
    SPLIT_ORDER,
    FeatureGroupVersion,
    FeatureStore,
    FeatureStoreError,
)

LABEL_COLUMN = "label"


def _sdk_login() -> Callable[..., Any]:
    try:
        import hopsworks
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise FeatureStoreError(
            "HOPSWORKS_API_KEY is set but the `hopsworks` package is not installed "
            "(pip install 'nfl-mlops[hopsworks]')"
        ) from exc
    return hopsworks.login


class HopsworksFeatureStore(FeatureStore):
    """Feature groups and training datasets in a Hopsworks project."""

    backend = "hopsworks"

    def __init__(
        self,
        host: str,
        project: str,
        api_key: str,
        db_url: str | None = None,
        login: Callable[..., Any] | None = None,
        port: int = 443,
    ) -> None:
        """
        Args:
            host: Hopsworks host name or URL (`https://c.app.hopsworks.ai` -> `c.app.hopsworks.ai`).
            login: the connection entry point, `hopsworks.login` by default (tests pass a fake).
        """
        super().__init__(db_url)
        self.host = host.removeprefix("https://").removeprefix("http://").rstrip("/")
        self.project_name = project
        self._api_key = api_key
        self._login = login
        self.port = port
        self._fs: Any = None

    @classmethod
    def from_settings(cls, settings: Any, login: Callable[..., Any] | None = None) -> HopsworksFeatureStore:
        if settings.hopsworks_api_key is None:
            raise FeatureStoreError("HOPSWORKS_API_KEY is not set")
        return cls(
            settings.hopsworks_host,
            settings.hopsworks_project,
            settings.hopsworks_api_key.get_secret_value(),
            settings.db_url,
            login=login,
        )

    @property
    def feature_store(self) -> Any:
        """The project's feature store handle (one login per store object)."""
        if self._fs is None:
            login = self._login or _sdk_login()
            project = login(
                host=self.host, port=self.port, project=self.project_name, api_key_value=self._api_key
            )
            self._fs = project.get_feature_store()
        return self._fs

    def location(self, kind: str, name: str, version: int) -> str:
        return f"hopsworks://{self.host}/{self.project_name}/{kind}/{name}/v{version}"

    # Feature groups
    def _next_remote_version(self, name: str) -> int:
        try:
            groups = self.feature_store.get_feature_groups(name=name) or []
        except Exception as exc:  # the SDK raises when no version exists yet
            if _is_not_found(exc):
                return 0
            raise
        return max((int(g.version) for g in groups), default=0)

    def _write_group(self, name: str, version: int, frame: pd.DataFrame, description: str) -> str:
        fg = self.feature_store.get_or_create_feature_group(
            name=name,
            version=version,
            description=description or f"Tweet text features ({name})",
            primary_key=list(PRIMARY_KEY),
            online_enabled=False,
            statistics_config={"enabled": True, "histograms": True, "correlations": False},
        )
        try:
            fg.insert(frame, write_options={"wait_for_job": True})
        except Exception:
            # Drop the empty group again so a retry gets this version number; if the cluster is
            # unreachable the empty group stays and the retry takes the next number.
            try:
                fg.delete()
            except Exception:  # noqa: BLE001 - best effort, the insert error is the one to report
                pass
            raise
        return self.location("feature_groups", name, version)

    def read_feature_group(self, name: str, version: int) -> pd.DataFrame:
        fg = self.feature_store.get_feature_group(name=name, version=version)
        if fg is None:
            raise FeatureStoreError(f"feature group {name} v{version} not found in Hopsworks")
        return fg.read(dataframe_type="pandas")

    # Training datasets
    def _feature_view(self, name: str, fg: FeatureGroupVersion) -> Any:
        group = self.feature_store.get_feature_group(name=fg.name, version=fg.version)
        if group is None:
            raise FeatureStoreError(f"feature group {fg.name} v{fg.version} not found in Hopsworks")
        return self.feature_store.get_or_create_feature_view(
            name=name,
            version=fg.version,
            query=group.select_all(),
            labels=[LABEL_COLUMN],
            description=f"{fg.name} v{fg.version} (data {fg.data_version}) for sentiment training",
        )

    def _snapshot(self, name: str, fg: FeatureGroupVersion, version: int | None) -> tuple[int, str, str]:
        view = self._feature_view(name, fg)
        td_version, _job = view.create_training_data(
            description=f"{fg.name} v{fg.version}, splits {fg.split_counts}",
            data_format="parquet",
            write_options={"wait_for_job": True},
        )
        return int(td_version), self.location("training_datasets", name, int(td_version)), fg.content_hash

    def read_training_dataset(self, name: str, version: int) -> dict[str, pd.DataFrame]:
        row = self.get_training_dataset(name, version)
        view = self.feature_store.get_feature_view(name=name, version=row.feature_group_version)
        features, labels = view.get_training_data(training_dataset_version=version, primary_key=True)
        frame = features.copy()
        if labels is not None:
            frame[LABEL_COLUMN] = (
                labels[LABEL_COLUMN].to_numpy() if isinstance(labels, pd.DataFrame) else labels
            )
        return {
            split: frame[frame["split"] == split].reset_index(drop=True)
            for split in SPLIT_ORDER
            if (frame["split"] == split).any()
        }


def _is_not_found(exc: Exception) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "404" in text
