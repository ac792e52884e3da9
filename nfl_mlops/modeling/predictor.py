"""A loaded sentiment model: tokenizer + classifier, batched CPU/GPU inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nfl_mlops import LABELS


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    scores: dict[str, float]


def configure_torch_threads() -> None:
    """Use every core for intra-op work and keep inter-op small (2-core machines)."""
    import os

    import torch

    from nfl_mlops.settings import get_settings

    n = get_settings().torch_threads or (os.cpu_count() or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (they flood flow logs)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class SentimentModel:
    """Wraps a Hugging Face sequence classifier with the project's label order."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 64, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = name

    @classmethod
    def load(cls, path: str | Path, max_length: int | None = None, name: str | None = None) -> SentimentModel:
        """Load from a Hugging Face folder (safetensors only, no remote code)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        configure_torch_threads()
        quiet_transformers()
        path = str(path)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False
        )
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if labels != list(LABELS):
            raise ValueError(f"model at {path} has labels {labels}, expected {list(LABELS)}")
        if max_length is None:
            max_length = int(getattr(model.config, "nfl_mlops_max_length", 64))
        return cls(model, tokenizer, max_length=max_length, name=name)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (n x 3); texts are sorted by length so batches pad little."""
        import torch

        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.model.device)
                logits = self.model(**enc).logits
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[Prediction]:
        proba = self.predict_proba(texts, batch_size=batch_size)
        return [
            Prediction(
                label=LABELS[int(row.argmax())],
                confidence=float(row.max()),
                scores={name: float(p) for name, p in zip(LABELS, row, strict=True)},
            )
            for row in proba
        ]

    def warmup(self, sizes: Sequence[int] = (1, 8, 32)) -> None:
        """Run the shapes serving will see once, so first requests are not 10-50x slower."""
        sample = "Brady and the Patriots win the Super Bowl again, what a game #SB49"
        for n in sizes:
            self.predict_proba([sample] * n, batch_size=max(sizes))
