"""Labelling under a budget: how much of the gain of labelling every served NFL tweet a budget buys (issue 13).

    .venv/bin/python bench/labeling.py                       # 3 seeds x budgets 50, 100, 200, 400 (about 40 min on a quiet machine)
    .venv/bin/python bench/labeling.py --seeds 1 --budgets 100 --general-rows 300   # a smoke run

The demo's story, measured: v1 is MiniLM fine-tuned on `--general-rows` tweets of other sources (1 epoch,
the demo's recipe); `--pool` NFL tweets are served (the demo sends 1,200); a retraining adds the labelled
ones to v1's rows and trains again from the base model, as the retraining flow does. Which tweets get
labelled:

- **selected**: `nfl_mlops.monitoring.labeling.select_diverse_uncertain`, what monitoring queues: v1's
  margin over the pool, k-center on the base encoder's embeddings among the `POOL_FACTOR x budget` most
  uncertain, near-duplicates skipped;
- **covered**: the same with `coverage_share` (`--coverage-share`, 0.5): that share of the budget by
  k-center over every pool tweet, after the uncertain picks (coverage when v1's margins carry little);
- **typical**: `select_typical`, TypiClust (Hacohen et al. 2022): k-means on the base encoder's embeddings
  into `budget` clusters, the most typical tweet (densest neighbourhood) of each; no margins;
- **random**: a seeded uniform sample of the same size;
- **METHOD-xK** (e.g. `selected-x5`): METHOD's picks, each repeated K times in the training rows (the recipe
  question: a few hundred new-domain labels beside thousands of general rows are otherwise swamped);
- **all** (with `--all-repeat K`: **all-xK**): every tweet of the pool labelled, each repeated K times; a
  METHOD-xK budget's share of the gain is measured against all-xK when it was run (the same recipe).

Each is scored by macro-F1 on `--test` held-out NFL tweets (none in the pool), per training seed. Gain =
macro-F1 minus v1's; the goal: with <= 300 labels at least 90 % of the gain of labelling all, and selected
better than random at every budget. Results (resumable: finished runs are kept) in
bench/results/labeling.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))


def data(general_rows: int, pool: int, test: int) -> dict[str, Any]:
    from nfl_mlops.data import load_corpus, prepare, select

    corpus = prepare(load_corpus())
    general = select(corpus, topics_exclude=["nfl"], max_rows=general_rows, seed=42)
    nfl = select(corpus, topics_include=["nfl"], seed=42)
    served = select(nfl, max_rows=pool, seed=7)  # the demo's traffic sample
    rest = nfl[~nfl["norm"].isin(set(served["norm"]))]
    held_out = select(rest, max_rows=test, seed=13)
    return {"general": general, "pool": served, "test": held_out}


def train_and_score(
    texts: list[str], labels: list[str], test: Any, seed: int, epochs: float
) -> tuple[float, Any, float]:
    """Macro-F1 on the NFL test rows of a model trained on (texts, labels); the model; seconds."""
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.settings import get_settings

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        fine_tune(
            texts,
            labels,
            TrainParams(epochs=epochs, seed=seed),
            Path(tmp) / "model",
            base_model=get_settings().base_model,
        )
        model = SentimentModel.load(Path(tmp) / "model")
        proba = model.predict_proba(test["text"].tolist())
    f1 = float(evaluate(test["label"].tolist(), proba).as_dict()["macro_f1"])
    return f1, model, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--general-rows", type=int, default=1500)
    parser.add_argument("--pool", type=int, default=1200)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--methods", nargs="+", default=["selected", "covered", "random"])
    parser.add_argument("--coverage-share", type=float, default=0.5)
    parser.add_argument("--all-repeat", type=int, default=1, help="repeat of the labels of 'all' (all-xK)")
    parser.add_argument("--out", type=Path, default=RESULTS / "labeling.json")
    args = parser.parse_args()

    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.monitoring.embeddings import get_encoder
    from nfl_mlops.monitoring.labeling import select_diverse_uncertain, select_typical
    from nfl_mlops.settings import get_settings

    # what the runs depend on (more seeds or budgets later reuse the finished runs)
    config = {k: v for k, v in vars(args).items() if k in ("general_rows", "pool", "test", "epochs")}
    done: dict[str, Any] = {}
    if args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("config") == config:
            done = previous.get("runs", {})
    d = data(args.general_rows, args.pool, args.test)
    general_x, general_y = d["general"]["text"].tolist(), d["general"]["label"].tolist()
    pool_x, pool_y = d["pool"]["text"].tolist(), d["pool"]["label"].tolist()

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": config, "runs": done, "summary": summary(done)}, indent=1))

    # v1 (and, from it, the selection: margins of the served version, embeddings of the base encoder)
    with tempfile.TemporaryDirectory() as tmp:
        from nfl_mlops.modeling.metrics import evaluate
        from nfl_mlops.modeling.params import TrainParams
        from nfl_mlops.modeling.train import fine_tune

        t0 = time.perf_counter()
        fine_tune(
            general_x,
            general_y,
            TrainParams(epochs=args.epochs, seed=0),
            Path(tmp) / "v1",
            base_model=get_settings().base_model,
        )
        v1 = SentimentModel.load(Path(tmp) / "v1")
        pool_proba = v1.predict_proba(pool_x)
        if "v1" not in done:
            f1 = float(
                evaluate(d["test"]["label"].tolist(), v1.predict_proba(d["test"]["text"].tolist())).macro_f1
            )
            done["v1"] = {"macro_f1": f1, "seconds": round(time.perf_counter() - t0, 1)}
            save()
    t0 = time.perf_counter()
    embeddings = get_encoder(get_settings().base_model).encode(pool_x)
    selection_s = time.perf_counter() - t0
    print(f"v1 NFL macro-F1 {done['v1']['macro_f1']:.3f}; pool embedded in {selection_s:.1f} s", flush=True)

    for seed in range(args.seeds):
        for budget in sorted(args.budgets):
            for method in args.methods:
                key = f"{method}/{budget}/{seed}"
                if key in done:
                    continue
                base_method, _, times = method.partition("-x")
                repeat = int(times) if times else 1
                if base_method == "typical":
                    t0 = time.perf_counter()
                    picked = select_typical(pool_x, pool_proba, embeddings, budget).picked
                    pick_s = time.perf_counter() - t0
                elif base_method in ("selected", "covered"):
                    t0 = time.perf_counter()
                    share = args.coverage_share if base_method == "covered" else 0.0
                    picked = select_diverse_uncertain(
                        pool_x, pool_proba, embeddings, budget, coverage_share=share
                    ).picked
                    pick_s = time.perf_counter() - t0
                else:
                    picked = np.random.default_rng(seed).choice(len(pool_x), budget, replace=False).tolist()
                    pick_s = 0.0
                xs = general_x + [pool_x[i] for i in picked] * repeat
                ys = general_y + [pool_y[i] for i in picked] * repeat
                f1, _, seconds = train_and_score(xs, ys, d["test"], seed, args.epochs)
                mix = {label: sum(pool_y[i] == label for i in picked) for label in sorted(set(pool_y))}
                done[key] = {
                    "macro_f1": f1,
                    "labels": len(picked),
                    "class_mix": mix,
                    "seconds": round(seconds, 1),
                }
                if base_method != "random":
                    done[key]["selection_seconds"] = round(pick_s, 3)
                print(key, f"macro-F1 {f1:.3f}", mix, f"{seconds:.0f} s", flush=True)
                save()
        all_name = f"all-x{args.all_repeat}" if args.all_repeat > 1 else "all"
        key = f"{all_name}/{len(pool_x)}/{seed}"
        if key not in done:
            f1, _, seconds = train_and_score(
                general_x + pool_x * args.all_repeat,
                general_y + pool_y * args.all_repeat,
                d["test"],
                seed,
                args.epochs,
            )
            done[key] = {"macro_f1": f1, "labels": len(pool_x), "seconds": round(seconds, 1)}
            print(key, f"macro-F1 {f1:.3f}", f"{seconds:.0f} s", flush=True)
            save()
    save()
    print(table(summary(done)))
    return 0


def summary(done: dict[str, Any]) -> dict[str, Any]:
    """Mean and spread per (method, budget); gain as a share of labelling all."""
    groups: dict[tuple[str, int], list[float]] = {}
    for key, run in done.items():
        if key == "v1":
            continue
        method, budget, _seed = key.split("/")
        groups.setdefault((method, int(budget)), []).append(run["macro_f1"])
    v1 = done.get("v1", {}).get("macro_f1")
    # labelling all, per recipe: "all" (each label once) and "all-xK" (each K times)
    all_runs: dict[str, list[float]] = {}
    for (method, _), values in groups.items():
        if method.split("-x")[0] == "all":
            all_runs.setdefault(method, []).extend(values)
    all_means = {method: statistics.mean(values) for method, values in all_runs.items()}
    out: dict[str, Any] = {"v1": v1, "all": all_means.get("all"), "all_by_recipe": all_means, "rows": []}
    for (method, budget), values in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mean = statistics.mean(values)
        _, _, times = method.partition("-x")
        all_mean = all_means.get(f"all-x{times}" if times else "all", all_means.get("all"))
        gain = (
            (mean - v1) / (all_mean - v1)
            if v1 is not None and all_mean is not None and all_mean != v1
            else None
        )
        out["rows"].append(
            {
                "method": method,
                "budget": budget,
                "n": len(values),
                "mean": round(mean, 4),
                "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "share_of_gain": round(gain, 3) if gain is not None else None,
            }
        )
    return out


def table(s: dict[str, Any]) -> str:
    lines = [
        f"v1 (no NFL labels): NFL macro-F1 {s['v1']:.3f}" if s.get("v1") is not None else "",
        "",
        "| labels | chosen by | NFL macro-F1, mean (sd) | min .. max | share of the gain of labelling all |",
        "|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        sd = f" ({r['sd']:.3f})" if r["sd"] is not None else ""
        gain = f"{r['share_of_gain']:.0%}" if r["share_of_gain"] is not None else "-"
        lines.append(
            f"| {r['budget']} | {r['method']} | {r['mean']:.3f}{sd} | {r['min']:.3f} .. {r['max']:.3f} | {gain} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
