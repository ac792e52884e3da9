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


def cuda_available() -> bool:
    """Whether torch sees a GPU (then torch serves: it is the CUDA path)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def load_as_served(path: str | Path, name: str | None = None, setting: str | None = None) -> SentimentModel:
    """The version at `path` on the runtime this process serves it with (`setting`, default
    `MLOPS_INFERENCE_BACKEND`; see `runtimes.choose_backend`): the API's replicas and every other forward
    pass over served traffic (a new normal's check) use this one choice. `.backend` says which it is."""
    import logging

    from nfl_mlops.modeling.runtimes import choose_backend
    from nfl_mlops.settings import get_settings

    backend, why = choose_backend(setting or get_settings().inference_backend, path, cuda=cuda_available())
    if why:
        logging.getLogger(__name__).warning("%s: %s", name or path, why)
    model = SentimentModel.load(path, name=name, backend=backend)
    model.path = Path(path)
    return model


class SentimentModel:
    """Wraps a Hugging Face sequence classifier with the project's label order."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 64, name: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = name

    @classmethod
    def load(
        cls, path: str | Path, max_length: int | None = None, name: str | None = None, backend: str = "torch"
    ) -> SentimentModel:
        """Load from a Hugging Face folder (safetensors only, no remote code).

        `backend`: "torch", or an ONNX variant of the folder ("onnx", "onnx-int8"; see `runtimes`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        quiet_transformers()
        if backend != "torch":
            return OnnxSentimentModel.load_onnx(path, backend, max_length=max_length, name=name)
        configure_torch_threads()
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

    backend = "torch"
    path: Path | None = None  # the folder it was loaded from, when `load_as_served` loaded it

    def _proba(self, batch: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.model.device)
        with torch.inference_mode():
            logits = self.model(**enc).logits
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (n x 3); texts are sorted by length so batches pad little."""
        if not texts:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), len(LABELS)), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._proba([texts[i] for i in idx])
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


class OnnxSentimentModel(SentimentModel):
    """The same model through ONNX Runtime (`model.onnx` or `model.int8.onnx` of the folder)."""

    def __init__(self, sess: Any, tokenizer: Any, max_length: int, name: str | None, backend: str) -> None:
        self.model = None
        self.session = sess
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.name = name
        self.backend = backend
        self._names = {i.name for i in sess.get_inputs()}

    @classmethod
    def load_onnx(
        cls, path: str | Path, backend: str, max_length: int | None = None, name: str | None = None
    ) -> OnnxSentimentModel:
        import json
        import os

        from transformers import AutoTokenizer

        from nfl_mlops.modeling.runtimes import FILES, session
        from nfl_mlops.settings import get_settings

        folder = Path(path)
        config = json.loads((folder / "config.json").read_text())
        labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        if labels != list(LABELS):
            raise ValueError(f"model at {path} has labels {labels}, expected {list(LABELS)}")
        threads = get_settings().torch_threads or (os.cpu_count() or 1)
        sess = session(folder / FILES[backend], threads=threads)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        if max_length is None:
            max_length = int(config.get("nfl_mlops_max_length", 64))
        return cls(sess, tokenizer, max_length, name, backend)

    def _proba(self, batch: list[str]) -> np.ndarray:
        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self._names}
        logits = self.session.run(["logits"], feed)[0].astype(np.float32)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
