"""Training speed: the project's fine-tuning loop against a plain torch loop on the same rows (issue 12, item 5).

    .venv/bin/python bench/training.py               # about 4 min here; nothing else should run
    .venv/bin/python bench/training.py --steps 10 --rounds 1

Both train the packaged base model (MiniLM) for the same number of steps on the same rows of the packaged
corpus, with the same batch size, max_length, optimiser (AdamW) and learning rate, in this process, one
after the other, `--rounds` times interleaved (the median is reported). Only the training steps are
timed (model loading and saving are not):

- `project`: `nfl_mlops.modeling.train.fine_tune`, as the training flow calls it (length-bucketed batches,
  class-weighted loss, gradient clipping, warm-up schedule, loss logged every 10 steps).
- `plain`: the loop of the transformers course: a shuffled sampler, the tokenizer per batch with dynamic
  padding, forward, backward, `optimizer.step()`, `zero_grad()`.
- `plain (same batches)`: the plain loop over the project's length-bucketed batches: what the project's loop
  costs on top of a bare loop, with the padding saving taken out.

Goal: `project` >= 0.9x `plain`. Mixed precision (bf16/fp16 autocast) only acts on CUDA; on this CPU-only
machine every run is fp32 (`TrainParams.mixed_precision="auto"`).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def rows(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from nfl_mlops.data.corpus import clean_texts, load_corpus

    df = load_corpus().sample(n=n, random_state=seed)
    return clean_texts(df["text"]).tolist(), df["label"].tolist()


def plain_loop(
    texts: list[str], labels: list[str], steps: int, batch_size: int, lr: float, max_length: int, batches=None
) -> float:
    """Examples/s of a bare fine-tuning loop (loading excluded)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nfl_mlops import LABEL2ID, LABELS
    from nfl_mlops.modeling.base import resolve_base_model
    from nfl_mlops.modeling.predictor import configure_torch_threads
    from nfl_mlops.settings import get_settings

    configure_torch_threads()
    torch.manual_seed(0)
    source = resolve_base_model(get_settings().base_model)
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(LABELS)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    y = torch.tensor([LABEL2ID[label] for label in labels])
    if batches is None:
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(texts), generator=g)
        batches = [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    start = time.perf_counter()
    for idx in batches[:steps]:
        enc = tok(
            [texts[i] for i in idx.tolist()],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        loss = model(**enc, labels=y[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return min(steps, len(batches)) * batch_size / (time.perf_counter() - start)


def project_loop(
    texts: list[str], labels: list[str], steps: int, batch_size: int, lr: float, max_length: int
):
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.train import fine_tune
    from nfl_mlops.settings import get_settings

    n = len(texts)
    params = TrainParams(
        epochs=steps * batch_size / n, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=0
    )
    with tempfile.TemporaryDirectory() as out:
        r = fine_tune(texts, labels, params, Path(out), base_model=get_settings().base_model)
    return r.examples_per_second, r.precision


def project_batches(n_texts: list[str], batch_size: int) -> list:
    import torch

    from nfl_mlops.modeling.train import _length_bucketed_batches

    return _length_bucketed_batches([len(t) for t in n_texts], batch_size, torch.Generator().manual_seed(0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "training.json")
    a = p.parse_args(argv)
    lr = 1e-4
    texts, labels = rows(a.steps * a.batch_size)
    runs: dict[str, list[float]] = {"project": [], "plain": [], "plain (same batches)": []}
    precision = "no"
    same = project_batches(texts, a.batch_size)
    for r in range(a.rounds):
        eps, precision = project_loop(texts, labels, a.steps, a.batch_size, lr, a.max_length)
        runs["project"].append(eps)
        runs["plain"].append(plain_loop(texts, labels, a.steps, a.batch_size, lr, a.max_length))
        runs["plain (same batches)"].append(
            plain_loop(texts, labels, a.steps, a.batch_size, lr, a.max_length, batches=same)
        )
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f} ex/s" for k, v in runs.items()), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "steps": a.steps,
        "batch_size": a.batch_size,
        "max_length": a.max_length,
        "rounds": a.rounds,
        "mixed_precision": precision,
        "examples_per_s": {k: round(v, 1) for k, v in med.items()},
        "runs": runs,
        "project_vs_plain": round(med["project"] / med["plain"], 2),
        "project_vs_plain_same_batches": round(med["project"] / med["plain (same batches)"], 2),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
