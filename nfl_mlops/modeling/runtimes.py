"""Inference runtimes of a version: torch (always), ONNX fp32 and ONNX dynamic int8 (when admitted).

At registration (`export_runtimes`, called by the registration flow on the candidate folder before it is
copied into the registry, so a version's folder never changes afterwards):

- `model.onnx`: the classifier exported with `torch.onnx.export` (dynamic batch and sequence axes). It is
  **admitted** when, on the version's test split, its logits are within `FP32_MAX_ABS` of torch's (max
  abs) and every label is the same.
- `model.int8.onnx`: ONNX Runtime's dynamic int8 quantization of it. Admitted when its macro-F1 on the
  test split is within `INT8_MAX_F1_LOSS` of fp32's and its labels agree with fp32's on at least
  `INT8_MIN_AGREEMENT` of the rows; otherwise the file is removed and its numbers are kept.

The record (`runtimes.json` in the folder, and the registry row's `metrics["runtimes"]`) holds every
check's numbers. An export that fails is recorded with its error and never fails the registration: torch
serving remains. `choose_backend` picks what a process serves: `MLOPS_INFERENCE_BACKEND=auto` takes the
fastest admitted variant (int8, then fp32, then torch); torch is also the CUDA path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nfl_mlops import LABELS

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RECORD_FILE = "runtimes.json"
FP32_MAX_ABS = 1e-4
INT8_MAX_F1_LOSS = 0.005
INT8_MIN_AGREEMENT = 0.98
BACKENDS = ("torch", "onnx", "onnx-int8")
FASTEST_FIRST = ("onnx-int8", "onnx", "torch")
FILES = {"onnx": FP32_FILE, "onnx-int8": INT8_FILE}


def _inputs(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


def export_fp32(model_dir: Path, opset: int = 17) -> Path:
    """Write `model.onnx` (logits from input_ids, attention_mask[, token_type_ids]) beside the weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, use_safetensors=True, trust_remote_code=False
    ).eval()
    model.config.return_dict = False
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    sample = tokenizer(["a sample tweet for the export", "another"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    out = Path(model_dir) / FP32_FILE
    tmp = out.with_suffix(".onnx.tmp")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shapes: the parity check is what counts
        torch.onnx.export(
            model,
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    tmp.replace(out)
    return out


def quantize_int8(fp32: Path) -> Path:
    """Dynamic int8 quantization of the fp32 graph's weights (activations quantized at run time).

    Per output channel: one scale per row of each weight matrix instead of one per matrix. On a MiniLM
    fine-tuned on 4,000 corpus rows (bench/runtimes.py), per-tensor scales agreed with fp32 on 95.9 % of
    1,500 test tweets (not admitted), per-channel ones on 98.2 % (admitted), at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = fp32.with_name(INT8_FILE)
    root = logging.getLogger()
    advice = _DropMessage("pre-processing before quantization")  # a generic hint, logged on every call
    root.addFilter(advice)
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(advice)
    return out


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def session(path: Path, threads: int = 0, spin: bool | None = None) -> Any:
    """An ONNX Runtime CPU session (threads 0 = ONNX Runtime's default: every core).

    `spin`: whether its intra-op threads spin-wait between operations (ONNX Runtime's default). None
    follows `OMP_WAIT_POLICY`, as torch's OpenMP threads do: a serving process sets it to PASSIVE
    (`batcher.prefer_passive_openmp`), where spinning threads would take the cores from the event loop that
    parses requests; elsewhere (training, batch scoring) they spin."""
    import os

    import onnxruntime as ort

    if spin is None:
        spin = os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_logits(
    sess: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch: int = 64
) -> np.ndarray:
    names = {i.name for i in sess.get_inputs()}
    out = []
    for start in range(0, len(texts), batch):
        feed = _inputs(tokenizer, texts[start : start + batch], max_length)
        out.append(sess.run(["logits"], {k: v for k, v in feed.items() if k in names})[0])
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)), dtype=np.float32)


def _macro_f1(y: np.ndarray, logits: np.ndarray) -> float:
    """Macro-F1 of `logits` as the registration gate computes it (`metrics.evaluate`)."""
    from nfl_mlops.modeling.metrics import evaluate

    if not len(y):
        return 0.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return evaluate(y, e / e.sum(axis=1, keepdims=True)).macro_f1


def fp32_admitted(max_abs_logit_diff: float, labels_identical: bool) -> bool:
    return max_abs_logit_diff <= FP32_MAX_ABS and labels_identical


def int8_admitted(f1_fp32: float, f1_int8: float, label_agreement: float) -> bool:
    """int8 serves only when it costs at most half a macro-F1 point and agrees with fp32 on >= 98 % of rows."""
    return f1_fp32 - f1_int8 <= INT8_MAX_F1_LOSS + 1e-12 and label_agreement >= INT8_MIN_AGREEMENT


def export_runtimes(model_dir: Path | str, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Export and check both ONNX variants on (`texts`, `labels`) (the test split); write `runtimes.json`.

    Never raises: a failure is recorded as `{"admitted": False, "error": ...}` and torch remains.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(model_dir)
    record: dict[str, Any] = {
        "torch": {"admitted": True},
        "checked_on": {"split": "test", "n": len(texts)},
        "weights_sha256": weights_sha256(model_dir),
    }
    y = np.array([LABELS.index(label) for label in labels])
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False
        ).eval()
        max_length = int(getattr(model.config, "nfl_mlops_max_length", 64))
        with torch.inference_mode():
            ref = (
                np.concatenate(
                    [
                        model(
                            **tokenizer(
                                list(texts[i : i + 64]),
                                padding=True,
                                truncation=True,
                                max_length=max_length,
                                return_tensors="pt",
                            )
                        )
                        .logits.float()
                        .numpy()
                        for i in range(0, len(texts), 64)
                    ]
                )
                if len(texts)
                else np.zeros((0, len(LABELS)), dtype=np.float32)
            )
        torch_pred = ref.argmax(1)
        record["torch"]["macro_f1"] = round(_macro_f1(y, ref), 4)
        t = time.perf_counter()
        fp32 = export_fp32(model_dir)
        got = onnx_logits(session(fp32), tokenizer, texts, max_length)
        max_abs = float(np.abs(got - ref).max()) if len(texts) else 0.0
        same = bool((got.argmax(1) == torch_pred).all())
        record["onnx"] = {
            "admitted": fp32_admitted(max_abs, same),
            "max_abs_logit_diff": max_abs,
            "labels_identical": same,
            "macro_f1": round(_macro_f1(y, got), 4),
            "export_s": round(time.perf_counter() - t, 1),
            "rule": f"max |logit - torch| <= {FP32_MAX_ABS:g} and identical labels",
        }
        if not record["onnx"]["admitted"]:
            fp32.unlink(missing_ok=True)
            record["onnx-int8"] = {"admitted": False, "error": "fp32 variant not admitted"}
        else:
            int8 = quantize_int8(fp32)
            q = onnx_logits(session(int8), tokenizer, texts, max_length)
            f1_fp32, f1_int8 = _macro_f1(y, got), _macro_f1(y, q)
            agreement = float((q.argmax(1) == got.argmax(1)).mean()) if len(texts) else 1.0
            ok = int8_admitted(f1_fp32, f1_int8, agreement)
            record["onnx-int8"] = {
                "admitted": ok,
                "macro_f1": round(f1_int8, 4),
                "macro_f1_loss": round(f1_fp32 - f1_int8, 4),
                "label_agreement": round(agreement, 4),
                "rule": f"macro-F1 within {INT8_MAX_F1_LOSS:g} of fp32 and label agreement >= {INT8_MIN_AGREEMENT:.0%}",
            }
            if not ok:
                int8.unlink(missing_ok=True)
    except Exception as exc:  # export problems never fail a registration: torch serves
        log.warning("ONNX export of %s failed: %s: %s", model_dir, type(exc).__name__, exc)
        for name in ("onnx", "onnx-int8"):
            record.setdefault(name, {"admitted": False, "error": f"{type(exc).__name__}: {exc}"[:300]})
            (model_dir / FILES[name]).unlink(missing_ok=True)
    (model_dir / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return record


def read_record(model_dir: Path | str) -> dict[str, Any]:
    """The version's runtime record; a folder without one has torch only."""
    try:
        return json.loads((Path(model_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return {"torch": {"admitted": True}}


def weights_sha256(model_dir: Path | str) -> str | None:
    """sha256 of the folder's `model.safetensors` (None without one); cached by path, size and mtime."""
    path = Path(model_dir) / "model.safetensors"
    try:
        st = path.stat()
    except OSError:
        return None
    return _hash_file(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def admitted(model_dir: Path | str) -> list[str]:
    """The variants this folder may serve with, fastest first (their files present). The ONNX variants count
    only while the folder's weights are the ones they were exported from: a folder whose safetensors were
    changed or replaced (a copy of another version's folder with new weights, say) serves torch."""
    record = read_record(model_dir)
    if record.get("weights_sha256") != weights_sha256(model_dir):
        return ["torch"]
    out = []
    for name in FASTEST_FIRST:
        if not (record.get(name) or {}).get("admitted"):
            continue
        if name != "torch" and not (Path(model_dir) / FILES[name]).is_file():
            continue
        out.append(name)
    return out or ["torch"]


RELATIVE_CPU_COST = {"torch": 1.0, "onnx": 0.52, "onnx-int8": 0.27}
"""CPU per prediction relative to torch in this service at concurrency 32 on 2 cores (bench/runtimes.py,
bench/README.md): the order is what the advice relies on, the numbers only say how much."""


def cost_advice(serving: str, model_dir: Path | str, cuda: bool = False) -> dict[str, Any]:
    """What serving a version costs and whether a cheaper admitted runtime exists (for `/mlops/status`)."""
    options = admitted(model_dir)
    cheapest = "torch" if cuda else options[0]
    out: dict[str, Any] = {
        "serving": serving,
        "admitted": options,
        "cheapest_admitted": cheapest,
        "relative_cpu_cost": RELATIVE_CPU_COST.get(serving),
    }
    if cheapest != serving and not cuda:
        saving = 1 - RELATIVE_CPU_COST[cheapest] / RELATIVE_CPU_COST[serving]
        out["advice"] = (
            f"{cheapest} is admitted for this version and needs about {saving:.0%} less CPU per prediction "
            f"than {serving}: set MLOPS_INFERENCE_BACKEND=auto (or {cheapest})"
        )
    return out


def choose_backend(setting: str, model_dir: Path | str, cuda: bool = False) -> tuple[str, str | None]:
    """(backend, why not the asked one) for `setting` in auto|torch|onnx|onnx-int8. CUDA serves torch."""
    if cuda and setting in ("auto", "torch"):
        return "torch", None
    options = admitted(model_dir)
    if setting == "auto":
        return options[0], None
    if setting in options:
        return setting, None
    return (
        "torch",
        f"{setting} is not admitted for this version (admitted: {', '.join(options)}); serving torch",
    )


# The base encoder (monitoring's sentence embeddings) ------------------------------------------------------

ENCODER_FILE = "encoder.onnx"
ENCODER_RECORD = "encoder.json"
PARITY_TEXTS = (
    "Brady and the Patriots win the Super Bowl again, what a game #SB49",
    "@united lost my bag again. third time this year",
    "ok",
    "Can't wait for the new iPhone launch tomorrow!! http://t.co/x",
    "The traffic on the way to Coachella is unreal, 4 hours and counting... #coachella #fail",
    "Seahawks defense looked tired in the 4th quarter; Lynch should have had the ball on 2nd and goal at the one",
    "neutral statement about nothing in particular",
    "😂😂😂 best day ever",
)
"""Texts of many lengths (one batch, so padding is exercised) that the encoder's ONNX graph must match on."""


def _pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the attention mask, L2-normalised (sentence-transformers' pooling)."""
    m = mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * m).sum(axis=1) / np.clip(m.sum(axis=1), 1.0, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def _ByName(model: Any, names: list[str]) -> Any:
    """`model` as a module whose positional inputs are `names` (forward's own order differs between
    architectures and transformers versions), returning the last hidden states."""
    import torch

    class ByName(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: Any) -> Any:
            return self.inner(**dict(zip(names, args, strict=True)))[0]

    return ByName()


def export_encoder(
    source: str | Path, out_dir: Path, max_length: int = 64, opset: int = 17
) -> dict[str, Any]:
    """Export the encoder at `source` (last hidden states) to `out_dir/encoder.onnx` and check it: admitted
    when its pooled embeddings of `PARITY_TEXTS` are within `FP32_MAX_ABS` of torch's. Writes
    `encoder.json` (the record) and returns it; never raises (an error is recorded, torch remains)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"source": str(source), "admitted": False}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
        model = AutoModel.from_pretrained(str(source), use_safetensors=True, trust_remote_code=False).eval()
        model.config.return_dict = False
        enc = tokenizer(
            list(PARITY_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
        t = time.perf_counter()
        tmp = out_dir / (ENCODER_FILE + ".tmp")
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = _pooled(model(**enc)[0].numpy(), enc["attention_mask"].numpy())
            torch.onnx.export(
                _ByName(model, names),
                tuple(enc[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "sequence"} for n in names},
                    "last_hidden_state": {0: "batch", 1: "sequence"},
                },
                opset_version=opset,
                dynamo=False,
            )
        tmp.replace(out_dir / ENCODER_FILE)
        feed = {n: enc[n].numpy().astype(np.int64) for n in names}
        got = _pooled(
            session(out_dir / ENCODER_FILE).run(["last_hidden_state"], feed)[0], feed["attention_mask"]
        )
        max_abs = float(np.abs(got - ref).max())
        record.update(
            admitted=max_abs <= FP32_MAX_ABS,
            max_abs_embedding_diff=max_abs,
            export_s=round(time.perf_counter() - t, 1),
            rule=f"max |pooled embedding - torch| <= {FP32_MAX_ABS:g} on {len(PARITY_TEXTS)} texts",
        )
    except Exception as exc:
        log.warning("ONNX export of the encoder %s failed: %s: %s", source, type(exc).__name__, exc)
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]
    if not record["admitted"]:
        (out_dir / ENCODER_FILE).unlink(missing_ok=True)
    (out_dir / ENCODER_RECORD).write_text(json.dumps(record, indent=2))
    return record


def encoder_graph(source: str | Path, cache_root: Path, max_length: int = 64) -> Path | None:
    """The admitted ONNX graph of the encoder folder `source`, exported once into
    `cache_root/<sha256 of its weights>` (shared by every process on this host); None when the export
    failed or did not match torch (recorded there, so it is not retried by every process)."""
    digest = weights_sha256(source)
    if digest is None:
        return None
    folder = Path(cache_root) / digest[:16]
    record_path = folder / ENCODER_RECORD
    if not record_path.is_file():
        import shutil
        import tempfile

        Path(cache_root).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_root))
        try:
            export_encoder(source, work, max_length=max_length)
            try:
                work.rename(folder)  # atomic: a reader sees a complete folder or none
            except OSError:  # another process got there first: use its export
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    path = folder / ENCODER_FILE
    return path if record.get("admitted") and path.is_file() else None
