"""Repeated monitoring checks on simulated traffic from the corpus: false drift episodes and detection delay.

A reference model is trained on one half of one source (airline tweets); hourly batches of traffic are
drawn from the other, disjoint half (no drift) or, after a shift, from another source. Every hour a
check judges the last `window_hours` of traffic the way the monitoring flow does (the same signals,
Evidently's own stat tests per signal, the same `DriftResult` verdict over signal groups, observed
performance on the feedback share with the two-sample judgement) and the episode rule
(`episodes.simulate`) turns the sequence of verdicts into episodes.

Two shortcuts keep it to minutes on 2 cores, both stated in the output:

- the reference model is the TF-IDF + logistic-regression baseline (a stand-in for the fine-tuned
  model: monitoring only sees its logged labels and confidences);
- each signal is tested by calling Evidently's stat test function directly (the one `ValueDrift`
  runs) instead of building a `Report` per check; `check_against_evidently` asserts, on a window,
  that both give the same scores and verdicts. The embedding signal is left out (it needs the encoder
  on every check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from nfl_mlops.monitoring.drift import ColumnDrift, DriftResult
from nfl_mlops.monitoring.episodes import Check, EpisodeRule, simulate
from nfl_mlops.monitoring.monitor import MonitoringConfig
from nfl_mlops.monitoring.performance import baseline_noise, judge, observed_metrics
from nfl_mlops.monitoring.reference import (
    CATEGORICAL,
    NUMERICAL,
    ReferenceProfile,
    build_reference,
    monitoring_frame,
)

KEYWORD_SIGNALS = ("topic", "n_nfl_entities")
"""Signals that come from the project's own keyword rules (a shift they do not know is invisible to them)."""


@dataclass(frozen=True)
class Setup:
    """The reference (profile + test metrics) and the traffic pools (descriptor rows with true labels)."""

    reference: ReferenceProfile
    test_metrics: dict[str, float]
    pools: dict[str, pd.DataFrame]  # name -> monitoring columns + true_label
    noise: dict[str, np.ndarray] | None
    meta: dict[str, Any] = field(default_factory=dict)


def build_setup(
    source: str = "airline",
    shifts: Sequence[str] = ("nfl", "apple"),
    n_train: int = 2000,
    n_test: int = 400,
    seed: int = 0,
    corpus: pd.DataFrame | None = None,
) -> Setup:
    """Reference on one half of `source`, the other half as the no-drift pool, one pool per shift source."""
    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.modeling.baseline import TfidfBaseline
    from nfl_mlops.modeling.metrics import evaluate

    corpus = prepare(load_corpus()) if corpus is None else corpus
    rows = select(corpus, topics_include=[source]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    half_a, half_b = rows.iloc[: len(rows) // 2], rows.iloc[len(rows) // 2 :]
    train, test = half_a.iloc[:n_train], half_a.iloc[n_train : n_train + n_test]
    model = TfidfBaseline(seed=seed).fit(train["text"].tolist(), train["label"].tolist())
    proba = model.predict_proba(test["text"].tolist())
    reference = build_reference(
        train["text"].tolist(), test["text"].tolist(), proba, test["label"].tolist(), encoder=None
    )
    test_metrics = evaluate(test["label"].tolist(), proba).as_dict()

    def pool(frame: pd.DataFrame) -> pd.DataFrame:
        p = model.predict_proba(frame["text"].tolist())
        from nfl_mlops import LABELS

        out = monitoring_frame(
            frame["text"].tolist(), [LABELS[i] for i in p.argmax(axis=1)], p.max(axis=1), reference.vocabulary
        )
        out["true_label"] = frame["label"].to_numpy()
        return out.reset_index(drop=True)

    pools = {"none": pool(half_b)}
    for name in shifts:
        pools[name] = pool(select(corpus, topics_include=[name]))
    return Setup(
        reference=reference,
        test_metrics={k: float(test_metrics[k]) for k in ("accuracy", "macro_f1")},
        pools=pools,
        noise=baseline_noise(reference.frame, seed=seed),
        meta={
            "source": source,
            "n_half": len(half_b),
            "n_train": len(train),
            "n_test": len(test),
            "pool_sizes": {k: len(v) for k, v in pools.items()},
            "model": "tfidf-logreg baseline",
        },
    )


def _stat_tests() -> dict[str, Any]:
    from evidently.legacy.calculations.stattests import jensenshannon_stat_test, wasserstein_stat_test

    return {"wasserstein": wasserstein_stat_test, "jensenshannon": jensenshannon_stat_test}


def column_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    config: MonitoringConfig,
    tests: Mapping[str, Any] | None = None,
) -> list[ColumnDrift]:
    """Each signal's test as `ValueDrift` runs it (Evidently's stat test function, NaNs dropped)."""
    from evidently.legacy.core import ColumnType

    tests = tests or _stat_tests()
    out = []
    for kind, columns, ctype in (
        ("num", NUMERICAL, ColumnType.Numerical),
        ("cat", CATEGORICAL, ColumnType.Categorical),
    ):
        for c in columns:
            if c in config.exclude:
                continue
            method = cast(
                str,
                config.column_methods.get(c) or (config.num_method if kind == "num" else config.cat_method),
            )
            ref, cur = reference[c].dropna(), current[c].dropna()
            if kind == "cat":
                ref, cur = ref.astype(str), cur.astype(str)
            else:
                ref, cur = ref.astype(float), cur.astype(float)
            if ref.empty or cur.empty:
                continue
            res = tests[method](ref, cur, ctype, config.column_thresholds.get(c, config.column_threshold))
            out.append(
                ColumnDrift(
                    c, kind, method, float(res.drift_score), float(res.actual_threshold), bool(res.drifted)
                )
            )
    return out


def check_against_evidently(setup: Setup, window: pd.DataFrame, config: MonitoringConfig) -> float:
    """Largest score difference between `column_drift` and the Evidently Report of `detect_drift` on a window;
    raises AssertionError when any verdict differs."""
    from nfl_mlops.monitoring.monitor import descriptor_drift

    fast = {c.column: c for c in column_drift(setup.reference.frame, window, config)}
    slow = {
        c.column: c
        for c in descriptor_drift(
            setup.reference, window[list(NUMERICAL) + list(CATEGORICAL)], config
        ).columns
    }
    assert fast.keys() == slow.keys(), (fast.keys(), slow.keys())
    for name in fast:
        assert fast[name].drifted == slow[name].drifted, (name, fast[name], slow[name])
    return max(abs(fast[n].score - slow[n].score) for n in fast)


def judge_window(
    setup: Setup,
    window: pd.DataFrame,
    config: MonitoringConfig,
    feedback_share: float,
    rng: np.random.Generator,
    tests: Mapping[str, Any],
) -> dict[str, Any]:
    """One check: drift share over groups and over single signals, observed performance on the feedback share."""
    cols = column_drift(setup.reference.frame, window, config, tests)
    grouped = DriftResult.from_columns(
        cols, config.share_threshold, len(setup.reference.frame), len(window), groups=dict(config.groups)
    )
    single = DriftResult.from_columns(cols, config.share_threshold, len(setup.reference.frame), len(window))
    degraded = False
    n_lab = int(round(feedback_share * len(window)))
    if n_lab >= config.min_labelled:
        idx = rng.choice(len(window), n_lab, replace=False)
        obs = observed_metrics(
            window["true_label"].to_numpy()[idx],
            window["predicted_label"].to_numpy()[idx],
            n_boot=300,
            seed=int(rng.integers(1 << 30)),
        )
        for m in config.metrics:
            d2, _ = judge(
                obs[m],
                setup.test_metrics[m],
                config.max_drop,
                (setup.noise or {}).get(m),
                level=config.judge_level,
            )
            degraded |= d2
    return {
        "share": grouped.drift_share,
        "drift": grouped.dataset_drift,
        "share_single": single.drift_share,
        "drift_single": single.dataset_drift,
        "degraded": degraded,
        "drifted": [c.column for c in cols if c.drifted],
    }


def traffic_checks(
    setup: Setup,
    regimes: Sequence[tuple[str, int]],
    rate: int,
    window_hours: int,
    config: MonitoringConfig,
    feedback_share: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Hourly batches of `rate` rows per regime (pool name, hours), a check every hour once the window is full."""
    rng = np.random.default_rng(seed)
    tests = _stat_tests()
    batches: list[np.ndarray] = []
    names: list[str] = []
    for name, hours in regimes:
        for _ in range(hours):
            batches.append(rng.integers(0, len(setup.pools[name]), rate))
            names.append(name)
    out = []
    for h in range(window_hours, len(batches) + 1):
        parts = [setup.pools[names[i]].iloc[batches[i]] for i in range(h - window_hours, h)]
        window = pd.concat(parts, ignore_index=True)
        out.append({"hour": h, **judge_window(setup, window, config, feedback_share, rng, tests)})
    return out


def as_checks(
    rows: Sequence[Mapping[str, Any]], grouped: bool = True, with_performance: bool = True
) -> list[Check]:
    out = []
    for r in rows:
        drift = r["drift"] if grouped else r["drift_single"]
        share = r["share"] if grouped else r["share_single"]
        degraded = bool(r["degraded"]) and with_performance
        out.append(Check(alarm=bool(drift or degraded), drift_share=float(share), degraded=degraded))
    return out


def false_alarms(
    setup: Setup,
    days: int,
    runs: int,
    rate: int,
    window_hours: int,
    config: MonitoringConfig,
    feedback_share: float,
    rules: Mapping[str, tuple[EpisodeRule | None, bool]],
    seed: int = 0,
) -> dict[str, Any]:
    """No-drift traffic for `days` x `runs`: per rule, episodes (alarm events for rule None) per 30 days.

    Args:
        rules: name -> (rule, grouped); rule None = the old behaviour (every alarming check emits).
    """
    start = time.perf_counter()
    per_run = [
        traffic_checks(
            setup,
            [("none", days * 24 + window_hours - 1)],
            rate,
            window_hours,
            config,
            feedback_share,
            seed + 1000 * r,
        )
        for r in range(runs)
    ]
    n_checks = sum(len(r) for r in per_run)
    result: dict[str, Any] = {
        "days": days,
        "runs": runs,
        "checks": n_checks,
        "seconds": round(time.perf_counter() - start, 1),
        "alarm_rate_grouped": _mean([c["drift"] or c["degraded"] for r in per_run for c in r]),
        "alarm_rate_single": _mean([c["drift_single"] or c["degraded"] for r in per_run for c in r]),
        "degraded_rate": _mean([c["degraded"] for r in per_run for c in r]),
        "drifted_signal_rates": _signal_rates([c for r in per_run for c in r]),
        "rules": {},
    }
    for name, (rule, grouped) in rules.items():
        counts = []
        for r in per_run:
            checks = as_checks(r, grouped)
            counts.append(sum(c.alarm for c in checks) if rule is None else len(simulate(checks, rule)))
        result["rules"][name] = {
            "episodes": int(sum(counts)),
            "per_30_days": round(30.0 * sum(counts) / (days * runs), 3),
        }
    return result


def detection(
    setup: Setup,
    shift: str,
    runs: int,
    rate: int,
    window_hours: int,
    config: MonitoringConfig,
    feedback_share: float,
    rule: EpisodeRule,
    after_hours: int = 36,
    seed: int = 0,
) -> dict[str, Any]:
    """Checks from the shift on (a full no-drift window before it): checks until the first alarm and the episode."""
    first_alarm, opened = [], []
    for r in range(runs):
        rows = traffic_checks(
            setup,
            [("none", window_hours), (shift, after_hours)],
            rate,
            window_hours,
            config,
            feedback_share,
            seed + 77 + 1000 * r,
        )
        checks = as_checks(rows)
        before, after = checks[:1], checks[1:]  # checks[0]: the window just before the shift
        first_alarm.append(next((i + 1 for i, c in enumerate(after) if c.alarm), None))
        eps = [e for e in simulate(before + after, rule) if e[0] >= 1]
        opened.append(eps[0][0] if eps else None)
    return {
        "shift": shift,
        "excluded": list(config.exclude),
        "runs": runs,
        "first_alarm_checks": first_alarm,
        "episode_checks": opened,
        "median_episode_delay": _median(opened),
        "max_episode_delay": _max(opened),
    }


def _mean(values: Sequence[bool]) -> float:
    return round(float(np.mean(values)), 4) if len(values) else math.nan


def _signal_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    counts: dict[str, int] = {}
    for r in rows:
        for c in r["drifted"]:
            counts[c] = counts.get(c, 0) + 1
    return {k: round(v / len(rows), 4) for k, v in sorted(counts.items())} if rows else {}


def _median(values: Sequence[int | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if len(vals) == len(values) and vals else None


def _max(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) or not values else int(max(cast(Sequence[int], values)))
