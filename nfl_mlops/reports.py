"""Markdown summaries that flows publish as Prefect artifacts (pure functions)."""

from __future__ import annotations

from typing import Any

from nfl_mlops import LABELS


def _row(name: str, m: dict[str, Any]) -> str:
    f1 = m.get("f1", {})
    return (
        f"| {name} | {m.get('n', '')} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
        + " | ".join(f"{f1.get(x, 0.0):.3f}" for x in LABELS)
        + f" | {m.get('ece', float('nan')):.3f} |"
    )


def metrics_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = (
        "| model / set | n | accuracy | macro-F1 | " + " | ".join(f"F1 {x}" for x in LABELS) + " | ECE |\n"
        "|---|---|---|---|" + "---|" * len(LABELS) + "---|"
    )
    return "\n".join([head, *(_row(n, m) for n, m in rows)])


def training_markdown(candidate: Any) -> str:
    rows = [(f"fine-tuned / {k}", v) for k, v in candidate.metrics.items()]
    rows += [(f"TF-IDF baseline / {k}", v) for k, v in candidate.baseline_metrics.items()]
    lin = candidate.lineage
    return "\n".join(
        [
            f"# Training run: {candidate.model_name}",
            "",
            f"Base model `{lin.get('base_model')}`, dataset `{lin.get('dataset_version')}` "
            f"(sizes {lin.get('dataset_sizes')}), {lin.get('train_seconds')} s of training.",
            "",
            metrics_table(rows),
            "",
            f"Tracker run `{lin.get('tracker_run_id')}`; candidate folder `{candidate.model_dir}`.",
        ]
    )


def runtimes_lines(record: dict[str, Any] | None) -> list[str]:
    """The version's inference runtimes and the checks that admitted (or did not admit) each."""
    if not record:
        return []
    lines = [
        "",
        "Runtimes (checked on the test split; `MLOPS_INFERENCE_BACKEND=auto` serves the fastest admitted):",
        "",
    ]
    for name in ("torch", "onnx", "onnx-int8"):
        r = record.get(name) or {}
        figures = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in r.items()
            if k not in ("admitted", "rule")
        )
        verdict = "admitted" if r.get("admitted") else "not admitted"
        lines.append(
            f"- **{name}**: {verdict}"
            + (f" ({figures})" if figures else "")
            + (f"; rule: {r['rule']}" if r.get("rule") else "")
        )
    return lines


def registration_markdown(result: Any, candidate: Any, champion_metrics: dict[str, Any]) -> str:
    """The registration gate: measured metrics, paired intervals, per-class floors, golden floor."""
    comps = getattr(result, "comparisons", {}) or {}
    measured = comps.get("candidate") or candidate.metrics
    gate = comps.get("gate") or {}
    rows = [(f"candidate / {k}", v) for k, v in measured.items() if isinstance(v, dict) and "accuracy" in v]
    rows += [(f"champion v{result.champion_version} / {k}", v) for k, v in champion_metrics.items()]
    verdict = "passed" if result.passed else "REJECTED"
    params = gate.get("params", {})
    metric = params.get("metric", "macro_f1")
    lines = [
        f"# Registration: {result.model_name} v{result.version} ({verdict})",
        "",
        "Measured by registration on the same rows (candidate and champion loaded from their folders):",
        "",
        metrics_table(rows),
        *runtimes_lines(measured.get("runtimes")),
    ]
    sets = gate.get("sets") or {}
    if sets:
        lines += [
            "",
            f"Gate on {metric} (margin {params.get('margin')}, class floor {params.get('min_class_f1')}, "
            f"{params.get('confidence', 0):.0%} paired bootstrap x{params.get('n_bootstrap')}, "
            f"recent improvement required: {gate.get('require_recent_improvement')}):",
            "",
            "| set | rule | n | candidate | champion / floor | difference [interval] | McNemar p | passed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, e in sets.items():
            iv = e.get("interval") or {}
            diff = f"{iv['diff']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]" if iv else ""
            other = e.get("champion") if e.get("rule") != "golden_floor" else e.get("floor")
            p = (e.get("mcnemar") or {}).get("p_value", "")
            lines.append(
                f"| {name} | {e.get('rule')} | {e.get('n')} | {e.get('candidate', '')} | "
                f"{'' if other is None else other} | {diff} | {p} | {e.get('passed')} |"
            )
        lines += [
            "",
            "Per-class F1 of the candidate (floor applies where support is enough):",
            "",
            "| set | " + " | ".join(LABELS) + " |",
            "|---|" + "---|" * len(LABELS),
        ]
        for name, e in sets.items():
            f1 = e.get("class_f1") or {}
            cells = [
                (f"{f1[x]['f1']:.3f} (n={f1[x]['support']})" + (" FAIL" if f1[x]["passed"] is False else ""))
                if x in f1
                else ""
                for x in LABELS
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    reported = gate.get("reported_by_candidate") or {}
    if reported:
        lines += [
            "",
            f"Reported by the candidate itself ({metric}, not used for the decision): "
            + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in reported.items()),
        ]
    lines += ["", "Gate:", *(f"- {r}" for r in result.reasons)]
    return "\n".join(lines)


def model_status_markdown(
    model_name: str,
    versions: list[Any],
    rollout: Any | None,
    episodes: list[Any],
    verdicts: list[Any],
    at: Any = None,
) -> str:
    """One view of a model's state (the `model-status-<model>` artifact, refreshed by every registration,
    rollout and monitoring run): versions with metrics and aliases, the live traffic split, the open drift
    episode, the last monitoring verdicts.

    Args:
        versions: registry `VersionInfo`s (oldest first); rollout: the active `RolloutInfo` or None;
        episodes: open `EpisodeInfo`s; verdicts: recent `MonitoringRun` rows (newest first).
    """
    champion = next((v.version for v in versions if "champion" in (v.aliases or [])), None)
    lines = [
        f"# {model_name}: champion {f'v{champion}' if champion else 'none'}"
        + (f" (as of {at:%Y-%m-%d %H:%M} UTC)" if at is not None else ""),
        "",
        "## Versions",
        "",
        "| version | status | aliases | test macro-F1 | recent macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for v in reversed(versions[-10:]):
        m = v.metrics or {}
        f1 = [
            f"{(m.get(k) or {}).get('macro_f1', float('nan')):.3f}" if m.get(k) else "-"
            for k in ("test", "recent")
        ]
        lines.append(
            f"| v{v.version} | {v.status} | {', '.join(v.aliases or []) or '-'} | {f1[0]} | {f1[1]} |"
        )
    lines += ["", "## Traffic", ""]
    if rollout is None:
        lines.append("Nothing serves (no active rollout).")
    else:
        phase = (rollout.config or {}).get("phase", rollout.status)
        lines.append(f"Rollout {rollout.id} ({rollout.strategy}, {phase}):")
        lines.append("")
        for arm, spec in (rollout.arms or {}).items():
            share = "shadow copy" if spec.get("shadow") else f"{float(spec.get('weight', 0.0)):g} %"
            lines.append(f"- {arm}: v{spec.get('version')}, {share}")
    lines += ["", "## Drift episode", ""]
    if not episodes:
        lines.append("None open.")
    for e in episodes:
        job = (
            f"retraining job {e.retraining_job_id}"
            if e.retraining_job_id
            else f"{e.attempts} failed attempt(s)"
        )
        lines.append(f"- {e.id}: v{e.model_version} {e.kind} since {e.opened_at:%Y-%m-%d %H:%M} ({job})")
    lines += [
        "",
        "## Last monitoring verdicts",
        "",
        "| at | version | drift share | drift | degraded |",
        "|---|---|---|---|---|",
    ]
    for r in verdicts[:5]:
        degraded = bool((r.summary or {}).get("performance_degraded"))
        lines.append(
            f"| {r.created_at:%Y-%m-%d %H:%M} | v{r.model_version} | {r.drift_share:.2f} | "
            f"{'yes' if r.drift_detected else 'no'} | {'yes' if degraded else 'no'} |"
        )
    if not verdicts:
        lines.append("| - | - | - | - | - |")
    return "\n".join(lines)
