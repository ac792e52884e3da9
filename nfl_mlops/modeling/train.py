"""Fine-tuning a transformers encoder for 3-class tweet sentiment (plain torch loop)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nfl_mlops import LABEL2ID, LABELS
from nfl_mlops.modeling.base import resolve_base_model
from nfl_mlops.modeling.params import TrainParams
from nfl_mlops.modeling.predictor import configure_torch_threads, quiet_transformers


@dataclass
class TrainResult:
    """What fine-tuning produced: the saved folder and how training went."""

    output_dir: Path
    base_model: str
    steps: int
    seconds: float
    examples_per_second: float
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else math.nan


def _length_bucketed_batches(lengths: Sequence[int], batch_size: int, generator) -> list:
    """Shuffled batches of similar-length texts: less padding, same randomness over an epoch.

    Rows are shuffled, cut into chunks of 20 batches, sorted by length inside each chunk, batched,
    and the batches shuffled again.
    """
    import torch

    perm = torch.randperm(len(lengths), generator=generator)
    chunk = batch_size * 20
    batches: list[torch.Tensor] = []
    for c in range(0, len(perm), chunk):
        part = perm[c : c + chunk]
        part = part[torch.argsort(torch.tensor([lengths[i] for i in part.tolist()]), stable=True)]
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order.tolist()]


def class_weights(label_ids: Sequence[int], n_classes: int) -> list[float]:
    """Balanced class weights, n / (n_classes x count); a class absent from the rows gets weight 1."""
    counts = [0] * n_classes
    for i in label_ids:
        counts[i] += 1
    n = len(label_ids)
    return [n / (n_classes * c) if c else 1.0 for c in counts]


def fine_tune(
    texts: Sequence[str],
    labels: Sequence[str],
    params: TrainParams,
    output_dir: Path,
    base_model: str,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fine-tune `base_model` on (texts, labels) and save it to `output_dir` in HF layout.

    Args:
        on_log: called every `params.log_every` steps with (step, {"train_loss", "learning_rate", "epoch"}).
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    if len(texts) != len(labels) or not texts:
        raise ValueError(
            f"need equal, non-zero numbers of texts and labels (got {len(texts)}, {len(labels)})"
        )
    configure_torch_threads()
    quiet_transformers()
    torch.manual_seed(params.seed)
    source = resolve_base_model(base_model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=dict(LABEL2ID),
        use_safetensors=True,
        trust_remote_code=False,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()

    y = torch.tensor([LABEL2ID[label] for label in labels])
    n = len(texts)
    weight = class_weights(y.tolist(), len(LABELS)) if params.class_weighting == "balanced" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weight is None else torch.tensor(weight).to(device))
    steps_per_epoch = math.ceil(n / params.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * params.epochs))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [p for k, p in model.named_parameters() if not any(nd in k for nd in no_decay)],
            "weight_decay": params.weight_decay,
        },
        {
            "params": [p for k, p in model.named_parameters() if any(nd in k for nd in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(groups, lr=params.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(params.warmup_ratio * total_steps), total_steps
    )
    generator = torch.Generator().manual_seed(params.seed)

    losses: list[tuple[int, float]] = []
    running, seen_since_log = 0.0, 0
    step = 0
    start = time.perf_counter()
    lengths = [len(t) for t in texts]
    while step < total_steps:
        for idx in _length_bucketed_batches(lengths, params.batch_size, generator):
            if step >= total_steps:
                break
            enc = tokenizer(
                [texts[i] for i in idx.tolist()],
                padding=True,
                truncation=True,
                max_length=params.max_length,
                return_tensors="pt",
            ).to(device)
            out = model(**enc)
            loss_value = loss_fn(out.logits, y[idx].to(device))
            loss_value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running += float(loss_value.detach())
            seen_since_log += 1
            if step % params.log_every == 0 or step == total_steps:
                loss = running / seen_since_log
                losses.append((step, loss))
                if on_log is not None:
                    on_log(
                        step,
                        {
                            "train_loss": loss,
                            "learning_rate": scheduler.get_last_lr()[0],
                            "epoch": step / steps_per_epoch,
                        },
                    )
                running, seen_since_log = 0.0, 0
    seconds = time.perf_counter() - start

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.config.nfl_mlops_max_length = params.max_length
    model.eval().to("cpu").save_pretrained(output_dir, safe_serialization=True)
    tokenizer.save_pretrained(output_dir)
    return TrainResult(
        output_dir=output_dir,
        base_model=base_model,
        steps=step,
        seconds=seconds,
        examples_per_second=step * params.batch_size / seconds if seconds else 0.0,
        losses=losses,
    )
