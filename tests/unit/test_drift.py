"""Drift detection on synthetic prediction-log descriptors (Evidently runs for real, no network)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nfl_mlops.monitoring.drift import ColumnDrift, DriftConfig, DriftResult, detect_drift

NUM = [
    "n_chars",
    "n_words",
    "n_hashtags",
    "n_mentions",
    "n_urls",
    "n_nfl_entities",
    "oov_share",
    "confidence",
]
CAT = ["topic", "predicted_label"]
TOPICS = ["deflategate", "superbowl", "other"]
LABELS = ["negative", "neutral", "positive"]


def make_frame(n: int, seed: int, oov_shift: float = 0.0, topic_p=(0.3, 0.2, 0.5)) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    words = r.poisson(14, n)
    return pd.DataFrame(
        {
            "n_chars": words * 6 + r.integers(0, 20, n),
            "n_words": words,
            "n_hashtags": r.poisson(0.5, n),
            "n_mentions": r.poisson(0.8, n),
            "n_urls": r.binomial(1, 0.2, n),
            "n_nfl_entities": r.poisson(1.2, n),
            "oov_share": np.clip(r.beta(2, 10, n) + oov_shift, 0, 1),
            "confidence": r.beta(8, 2, n),
            "topic": r.choice(TOPICS, n, p=list(topic_p)),
            "predicted_label": r.choice(LABELS, n, p=[0.3, 0.4, 0.3]),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(2000, seed=1)


def test_same_distribution_has_no_drift(reference):
    result = detect_drift(reference, make_frame(1000, seed=2), NUM, CAT)

    assert not result.dataset_drift
    assert result.drift_share <= 0.1
    assert [c.column for c in result.columns] == NUM + CAT
    assert (result.n_reference, result.n_current) == (2000, 1000)
    # > 1000 reference rows: Evidently's defaults are distances with threshold 0.1
    methods = {c.column: c.method for c in result.columns}
    assert methods["confidence"] == "wasserstein"
    assert methods["topic"] == "jensenshannon"
    assert all(c.threshold == pytest.approx(0.1) for c in result.columns)


def test_shifted_columns_drift_and_others_do_not(reference):
    current = make_frame(1000, seed=3, oov_shift=0.15, topic_p=(0.7, 0.2, 0.1))
    result = detect_drift(reference, current, NUM, CAT)

    assert set(result.drifted_columns) == {"oov_share", "topic"}
    by_name = {c.column: c for c in result.columns}
    assert by_name["oov_share"].drifted and by_name["oov_share"].score >= by_name["oov_share"].threshold
    assert not by_name["confidence"].drifted
    assert result.drift_share == pytest.approx(2 / 10)
    # 2 of 10 is below the default share threshold (0.3)
    assert not result.dataset_drift

    lower = detect_drift(reference, current, NUM, CAT, DriftConfig(share_threshold=0.2))
    assert lower.dataset_drift


def test_small_reference_uses_p_value_tests():
    reference, current = make_frame(500, seed=4), make_frame(200, seed=5, oov_shift=0.15)
    result = detect_drift(reference, current, NUM, CAT)

    oov = next(c for c in result.columns if c.column == "oov_share")
    assert oov.method == "ks" and oov.threshold == pytest.approx(0.05)
    assert oov.drifted and oov.score < oov.threshold  # p-value: drift when below the threshold
    assert "confidence" not in result.drifted_columns


def test_configured_method_and_threshold_are_used(reference):
    config = DriftConfig(num_method="psi", cat_method="psi", per_column_threshold=0.2)
    result = detect_drift(reference, make_frame(1000, seed=2), NUM, CAT, config)

    assert {c.method for c in result.columns} == {"psi"}
    assert {c.threshold for c in result.columns} == {0.2}


def test_constant_and_empty_columns(reference):
    ref, cur = reference.copy(), make_frame(300, seed=6)
    ref["constant"], cur["constant"] = 1.0, 1.0
    ref["const_cat"], cur["const_cat"] = "x", "x"
    ref["empty"], cur["empty"] = np.nan, np.nan
    # integer codes as a categorical: a NaN on one side makes them float (1.0), still the same categories
    ref["code"] = np.arange(len(ref)) % 3
    cur["code"] = (np.arange(len(cur)) % 3).astype(float)
    cur.loc[0, "code"] = np.nan
    result = detect_drift(ref, cur, NUM + ["constant", "empty"], CAT + ["const_cat", "code"])

    by_name = {c.column: c for c in result.columns}
    assert not by_name["constant"].drifted and not by_name["const_cat"].drifted
    assert not by_name["code"].drifted and by_name["code"].score < 0.01
    assert result.skipped_columns == ("empty",)
    assert "empty" not in by_name
    assert "empty" in result.to_markdown()


def test_sampling_caps_each_side(reference):
    result = detect_drift(reference, make_frame(1500, seed=7), NUM, CAT, DriftConfig(max_rows=1200))
    assert (result.n_reference, result.n_current) == (1200, 1200)


def test_report_files_written(reference, tmp_path):
    report_dir = tmp_path / "reports"
    result = detect_drift(reference, make_frame(500, seed=8), NUM, CAT, report_dir=report_dir, name="w1")

    assert result.html_path == tmp_path / "reports" / "w1.html"
    assert "<html" in result.html_path.read_text(encoding="utf-8").lower()
    saved = json.loads(result.json_path.read_text(encoding="utf-8"))
    drift_metrics = [m for m in saved["metrics"] if m["config"]["type"].endswith(":ValueDrift")]
    assert {m["config"]["column"] for m in drift_metrics} == set(NUM + CAT)


def test_payload_and_markdown(reference, tmp_path):
    current = make_frame(1000, seed=3, oov_shift=0.15, topic_p=(0.7, 0.2, 0.1))
    result = detect_drift(reference, current, NUM, CAT, report_dir=tmp_path)

    payload = json.loads(json.dumps(result.to_payload()))
    assert payload["dataset_drift"] is False
    assert sorted(payload["drifted_columns"]) == ["oov_share", "topic"]
    assert payload["columns"]["oov_share"]["drifted"] is True
    assert payload["n_columns"] == 10 and payload["n_current"] == 1000
    assert payload["html_path"] == str(tmp_path / "drift.html")

    md = result.to_markdown()
    assert "| column | type | method | score | threshold | drifted |" in md
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + len(NUM + CAT)
    assert "| oov_share | num | wasserstein |" in md


def test_too_small_current_raises(reference):
    with pytest.raises(ValueError, match="current data has 29 rows"):
        detect_drift(reference, make_frame(29, seed=9), NUM, CAT)


def test_bad_columns_raise(reference):
    current = make_frame(100, seed=10)
    with pytest.raises(ValueError, match="lacks columns"):
        detect_drift(reference, current.drop(columns=["topic"]), NUM, CAT)
    with pytest.raises(ValueError, match="listed twice"):
        detect_drift(reference, current, NUM + ["topic"], CAT)
    with pytest.raises(ValueError, match="non-numeric"):
        detect_drift(reference, current, NUM + ["topic"], ["predicted_label"])


def _col(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(name, "num", "wasserstein", 0.5 if drifted else 0.01, 0.1, drifted)


@pytest.mark.parametrize(
    ("n_drifted", "n_total", "threshold", "expected"),
    [(3, 10, 0.3, True), (2, 10, 0.3, False), (1, 1, 1.0, True), (0, 5, 0.3, False)],
)
def test_dataset_verdict_boundary(n_drifted, n_total, threshold, expected):
    cols = [_col(f"c{i}", i < n_drifted) for i in range(n_total)]
    result = DriftResult.from_columns(cols, share_threshold=threshold, n_reference=100, n_current=50)
    assert result.dataset_drift is expected
    assert result.drift_share == pytest.approx(n_drifted / n_total)
    assert len(result.drifted_columns) == n_drifted


def test_config_validation():
    assert DriftConfig().share_threshold == 0.3
    for bad in ({"share_threshold": 0.0}, {"share_threshold": 1.5}, {"max_rows": 10}, {"min_rows": 0}):
        with pytest.raises(ValueError):
            DriftConfig(**bad)
