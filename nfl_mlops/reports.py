"""Markdown summaries that flows publish as Prefect artifacts (pure functions)."""

from __future__ import annotations

from typing import Any

from nfl_mlops import LABELS


def _row(name: str, m: dict[str, Any]) -> str:
    f1 = m.get("f1", {})
    return (f"| {name} | {m.get('n', '')} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
            + " | ".join(f"{f1.get(x, 0.0):.3f}" for x in LABELS) + f" | {m.get('ece', float('nan')):.3f} |")


def metrics_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = ("| model / set | n | accuracy | macro-F1 | " + " | ".join(f"F1 {x}" for x in LABELS) + " | ECE |\n"
            "|---|---|---|---|" + "---|" * len(LABELS) + "---|")
    return "\n".join([head, *(_row(n, m) for n, m in rows)])


def training_markdown(candidate: Any) -> str:
    rows = [(f"fine-tuned / {k}", v) for k, v in candidate.metrics.items()]
    rows += [(f"TF-IDF baseline / {k}", v) for k, v in candidate.baseline_metrics.items()]
    lin = candidate.lineage
    return "\n".join([
        f"# Training run: {candidate.model_name}",
        "",
        f"Base model `{lin.get('base_model')}`, dataset `{lin.get('dataset_version')}` "
        f"(sizes {lin.get('dataset_sizes')}), {lin.get('train_seconds')} s of training.",
        "",
        metrics_table(rows),
        "",
        f"Tracker run `{lin.get('tracker_run_id')}`; candidate folder `{candidate.model_dir}`.",
    ])


def registration_markdown(result: Any, candidate: Any, champion_metrics: dict[str, Any]) -> str:
    rows = [(f"candidate / {k}", v) for k, v in candidate.metrics.items()]
    rows += [(f"champion v{result.champion_version} / {k}", v) for k, v in champion_metrics.items()]
    verdict = "passed" if result.passed else "REJECTED"
    return "\n".join([
        f"# Registration: {result.model_name} v{result.version} ({verdict})",
        "",
        metrics_table(rows),
        "",
        "Gate:",
        *(f"- {r}" for r in result.reasons),
    ])
