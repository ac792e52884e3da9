"""Model-card plots (matplotlib, Agg): valid PNGs that change with their data, the reliability diagram's
ECE against numpy, `write_model_plots`, and logging a plot to an offline W&B run."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nfl_mlops import LABELS
from nfl_mlops.modeling.metrics import evaluate, expected_calibration_error
from nfl_mlops.registry.plots import (
    CONFUSION_PNG,
    LOSS_PNG,
    RELIABILITY_PNG,
    confusion_matrix_png,
    loss_curve_png,
    reliability_bins,
    reliability_diagram_png,
    write_model_plots,
)


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        img.verify()  # signature, chunk CRCs
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def _text(png: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(png)) as img:
        return dict(img.info)


@pytest.fixture(scope="module")
def test_split() -> tuple[np.ndarray, np.ndarray]:
    """Over-confident predictions: 400 rows, true ids and probabilities."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, size=400)
    logits = rng.normal(size=(400, 3)) * 2.5
    logits[np.arange(400), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_matplotlib_is_not_imported_with_the_module() -> None:
    import subprocess

    code = "import sys, nfl_mlops.registry.card, nfl_mlops.registry.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_confusion_matrix_png_is_valid_and_follows_the_matrix() -> None:
    a = confusion_matrix_png([[80, 15, 5], [20, 70, 10], [4, 16, 80]], LABELS, "t n=300")
    b = confusion_matrix_png([[10, 45, 45], [60, 20, 20], [33, 33, 34]], LABELS, "t n=300")
    pa, pb = _pixels(a), _pixels(b)
    assert pa.shape == pb.shape and pa.shape[0] > 250 and pa.shape[1] > 300
    assert (pa != pb).any(), "different matrices drew the same image"
    assert (
        confusion_matrix_png([[80, 15, 5], [20, 70, 10], [4, 16, 80]], LABELS, "t n=300") == a
    )  # deterministic
    assert _text(a)["Title"] == "t n=300"
    # a diagonal-heavy matrix has more dark-blue (high-share) area than a flat one
    assert (pa[..., 2].astype(int) - pa[..., 0] > 120).sum() > (
        pb[..., 2].astype(int) - pb[..., 0] > 120
    ).sum()
    _pixels(
        confusion_matrix_png([[9, 1, 0], [0, 0, 0], [5, 0, 5]], LABELS)
    )  # an empty row: no division by zero
    with pytest.raises(ValueError):
        confusion_matrix_png([[1, 2], [3, 4]], LABELS)


def _numpy_ece(y: np.ndarray, proba: np.ndarray, n_bins: int) -> tuple[float, np.ndarray]:
    """ECE with np.digitize (an independent binning: right-open bins, 1.0 in the last)."""
    conf, correct = proba.max(axis=1), proba.argmax(axis=1) == y
    which = np.clip(np.digitize(conf, np.linspace(0, 1, n_bins + 1)[1:-1]), 0, n_bins - 1)
    counts = np.array([(which == b).sum() for b in range(n_bins)])
    gaps = [abs(correct[which == b].mean() - conf[which == b].mean()) for b in range(n_bins) if counts[b]]
    return float(np.dot(counts[counts > 0] / len(y), gaps)), counts


@pytest.mark.parametrize("n_bins", [10, 15])
def test_reliability_ece_matches_numpy(test_split, n_bins: int) -> None:
    y, proba = test_split
    ece, counts = _numpy_ece(y, proba, n_bins)
    assert ece > 0.05  # the fixture is miscalibrated: a wrong ECE cannot pass by being ~0
    bins = reliability_bins(y, proba, n_bins)
    assert bins.ece == pytest.approx(ece, abs=1e-12)
    assert (bins.counts == counts).all() and bins.n == len(y)
    if n_bins == 10:
        assert bins.ece == pytest.approx(expected_calibration_error(y, proba), abs=1e-12)  # the card's ECE
    filled = bins.counts > 0
    assert (
        np.isnan(bins.accuracy[~filled]).all()
        and ((bins.accuracy[filled] >= 0) & (bins.accuracy[filled] <= 1)).all()
    )
    assert (
        bins.confidence[filled] >= bins.edges[:-1][filled] - 1e-12
    ).all()  # mean confidence inside its bin
    assert (bins.confidence[filled] <= bins.edges[1:][filled] + 1e-12).all()

    png = reliability_diagram_png(y, proba, n_bins, title="m v1 test")
    text = _text(png)
    assert float(text["ECE"]) == pytest.approx(ece, abs=1e-6)
    assert text["Title"] == f"m v1 test: ECE = {ece:.4f} ({n_bins} bins, n=400)"
    assert _pixels(png).shape[0] > 300


def test_reliability_diagram_takes_label_strings_and_changes_with_calibration(test_split) -> None:
    y, proba = test_split
    by_name = reliability_diagram_png([LABELS[i] for i in y], proba)
    assert by_name == reliability_diagram_png(y, proba)
    calibrated = np.full_like(proba, 1 / 3)
    other = reliability_diagram_png(y, calibrated)
    assert (_pixels(by_name) != _pixels(other)).any()
    with pytest.raises(ValueError):
        reliability_bins(y, proba[:-1])


def test_loss_curve_png() -> None:
    a = loss_curve_png([(10, 1.1), (20, 0.8), (30, 0.6)], "m v1")
    b = loss_curve_png([(10, 1.1), (20, 1.2), (30, 1.3)], "m v1")
    pa, pb = _pixels(a), _pixels(b)
    assert pa.shape == pb.shape and (pa != pb).any()
    assert _text(a)["Title"] == "m v1: training loss (final 0.6000 at step 30)"
    _pixels(loss_curve_png([(s, 1 / s) for s in range(1, 500)]))  # many points: a line without markers
    with pytest.raises(ValueError):
        loss_curve_png([])


def test_write_model_plots_writes_the_three_files(tmp_path: Path, test_split) -> None:
    y, proba = test_split
    out = write_model_plots(
        tmp_path / "card",
        y_true=y,
        proba=proba,
        loss_history=[(5, 1.0), (10, 0.7)],
        labels=LABELS,
        title="m v2",
    )
    assert out == {
        "confusion_matrix": tmp_path / "card" / CONFUSION_PNG,
        "reliability_diagram": tmp_path / "card" / RELIABILITY_PNG,
        "training_loss": tmp_path / "card" / LOSS_PNG,
    }
    for path in out.values():
        assert path.stat().st_size > 0
        _pixels(path.read_bytes())
    # the confusion matrix drawn from the probabilities is the one `evaluate` reports
    expected = confusion_matrix_png(evaluate(y, proba).confusion, LABELS, "m v2 test n=400")
    assert out["confusion_matrix"].read_bytes() == expected
    # missing inputs: those plots are skipped
    assert write_model_plots(tmp_path / "none") == {}
    assert set(write_model_plots(tmp_path / "loss", loss_history=[(1, 0.5)])) == {"training_loss"}


def test_plots_markdown_embeds_each_png_unchanged(tmp_path: Path, test_split) -> None:
    import base64
    import re

    from nfl_mlops.registry.plots import plots_markdown

    y, proba = test_split
    out = write_model_plots(tmp_path, y_true=y, proba=proba, loss_history=[(5, 1.0), (10, 0.7)], title="m v2")
    md = plots_markdown(out, "m v2")
    embedded = re.findall(r"!\[(\w+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [k for k, _ in embedded] == list(out)
    for kind, data in embedded:
        assert base64.b64decode(data) == out[kind].read_bytes()
    assert md.startswith("# m v2")


def test_log_image_writes_the_png_into_the_offline_run(settings, tmp_path: Path) -> None:
    from nfl_mlops.tracking.experiments import ExperimentTracker, offline_runs

    png = write_model_plots(tmp_path, loss_history=[(1, 1.0), (2, 0.4)])["training_loss"]
    tracker = ExperimentTracker()
    assert tracker.mode == "offline"
    tracker.start("plots-test", job_type="train")
    tracker.log_image("plots/training_loss", png, caption="loss")
    run_id = tracker.tracker_run_id
    with pytest.raises(FileNotFoundError):
        tracker.log_image("plots/missing", tmp_path / "missing.png")
    tracker.finish()

    run_dir = next(p for p in offline_runs(settings) if p.name.endswith(run_id))
    media = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert len(media) == 1, list(run_dir.rglob("*"))
    assert "plots" in media[0].parts and media[0].read_bytes() == png.read_bytes()  # key "plots/..."
    assert b"plots/training_loss" in (run_dir / f"run-{run_id}.wandb").read_bytes()

    disabled = ExperimentTracker(use_wandb=False)
    disabled.start("plots-test-disabled")
    disabled.log_image("plots/training_loss", png)  # without W&B: nothing to log, no error
    disabled.finish()


def test_per_class_f1_beside_the_baseline_follows_the_numbers() -> None:
    from nfl_mlops.registry.plots import per_class_f1_png

    model = {"negative": 0.8, "neutral": 0.5, "positive": 0.7, "macro": 0.67}
    baseline = {"negative": 0.7, "neutral": 0.4, "positive": 0.5, "macro": 0.53}
    png = per_class_f1_png(model, baseline, "v2 test")
    assert _text(png)["Title"] == "v2 test"
    other = per_class_f1_png({**model, "neutral": 0.1}, baseline, "v2 test")
    assert not np.array_equal(_pixels(png), _pixels(other))  # the bars follow the values


def test_drift_severity_reads_each_test_in_its_direction() -> None:
    from nfl_mlops.registry.plots import drift_severity

    assert drift_severity("ks", 0.001, 0.05) == pytest.approx(50.0)  # p-value far below: far past
    assert drift_severity("ks", 0.5, 0.05) == pytest.approx(0.1)
    assert drift_severity("wasserstein", 0.3, 0.1) == pytest.approx(3.0)  # distance above: past
    assert drift_severity("domain_classifier_auc (ratio)", 0.52, 0.56) < 1  # AUC under its threshold
    assert np.isnan(drift_severity("psi", float("nan"), 0.1))


def test_the_drift_chart_counts_the_drifted_signals() -> None:
    from nfl_mlops.monitoring.drift import ColumnDrift
    from nfl_mlops.registry.plots import drift_signals_png

    cols = [
        ColumnDrift("n_words", "num", "wasserstein", 0.4, 0.1, True),
        ColumnDrift("topic", "cat", "jensenshannon", 0.05, 0.1, False),
        ColumnDrift("confidence", "num", "ks", 0.0001, 0.05, True),
    ]
    png = drift_signals_png(cols, "v1 window")
    text = _text(png)
    assert text["Title"] == "v1 window" and text["Drifted"] == "2 of 3"
    calm = drift_signals_png(
        [ColumnDrift(c.column, c.kind, c.method, c.threshold, c.threshold * 2, False) for c in cols]
    )
    assert _text(calm)["Drifted"] == "0 of 3" and not np.array_equal(_pixels(png), _pixels(calm))


def test_write_model_plots_adds_f1_beside_the_baseline_and_the_recent_window(
    tmp_path: Path, test_split
) -> None:
    from nfl_mlops.registry.plots import PER_CLASS_F1_PNG, RECENT_CONFUSION_PNG

    y, proba = test_split
    plots = write_model_plots(
        tmp_path,
        y_true=y,
        proba=proba,
        f1={"negative": 0.8, "neutral": 0.5, "positive": 0.7, "macro": 0.67},
        baseline_f1={"negative": 0.7, "neutral": 0.4, "positive": 0.5, "macro": 0.53},
        recent=(y[:40], proba[:40]),
        title="m v2",
    )
    assert plots["per_class_f1"] == tmp_path / PER_CLASS_F1_PNG
    assert plots["confusion_matrix_recent"] == tmp_path / RECENT_CONFUSION_PNG
    assert "recent window n=40" in _text(plots["confusion_matrix_recent"].read_bytes())["Title"]
    assert "confusion_matrix_recent" not in write_model_plots(
        tmp_path / "b", y_true=y, proba=proba, recent=(y[:0], proba[:0])
    )


def test_the_rollout_chart_follows_the_traffic_steps_and_counts_failed_checks() -> None:
    from nfl_mlops.registry.plots import rollout_png

    def arms(share: float) -> dict:
        return {"stable": {"version": 1, "weight": 100 - share}, "candidate": {"version": 2, "weight": share}}

    history = [
        {"at": "2026-12-06T10:00:00+00:00", "event": "started", "arms": arms(10)},
        {"at": "2026-12-06T10:00:05+00:00", "event": "check", "gates": [{"passed": True}, {"passed": None}]},
        {"at": "2026-12-06T10:00:10+00:00", "event": "step", "arms": arms(50), "gates": [{"passed": True}]},
        {
            "at": "2026-12-06T10:00:20+00:00",
            "event": "promoted",
            "arms": arms(100),
            "gates": [{"passed": True}],
        },
    ]
    good = rollout_png(history, 2, "v2 canary")
    assert _text(good)["Title"] == "v2 canary" and _text(good)["Checks"] == "3 (0 failed)"
    bad = history[:2] + [
        {
            "at": "2026-12-06T10:00:09+00:00",
            "event": "rolled_back",
            "arms": arms(0),
            "gates": [{"passed": False}],
        }
    ]
    png = rollout_png(bad, 2, "v2 canary")
    assert _text(png)["Checks"] == "2 (1 failed)" and not np.array_equal(_pixels(png), _pixels(good))
