"""ONNX runtimes of a version (issue 12): export parity, int8 admission both ways, failure never fatal,
backend choice, and the ONNX model answering like torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nfl_mlops.modeling import runtimes
from nfl_mlops.modeling.runtimes import (
    FP32_FILE,
    INT8_FILE,
    RECORD_FILE,
    choose_backend,
    export_runtimes,
    fp32_admitted,
    int8_admitted,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def split():
    """Real corpus tweets with their labels (the stand-in for a version's test split)."""
    from nfl_mlops.data import load_corpus, prepare

    rows = prepare(load_corpus()).sample(160, random_state=3)
    return rows["text"].tolist(), rows["label"].tolist()


@pytest.fixture(scope="module")
def exported(tiny_model_dir, split, tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("runtimes") / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder, export_runtimes(folder, *split)


def test_fp32_export_matches_torch_and_is_admitted(exported, split):
    folder, record = exported
    assert record["onnx"]["admitted"] is True, record
    assert record["onnx"]["max_abs_logit_diff"] <= 1e-4 and record["onnx"]["labels_identical"] is True
    assert (folder / FP32_FILE).is_file()
    assert json.loads((folder / RECORD_FILE).read_text()) == record
    assert record["checked_on"] == {"split": "test", "n": len(split[0])}


def test_the_onnx_models_answer_like_torch(exported, split):
    from nfl_mlops.modeling.predictor import SentimentModel

    folder, record = exported
    texts = split[0][:64] + ["🏈 TD!", "a" * 3000]  # an emoji and a text longer than max_length
    ref = SentimentModel.load(folder).predict_proba(texts, batch_size=16)
    fp32 = SentimentModel.load(folder, backend="onnx")
    assert fp32.backend == "onnx"
    np.testing.assert_allclose(fp32.predict_proba(texts, batch_size=16), ref, atol=1e-4)
    if record["onnx-int8"]["admitted"]:
        q = SentimentModel.load(folder, backend="onnx-int8").predict_proba(texts, batch_size=16)
        assert (q.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_int8_admission_both_ways(exported, split, monkeypatch, tmp_path):
    folder, _ = exported
    copy = tmp_path / "strict"
    shutil.copytree(folder, copy)
    monkeypatch.setattr(runtimes, "INT8_MIN_AGREEMENT", 1.01)  # no int8 can agree on 101 % of rows
    strict = export_runtimes(copy, *split)
    assert strict["onnx"]["admitted"] is True and strict["onnx-int8"]["admitted"] is False
    assert "label_agreement" in strict["onnx-int8"] and "macro_f1_loss" in strict["onnx-int8"]  # numbers kept
    assert not (copy / INT8_FILE).exists() and choose_backend("auto", copy) == ("onnx", None)
    monkeypatch.setattr(runtimes, "INT8_MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(runtimes, "INT8_MAX_F1_LOSS", 1.0)
    lax = export_runtimes(copy, *split)
    assert lax["onnx-int8"]["admitted"] is True and (copy / INT8_FILE).is_file()
    assert choose_backend("auto", copy) == ("onnx-int8", None)


def test_the_admission_rules():
    assert fp32_admitted(5e-5, True) and not fp32_admitted(2e-4, True) and not fp32_admitted(0.0, False)
    assert int8_admitted(0.80, 0.795, 0.98)
    assert not int8_admitted(0.80, 0.794, 0.99)  # more than half a point lost
    assert not int8_admitted(0.80, 0.80, 0.979)  # agreement below 98 %


def test_a_failed_export_is_recorded_and_torch_remains(tiny_model_dir, split, tmp_path, monkeypatch):
    import torch

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken)
    record = export_runtimes(folder, *split)
    assert record["onnx"] == {"admitted": False, "error": "RuntimeError: exporter exploded"}
    assert record["onnx-int8"]["admitted"] is False
    assert not (folder / FP32_FILE).exists() and not (folder / INT8_FILE).exists()
    assert choose_backend("auto", folder) == ("torch", None)
    backend, why = choose_backend("onnx", folder)
    assert backend == "torch" and "not admitted" in why


def test_choose_backend(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    assert choose_backend("auto", folder) == ("torch", None)  # no record: torch only
    record = {
        "torch": {"admitted": True},
        "onnx": {"admitted": True},
        "onnx-int8": {"admitted": True},
        "weights_sha256": runtimes.weights_sha256(folder),
    }
    (folder / RECORD_FILE).write_text(json.dumps(record))
    (folder / FP32_FILE).write_bytes(b"x")
    # int8 admitted but its file is gone: the next admitted one
    assert choose_backend("auto", folder) == ("onnx", None)
    (folder / INT8_FILE).write_bytes(b"x")
    assert choose_backend("auto", folder) == ("onnx-int8", None)
    assert choose_backend("torch", folder) == ("torch", None)
    assert choose_backend("onnx", folder) == ("onnx", None)
    assert choose_backend("auto", folder, cuda=True) == ("torch", None)  # torch is the GPU path


def test_variants_count_only_for_the_weights_they_were_exported_from(exported, tmp_path):
    """A folder whose safetensors changed after the export (e.g. another version's folder copied with new
    weights) serves torch: its ONNX files describe other weights."""
    folder, _ = exported
    copy = tmp_path / "changed"
    shutil.copytree(folder, copy)
    assert choose_backend("auto", copy)[0] != "torch"
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    assert choose_backend("auto", copy) == ("torch", None)
    assert runtimes.admitted(copy) == ["torch"]
