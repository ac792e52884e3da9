"""Sentence embeddings from the base encoder, and embedding drift on samples of them.

The encoder is the classifier's base model without its head (MiniLM by default, resolved offline to
the packaged copy): mean-pooled last hidden states over the attention mask, L2-normalised, as
sentence-transformers' all-MiniLM-L6-v2 does. It embeds about 50-250 tweets/s on 2 CPU cores, so
monitoring never embeds a whole window: it embeds a seeded sample (`EMBEDDING_SAMPLE_SIZE`), and the
reference stores a sample of the same size from the version's test texts.

Drift is Evidently's embedding domain classifier (`ModelDriftMethod`): a logistic model trained to
tell reference from window embeddings, scored by ROC AUC on a held-out half. AUC 0.5 means the two
samples cannot be told apart. The sampling error is stated with every result (`null_se`, the standard
error of the AUC under no drift at the sizes used). Evidently's `EmbeddingsDrift` report metric is not
used: it always renders a t-SNE picture, which took 15-35 s for 1000 points on these machines.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from nfl_mlops.monitoring.thresholds import EMBEDDING_AUC_THRESHOLD, EMBEDDING_NULL_Z, EMBEDDING_SAMPLE_SIZE

log = logging.getLogger(__name__)

EMBEDDING_COLUMN = "embedding"
"""The signal name of embedding drift in drift results."""


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a transformers encoder.

    With `session` (an ONNX Runtime session of the same encoder, admitted by `runtimes.encoder_graph`'s
    parity check) the forward passes run there: about 2x faster on a CPU, and the same embeddings within
    1e-4, so references made with torch stay comparable."""

    def __init__(
        self, model: Any, tokenizer: Any, name: str, max_length: int = 64, session: Any = None
    ) -> None:
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.session = session
        self._dim = int(model.config.hidden_size) if model is not None else 0
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return "onnx" if self.session is not None else "torch"

    @classmethod
    def load(cls, name: str, max_length: int = 64, backend: str | None = None) -> SentenceEncoder:
        """Load the encoder `name` (a Hub id or folder; MiniLM resolves offline to the packaged copy).

        `backend`: "torch", or anything else (default: `MLOPS_INFERENCE_BACKEND`) for the ONNX graph when one
        is admitted (exported once per host under MLOPS_HOME/cache/onnx-encoders), torch otherwise."""
        from transformers import AutoModel, AutoTokenizer

        from nfl_mlops.modeling.base import resolve_base_model
        from nfl_mlops.modeling.predictor import configure_torch_threads, quiet_transformers
        from nfl_mlops.settings import get_settings

        quiet_transformers()
        settings = get_settings()
        backend = backend or settings.inference_backend
        source = resolve_base_model(name)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        if backend != "torch":
            try:
                import os

                from nfl_mlops.modeling.runtimes import encoder_graph, session

                graph = encoder_graph(
                    source, settings.mlops_home / "cache" / "onnx-encoders", max_length=max_length
                )
                if graph is not None:
                    sess = session(graph, threads=settings.torch_threads or (os.cpu_count() or 1))
                    enc = cls(None, tokenizer, name=name, max_length=max_length, session=sess)
                    enc._dim = int(sess.get_outputs()[0].shape[-1])
                    return enc
            except Exception as exc:  # the ONNX path is an optimisation: torch always works
                log.warning(
                    "encoder %s on ONNX Runtime failed (%s: %s); using torch", name, type(exc).__name__, exc
                )
        configure_torch_threads()
        model = AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=False)
        return cls(model, tokenizer, name=name, max_length=max_length)

    @property
    def dim(self) -> int:
        return self._dim

    def _embed(self, batch: list[str]) -> np.ndarray:
        if self.session is not None:
            from nfl_mlops.modeling.runtimes import _pooled

            enc = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
            )
            names = {i.name for i in self.session.get_inputs()}
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
            return _pooled(self.session.run(None, feed)[0], feed["attention_mask"])
        import torch

        model = self.model
        assert model is not None  # either a session or a torch model
        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(model.device)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings (n x dim, float32); texts are sorted by length so batches pad little."""
        texts = ["" if not isinstance(t, str) else t for t in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([len(t) for t in texts], kind="stable")
        with self._lock:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                out[idx] = self._embed([texts[i] for i in idx])
        return out


@lru_cache(maxsize=2)
def get_encoder(name: str) -> SentenceEncoder:
    """The process-wide encoder for `name` (loaded once: a few seconds; the first ONNX export on a host
    adds about 10 s)."""
    return SentenceEncoder.load(name)


def sample_indices(n: int, size: int = EMBEDDING_SAMPLE_SIZE, seed: int = 0) -> np.ndarray:
    """Sorted positions of a seeded sample of at most `size` out of `n` rows."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def auc_null_se(n_reference: int, n_current: int) -> float:
    """Standard error of a ROC AUC under no difference (Mann-Whitney), for the held-out half that is scored."""
    n1, n2 = max(n_reference // 2, 1), max(n_current // 2, 1)
    return math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))


@dataclass(frozen=True)
class EmbeddingDrift:
    """Embedding drift of a window sample against the reference sample.

    `score` is the domain classifier's ROC AUC; `null_se` its standard error under no drift at these
    sample sizes (the sampling error of the verdict); `threshold` the run's threshold
    (`embedding_threshold`); `drifted` is Evidently's verdict at it.
    """

    score: float
    threshold: float
    drifted: bool
    method: str
    n_reference: int
    n_current: int
    null_se: float
    encoder: str

    @property
    def z(self) -> float:
        """How many null standard errors the AUC lies above chance."""
        return (self.score - 0.5) / self.null_se if self.null_se > 0 else math.nan

    def as_column(self):
        """This signal as a `ColumnDrift`, so it counts in the drift share like the other signals."""
        from nfl_mlops.monitoring.drift import ColumnDrift

        return ColumnDrift(
            column=EMBEDDING_COLUMN,
            kind="emb",
            method=self.method,
            score=self.score,
            threshold=self.threshold,
            drifted=self.drifted,
        )

    def to_payload(self) -> dict:
        return {
            "score": _finite(self.score),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "method": self.method,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "null_se": _finite(self.null_se),
            "z": _finite(self.z),
            "encoder": self.encoder,
        }


def embedding_threshold(
    n_reference: int, n_current: int, min_auc: float = EMBEDDING_AUC_THRESHOLD, z: float = EMBEDDING_NULL_Z
) -> float:
    """The AUC above which a run counts as drifted: a minimum effect, and `z` null SEs above chance."""
    return max(min_auc, 0.5 + z * auc_null_se(n_reference, n_current))


def embedding_drift(
    reference: np.ndarray,
    current: np.ndarray,
    threshold: float = EMBEDDING_AUC_THRESHOLD,
    encoder: str = "",
    min_rows: int = 30,
    z: float = EMBEDDING_NULL_Z,
) -> EmbeddingDrift:
    """Domain-classifier embedding drift (Evidently's `ModelDriftMethod`) of `current` vs `reference`.

    Args:
        reference, current: embedding matrices (rows x dim), already sampled.
        threshold: the smallest held-out ROC AUC that counts as drift.
        z: the AUC must also be this many null standard errors above 0.5 (`embedding_threshold`).
    """
    import pandas as pd
    from evidently.metrics.embeddings import ModelDriftMethod

    reference, current = np.asarray(reference, dtype=np.float32), np.asarray(current, dtype=np.float32)
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(f"embedding shapes differ: reference {reference.shape}, current {current.shape}")
    for label, m in (("reference", reference), ("current", current)):
        if len(m) < min_rows:
            raise ValueError(f"{label} has {len(m)} embeddings; embedding drift needs at least {min_rows}")
    cols = [f"e{i}" for i in range(reference.shape[1])]
    threshold = embedding_threshold(len(reference), len(current), threshold, z)
    score, drifted, method = ModelDriftMethod(threshold=threshold)(
        pd.DataFrame(current, columns=cols), pd.DataFrame(reference, columns=cols)
    )
    return EmbeddingDrift(
        score=float(score),
        threshold=float(threshold),
        drifted=bool(drifted),
        method=f"domain_classifier_auc ({method})",
        n_reference=len(reference),
        n_current=len(current),
        null_se=auc_null_se(len(reference), len(current)),
        encoder=encoder,
    )


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
