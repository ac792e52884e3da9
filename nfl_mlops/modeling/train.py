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
    precision: str = "no"
    losses: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[dict[str, float]] = field(default_factory=list)
    """One entry per validation score: step, epoch, loss, accuracy, macro_f1 and f1_<label> (empty
    without a validation split)."""
    best_step: int | None = None
    """The step whose weights were saved (the best validation macro-F1); None without a validation split."""
    stopped_early: bool = False
    planned_steps: int = 0

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else math.nan

    @property
    def best_val_macro_f1(self) -> float | None:
        """The saved weights' validation macro-F1 (None without a validation split)."""
        scores = [p["macro_f1"] for p in self.val_curve if p["step"] == self.best_step]
        return scores[0] if scores else None


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


def eval_interval(eval_every: float, steps_per_epoch: int) -> int:
    """Steps between two validation scores: `eval_every` epochs, at least one step."""
    return max(1, round(eval_every * steps_per_epoch))


class EarlyStopping:
    """Keeps the best validation score and says when `patience` scores in a row failed to beat it.

    Only a strictly higher score counts as better, so a flat curve stops as early as a falling one.
    """

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.best: float = -math.inf
        self.bad = 0

    def update(self, score: float) -> bool:
        """Record `score`; True when it is the best so far (the caller keeps those weights)."""
        if score > self.best:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience


def _validate(
    model, tokenizer, texts: Sequence[str], labels: Sequence[str], max_length: int, device, autocast_dtype
) -> dict[str, float]:
    """Loss (unweighted cross-entropy) and metrics of `model` on the validation rows, in eval mode.

    Texts are scored in length-sorted batches (little padding); the model is put back in train mode.
    """
    import numpy as np
    import torch

    from nfl_mlops.modeling.metrics import evaluate

    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    proba = np.zeros((len(texts), len(LABELS)))
    total_loss = 0.0
    y = torch.tensor([LABEL2ID[label] for label in labels])
    with torch.inference_mode():
        for b in range(0, len(order), 128):
            idx = order[b : b + 128]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(**enc).logits.float()
            total_loss += float(torch.nn.functional.cross_entropy(logits, y[idx].to(device), reduction="sum"))
            proba[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
    model.train()
    m = evaluate(list(labels), proba)
    return {
        "loss": total_loss / len(texts),
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        **{f"f1_{k}": v for k, v in m.f1.items()},
    }


def progress_line(step: int, total: int, elapsed_s: float, batch_size: int, values: dict[str, float]) -> str:
    """One log line of a long fine-tuning: where it is, how fast it goes and when it ends."""
    rate = step * batch_size / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - step) * elapsed_s / step if step else float("nan")
    eta_text = f"{eta / 60:.0f} min" if eta >= 90 else f"{eta:.0f} s"
    return (
        f"step {step}/{total} ({step / total:.0%}), loss {values.get('train_loss', float('nan')):.4f}, "
        f"{rate:.1f} examples/s, about {eta_text} left"
    )


def resolve_precision(setting: str, device_type: str, bf16_supported: bool) -> str:
    """The autocast dtype ("bf16", "fp16") or "no" for `TrainParams.mixed_precision` on `device_type`."""
    if setting == "auto":
        if device_type != "cuda":
            return "no"
        return "bf16" if bf16_supported else "fp16"
    if setting == "fp16" and device_type != "cuda":
        raise ValueError("mixed_precision='fp16' needs a CUDA device; use 'auto', 'no' or 'bf16' on a CPU")
    if setting == "bf16" and device_type == "cuda" and not bf16_supported:
        raise ValueError("mixed_precision='bf16' is not supported by this GPU; use 'auto' or 'fp16'")
    return setting


def fine_tune(
    texts: Sequence[str],
    labels: Sequence[str],
    params: TrainParams,
    output_dir: Path,
    base_model: str,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    val_texts: Sequence[str] | None = None,
    val_labels: Sequence[str] | None = None,
) -> TrainResult:
    """Fine-tune `base_model` on (texts, labels) and save it to `output_dir` in HF layout.

    With validation rows, the model is scored on them every `params.eval_every` epochs; training stops
    after `params.early_stopping_patience` scores without a better macro-F1, and the weights of the best
    score are restored in memory before the one save (a folder never holds a half-trained checkpoint).
    Without them, it trains for `params.epochs` and saves the last weights.

    Args:
        on_log: called every `params.log_every` steps with (step, {"train_loss", "learning_rate", "epoch"})
            and at every validation score with (step, {"val/loss", "val/accuracy", "val/macro_f1",
            "val/f1_<label>", "epoch"}), so a tracker draws both curves on one step axis; last, once, with
            (step, {"val/best_macro_f1", "val/best_step"}): the score of the weights that were saved.
        val_texts, val_labels: the validation split (never the test split: it picks the checkpoint).
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
    val_texts = list(val_texts) if val_texts is not None else []
    val_labels = list(val_labels) if val_labels is not None else []
    if len(val_texts) != len(val_labels):
        raise ValueError(f"need as many validation labels as texts (got {len(val_labels)}, {len(val_texts)})")
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
    precision = resolve_precision(
        params.mixed_precision, device.type, device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    model.to(device).train()
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

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
    every = eval_interval(params.eval_every, steps_per_epoch)
    stopper = EarlyStopping(params.early_stopping_patience)
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int | None = None
    val_curve: list[dict[str, float]] = []

    losses: list[tuple[int, float]] = []
    running, seen_since_log = 0.0, 0
    step = 0
    stopped_early = False
    start = time.perf_counter()
    lengths = [len(t) for t in texts]
    while step < total_steps and not stopped_early:
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
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = model(**enc)
                loss_value = loss_fn(out.logits.float(), y[idx].to(device))
            scaler.scale(loss_value).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
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
            if val_texts and (step % every == 0 or step == total_steps):
                point = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    **_validate(
                        model, tokenizer, val_texts, val_labels, params.max_length, device, autocast_dtype
                    ),
                }
                val_curve.append(point)
                if on_log is not None:
                    on_log(
                        step,
                        {
                            **{f"val/{k}": v for k, v in point.items() if k not in ("step", "epoch")},
                            "epoch": point["epoch"],
                        },
                    )
                if stopper.update(point["macro_f1"]):
                    best_step = step
                    # a copy on the CPU: the next optimizer step must not change the kept weights
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                if stopper.should_stop:
                    stopped_early = step < total_steps
                    break
    seconds = time.perf_counter() - start
    if best_state is not None and best_step != step:
        model.load_state_dict(best_state)
    if on_log is not None and best_step is not None:  # the tracker's summary: the kept weights, not the last
        on_log(step, {"val/best_macro_f1": stopper.best, "val/best_step": float(best_step)})

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
        precision=precision,
        losses=losses,
        val_curve=val_curve,
        best_step=best_step,
        stopped_early=stopped_early,
        planned_steps=total_steps,
    )
