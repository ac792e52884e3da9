"""Embedding drift (Evidently's domain classifier) on synthetic embeddings; the real encoder once (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nfl_mlops.monitoring.embeddings import (
    EMBEDDING_COLUMN,
    auc_null_se,
    embedding_drift,
    embedding_threshold,
    sample_indices,
)


def cloud(n: int, seed: int, shift: float = 0.0, dim: int = 32) -> np.ndarray:
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, dim))
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_same_distribution_is_not_drift():
    result = embedding_drift(cloud(500, 1), cloud(500, 2), threshold=0.55, encoder="test")
    assert not result.drifted
    assert abs(result.score - 0.5) < 3 * result.null_se
    assert result.method.startswith("domain_classifier_auc")
    assert (result.n_reference, result.n_current, result.encoder) == (500, 500, "test")


def test_shifted_embeddings_drift():
    result = embedding_drift(cloud(500, 1), cloud(500, 3, shift=2.0), threshold=0.55)
    assert result.drifted and result.score > 0.9 and result.z > 10
    column = result.as_column()
    assert (column.column, column.kind, column.drifted) == (EMBEDDING_COLUMN, "emb", True)
    assert column.score == result.score and column.threshold == result.threshold


def test_threshold_decides():
    ref, cur = cloud(400, 1), cloud(400, 4, shift=0.5)
    score = embedding_drift(ref, cur, threshold=0.55).score
    assert embedding_drift(ref, cur, threshold=score - 0.01, z=0).drifted
    assert not embedding_drift(ref, cur, threshold=min(score + 0.01, 1.0)).drifted


def test_threshold_grows_with_sampling_error():
    assert embedding_threshold(500, 500) == pytest.approx(0.5 + 2.33 * auc_null_se(500, 500))  # 0.560
    assert embedding_threshold(200, 400) == pytest.approx(0.5 + 2.33 * auc_null_se(200, 400))  # 0.583
    assert embedding_threshold(20_000, 20_000) == 0.55  # the minimum effect once samples are large
    result = embedding_drift(cloud(200, 1), cloud(400, 2))
    assert result.threshold == pytest.approx(embedding_threshold(200, 400))


def test_null_standard_error():
    # the classifier is scored on a held-out half: 250 + 250 rows for 500 + 500
    assert auc_null_se(500, 500) == pytest.approx(math.sqrt(501 / (12 * 250 * 250)))
    assert auc_null_se(500, 500) == pytest.approx(0.0258, abs=1e-4)
    assert auc_null_se(2000, 2000) < auc_null_se(500, 500)


def test_payload_is_json_ready():
    payload = embedding_drift(cloud(100, 1), cloud(100, 2)).to_payload()
    assert set(payload) >= {"score", "threshold", "drifted", "null_se", "z", "n_reference", "n_current"}
    assert all(isinstance(v, (int, float, str, bool)) or v is None for v in payload.values())


def test_bad_shapes_and_sizes():
    with pytest.raises(ValueError, match="shapes differ"):
        embedding_drift(cloud(100, 1, dim=8), cloud(100, 2, dim=16))
    with pytest.raises(ValueError, match="at least 30"):
        embedding_drift(cloud(100, 1), cloud(10, 2))


def test_sample_indices():
    assert list(sample_indices(5, 10)) == [0, 1, 2, 3, 4]
    idx = sample_indices(10_000, 500, seed=3)
    assert len(idx) == 500 == len(set(idx)) and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(idx, sample_indices(10_000, 500, seed=3))


@pytest.mark.slow
def test_real_base_encoder_embeds_offline():
    """The packaged MiniLM: unit vectors of 384 dims; a paraphrase sits closer than another topic."""
    from nfl_mlops.monitoring.embeddings import get_encoder

    enc = get_encoder("sentence-transformers/all-MiniLM-L6-v2")
    vecs = enc.encode(
        [
            "my flight was delayed for hours",
            "the plane left three hours late",
            "Brady and the Patriots won the Super Bowl",
            "",
        ]
    )
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert get_encoder("sentence-transformers/all-MiniLM-L6-v2") is enc  # loaded once per process


@pytest.mark.slow
def test_the_encoder_runs_on_onnx_with_the_same_embeddings_and_exports_once(tmp_path):
    """The packaged MiniLM through ONNX Runtime: embeddings of real tweets within 1e-4 of torch's (so
    references made with torch stay comparable); the graph is exported once per host and reused; a graph
    that failed its parity check is not used, torch is."""
    import json

    from nfl_mlops.data import load_corpus
    from nfl_mlops.modeling.base import resolve_base_model
    from nfl_mlops.modeling.runtimes import ENCODER_RECORD, encoder_graph
    from nfl_mlops.monitoring.embeddings import SentenceEncoder

    name = "sentence-transformers/all-MiniLM-L6-v2"
    texts = load_corpus()["text"].sample(n=200, random_state=1).tolist() + ["", "ok"]
    fast = SentenceEncoder.load(name, backend="auto")
    slow = SentenceEncoder.load(name, backend="torch")
    assert (fast.backend, slow.backend) == ("onnx", "torch")
    got, ref = fast.encode(texts), slow.encode(texts)
    assert got.shape == ref.shape == (202, 384)
    assert float(np.abs(got - ref).max()) <= 1e-4

    cache = tmp_path / "cache"
    graph = encoder_graph(resolve_base_model(name), cache)
    assert graph is not None and json.loads((graph.parent / ENCODER_RECORD).read_text())["admitted"]
    stamp = graph.stat().st_mtime_ns
    assert encoder_graph(resolve_base_model(name), cache) == graph and graph.stat().st_mtime_ns == stamp
    record = json.loads((graph.parent / ENCODER_RECORD).read_text())
    (graph.parent / ENCODER_RECORD).write_text(json.dumps({**record, "admitted": False}))
    assert encoder_graph(resolve_base_model(name), cache) is None  # a refused graph is never served
