"""Column-wise data drift of a current window against a reference profile, computed with Evidently.

Plain Python (no Prefect): the monitoring flow calls `detect_drift` and turns the `DriftResult` into
a Prefect event (`to_payload`) and a markdown artifact (`to_markdown`). Evidently is imported inside
`detect_drift` only (it takes seconds to import).

Per column, Evidently's `ValueDrift` metric picks a statistical test unless one is configured. With
its defaults the choice depends on the reference size (after NaNs are dropped) and on the number of
distinct values:

- reference <= 1000 rows: numeric with > 5 values -> `ks` (p-value); categorical, or numeric with
  <= 5 values -> `chisquare` (p-value), or `z` (p-value) when there are <= 2 values. Threshold 0.05;
  drift when p < threshold.
- reference > 1000 rows: numeric with > 5 values -> `wasserstein` (normed distance); categorical, or
  numeric with <= 5 values -> `jensenshannon` (distance). Threshold 0.1; drift when
  distance >= threshold.

The drift verdict of each column is read from the test that Evidently attaches to each `ValueDrift`
result (`Report(..., include_tests=True)`); the score, method and threshold from the same typed
result. The dataset verdict (`drift_share >= share_threshold`) is `DriftResult.from_columns`, a
pure function.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nfl_mlops.monitoring.thresholds import DRIFT_MAX_ROWS, DRIFT_SHARE_THRESHOLD

NUM = "num"
CAT = "cat"


@dataclass(frozen=True)
class DriftConfig:
    """How drift is tested and when a window counts as drifted.

    Args:
        share_threshold: dataset drift is declared when drifted columns / columns >= this.
        num_method: Evidently stat test id for numeric columns (e.g. "ks", "wasserstein", "psi");
            None lets Evidently choose by reference size (see the module docstring).
        cat_method: the same for categorical columns (e.g. "chisquare", "jensenshannon", "psi").
        per_column_threshold: one threshold applied to every column; None uses each test's default.
            Its meaning depends on the test: a p-value for ks/chisquare/z, a distance otherwise.
        max_rows: each side above this many rows is sampled down to it (seeded); None keeps all.
        min_rows: a current window (or a reference) with fewer rows raises ValueError.
        seed: random state of the sampling.
        column_methods: per-column stat test ids that override `num_method` / `cat_method`.
        column_thresholds: per-column thresholds that override `per_column_threshold`.
        groups: signal -> group; a group of correlated signals is one vote in the share (drifted when
            any of its signals drifted); a signal not listed is its own group. None: every signal votes.
    """

    share_threshold: float = DRIFT_SHARE_THRESHOLD
    num_method: str | None = None
    cat_method: str | None = None
    per_column_threshold: float | None = None
    max_rows: int | None = DRIFT_MAX_ROWS
    min_rows: int = 30
    seed: int = 0
    column_methods: Mapping[str, str] | None = None
    groups: Mapping[str, str] | None = None
    column_thresholds: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.share_threshold <= 1.0:
            raise ValueError(f"share_threshold must be in (0, 1], got {self.share_threshold}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows}")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows ({self.max_rows}) must be >= min_rows ({self.min_rows})")
        if self.per_column_threshold is not None and not self.per_column_threshold > 0:
            raise ValueError(f"per_column_threshold must be > 0, got {self.per_column_threshold}")


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column: the test Evidently ran, its score and threshold, and its verdict."""

    column: str
    kind: str  # "num", "cat", or "emb" (embedding drift, see embeddings.py)
    method: str  # Evidently stat test id, e.g. "wasserstein", "jensenshannon", "ks", "chisquare", "z"
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift check.

    `n_reference` / `n_current` are the rows compared (after sampling to `DriftConfig.max_rows`).
    `skipped_columns` holds columns with no value at all on one side (not tested, not counted).
    `snapshot` is the Evidently `Snapshot` (for an Evidently workspace); it is not part of the payload.
    `drift_share` is over signal groups (`group_drift`: group -> drifted), each group one vote.
    """

    columns: tuple[ColumnDrift, ...]
    drift_share: float
    drifted_columns: tuple[str, ...]
    dataset_drift: bool
    n_reference: int
    n_current: int
    share_threshold: float
    html_path: Path | None = None
    json_path: Path | None = None
    skipped_columns: tuple[str, ...] = ()
    snapshot: Any = field(default=None, repr=False, compare=False)
    group_of: tuple[tuple[str, str], ...] = ()  # (signal, group) for signals that share a group
    group_drift: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def from_columns(
        cls,
        columns: Sequence[ColumnDrift],
        share_threshold: float,
        n_reference: int,
        n_current: int,
        groups: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> DriftResult:
        """The dataset verdict: drift when the share of drifted signal groups reaches `share_threshold`."""
        cols = tuple(columns)
        drifted = tuple(c.column for c in cols if c.drifted)
        group_of = {c.column: (groups or {}).get(c.column, c.column) for c in cols}
        votes: dict[str, bool] = {}
        for c in cols:
            votes[group_of[c.column]] = votes.get(group_of[c.column], False) or c.drifted
        share = sum(votes.values()) / len(votes) if votes else 0.0
        return cls(
            columns=cols,
            drift_share=share,
            drifted_columns=drifted,
            dataset_drift=bool(cols) and share >= share_threshold,
            n_reference=n_reference,
            n_current=n_current,
            share_threshold=share_threshold,
            group_of=tuple((k, v) for k, v in group_of.items() if k != v),
            group_drift=tuple(votes.items()),
            **extra,
        )

    @property
    def drifted_groups(self) -> tuple[str, ...]:
        return tuple(g for g, d in self.group_drift if d)

    def with_signal(self, column: ColumnDrift) -> DriftResult:
        """This result with one more signal (e.g. embedding drift) counted in the share and the verdict."""
        if any(c.column == column.column for c in self.columns):
            raise ValueError(f"signal {column.column!r} is already in the result")
        return DriftResult.from_columns(
            (*self.columns, column),
            share_threshold=self.share_threshold,
            n_reference=self.n_reference,
            n_current=self.n_current,
            groups=dict(self.group_of),
            html_path=self.html_path,
            json_path=self.json_path,
            skipped_columns=self.skipped_columns,
            snapshot=self.snapshot,
        )

    def to_payload(self) -> dict:
        """JSON-serialisable summary, small enough for a Prefect event payload."""
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": _finite_or_none(self.drift_share),
            "share_threshold": self.share_threshold,
            "n_columns": len(self.columns),
            "n_drifted": len(self.drifted_columns),
            "drifted_columns": list(self.drifted_columns),
            "n_groups": len(self.group_drift),
            "drifted_groups": list(self.drifted_groups),
            "skipped_columns": list(self.skipped_columns),
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "columns": {
                c.column: {
                    "kind": c.kind,
                    "method": c.method,
                    "score": _finite_or_none(c.score),
                    "threshold": _finite_or_none(c.threshold),
                    "drifted": c.drifted,
                }
                for c in self.columns
            },
            "html_path": str(self.html_path) if self.html_path else None,
            "json_path": str(self.json_path) if self.json_path else None,
        }

    def to_markdown(self) -> str:
        """A markdown summary and per-column table, for a Prefect artifact."""
        verdict = "**Dataset drift detected**" if self.dataset_drift else "No dataset drift"
        lines = [
            f"{verdict}: {len(self.drifted_columns)} of {len(self.columns)} columns drifted "
            f"(share {self.drift_share:.2f}, threshold {self.share_threshold:.2f}); "
            f"reference {self.n_reference} rows, current {self.n_current} rows.",
            "",
            "| column | type | method | score | threshold | drifted |",
            "|---|---|---|---:|---:|---|",
        ]
        for c in self.columns:
            lines.append(
                f"| {_md(c.column)} | {c.kind} | {_md(c.method)} | {c.score:.4g} | {c.threshold:.4g} "
                f"| {'**yes**' if c.drifted else 'no'} |"
            )
        lines += [
            "",
            "p-value tests (ks, chisquare, z, ...) drift when score < threshold; "
            "distances (wasserstein, jensenshannon, psi, ...) when score >= threshold"
            + (
                "; the embedding domain classifier (ROC AUC) when score > threshold."
                if any(c.kind == "emb" for c in self.columns)
                else "."
            ),
        ]
        if self.skipped_columns:
            skipped = ", ".join(_md(c) for c in self.skipped_columns)
            lines += ["", f"Skipped (no values on one side): {skipped}"]
        if self.html_path:
            lines += ["", f"Evidently report: `{self.html_path}`"]
        return "\n".join(lines) + "\n"


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: Sequence[str],
    categorical: Sequence[str],
    config: DriftConfig = DriftConfig(),
    report_dir: Path | None = None,
    name: str = "drift",
    timestamp: datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, str] | None = None,
) -> DriftResult:
    """Test every listed column of `current` against `reference` for drift with Evidently.

    Args:
        reference: the reference profile (e.g. training-data descriptors and predictions).
        current: the monitored window; fewer than `config.min_rows` rows raises ValueError.
        numerical: numeric columns (int, float or bool).
        categorical: categorical columns (any values; compared as strings).
        config: tests, thresholds and sampling.
        report_dir: when given, `{name}.html` and `{name}.json` (Evidently's metrics + tests) go there.
        name: file stem of the saved report and name of the Evidently snapshot.
        timestamp: the snapshot's time (pass the flow run's scheduled time so backfills line up);
            None means now.
        tags, metadata: attached to the Evidently snapshot (what the workspace filters on).

    Returns:
        A `DriftResult`; columns that are entirely empty on one side are listed in `skipped_columns`.
    """
    numerical, categorical = list(numerical), list(categorical)
    _check_columns(reference, current, numerical, categorical)
    for label, frame in (("current", current), ("reference", reference)):
        if len(frame) < config.min_rows:
            raise ValueError(
                f"{label} data has {len(frame)} rows; drift detection needs at least {config.min_rows}"
            )

    ref = _prepare(_sample(reference, config), numerical, categorical)
    cur = _prepare(_sample(current, config), numerical, categorical)
    skipped = tuple(c for c in numerical + categorical if ref[c].isna().all() or cur[c].isna().all())
    num = [c for c in numerical if c not in skipped]
    cat = [c for c in categorical if c not in skipped]
    if not num and not cat:
        raise ValueError(f"no column has values on both sides to compare (all empty: {list(skipped)})")

    from evidently import DataDefinition, Dataset, Report
    from evidently.core.metric_types import SingleValue
    from evidently.legacy.tests.base_test import TestStatus  # the enum MetricTestResult.status uses
    from evidently.metrics import ValueDrift

    kinds = {c: NUM for c in num} | {c: CAT for c in cat}
    metrics = {
        c: ValueDrift(
            column=c,
            method=(config.column_methods or {}).get(c)
            or (config.num_method if kind == NUM else config.cat_method),
            threshold=(config.column_thresholds or {}).get(c, config.per_column_threshold),
        )
        for c, kind in kinds.items()
    }
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = Report(list(metrics.values()), include_tests=True)
    with warnings.catch_warnings():
        # Evidently's column statistics divide by zero-sized/constant columns and numpy warns; harmless.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur[num + cat], data_definition=definition),
            Dataset.from_pandas(ref[num + cat], data_definition=definition),
            name=name,
            timestamp=timestamp,
            metadata={"n_reference": str(len(ref)), "n_current": str(len(cur)), **(metadata or {})},
            tags=list(tags),
        )

    columns = []
    for column, metric in metrics.items():
        result = snapshot.metric_results[metric.metric_id]
        if not isinstance(result, SingleValue):
            raise TypeError(f"unexpected Evidently result for ValueDrift({column}): {type(result).__name__}")
        params = result.get_metric_value_location().metric.params
        statuses = {t.status for t in result.tests}
        if not statuses:
            raise RuntimeError(f"Evidently returned no drift test for column {column!r}")
        kind = kinds[column]
        columns.append(
            ColumnDrift(
                column=column,
                kind=kind,
                method=_stattest_id(str(params["method"]), kind),
                score=float(result.value),
                threshold=float(params["threshold"]),
                drifted=TestStatus.FAIL in statuses,
            )
        )

    html_path = json_path = None
    if report_dir is not None:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        html_path, json_path = report_dir / f"{name}.html", report_dir / f"{name}.json"
        # Evidently writes only when given a str: a Path (or a file object) is silently ignored.
        snapshot.save_html(str(html_path))
        snapshot.save_json(str(json_path))

    return DriftResult.from_columns(
        columns,
        share_threshold=config.share_threshold,
        n_reference=len(ref),
        n_current=len(cur),
        groups=config.groups,
        html_path=html_path,
        json_path=json_path,
        skipped_columns=skipped,
        snapshot=snapshot,
    )


def _check_columns(
    reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> None:
    wanted = numerical + categorical
    if not wanted:
        raise ValueError("no columns to test for drift")
    duplicated = sorted({c for c in wanted if wanted.count(c) > 1})
    if duplicated:
        raise ValueError(f"columns listed twice (or as both numerical and categorical): {duplicated}")
    for label, frame in (("reference", reference), ("current", current)):
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise ValueError(f"{label} data lacks columns {missing}")


def _sample(frame: pd.DataFrame, config: DriftConfig) -> pd.DataFrame:
    if config.max_rows is not None and len(frame) > config.max_rows:
        return frame.sample(n=config.max_rows, random_state=config.seed)
    return frame


def _prepare(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    """Numeric columns as float (inf -> NaN), categorical ones as str (NaN kept), fresh index."""
    out = {}
    for c in numerical:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            col = col.astype(float)
        if not pd.api.types.is_numeric_dtype(col):
            try:
                col = pd.to_numeric(col)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"numerical column {c!r} holds non-numeric values: {exc}") from exc
        out[c] = col.astype(float).replace([np.inf, -np.inf], np.nan).to_numpy()
    for c in categorical:
        col = frame[c]
        if pd.api.types.is_float_dtype(col) and (col.dropna() % 1 == 0).all():
            col = col.astype("Int64")  # ints that NaN made float: "1", not "1.0" (else spurious drift)
        missing = col.isna().to_numpy()
        values = col.astype(object).astype(str).to_numpy(dtype=object)
        values[missing] = np.nan
        out[c] = values
    return pd.DataFrame(out)


def _stattest_id(method: str, kind: str) -> str:
    """Evidently reports an auto-chosen test by display name ("K-S p_value"); map it back to its id ("ks")."""
    try:
        from evidently.legacy.calculations.stattests.registry import _registered_stat_tests
    except ImportError:  # private registry moved: keep Evidently's own string
        return method
    if method in _registered_stat_tests:
        return method
    # A low-cardinality numeric column gets a categorical test (chisquare, z), so match any column type.
    matches = [
        (column_type.value != kind, test_id)
        for test_id, by_type in _registered_stat_tests.items()
        for column_type, test in by_type.items()
        if test.display_name == method
    ]
    return min(matches)[1] if matches else method


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")
