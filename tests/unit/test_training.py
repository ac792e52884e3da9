"""Fine-tuning with a validation split: scores during training, early stopping, the best weights saved.

The runs are real (the packaged MiniLM on a few corpus tweets, a dozen steps each), so the loop, the
restore of the best state dict and the save are the ones the training flow uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BASE = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def rows():
    """96 training and 64 validation tweets (no NFL), fixed by the seed."""
    from nfl_mlops.data import load_corpus, prepare, select

    chosen = select(prepare(load_corpus()), topics_exclude=["nfl"], max_rows=160, seed=3)
    return chosen.iloc[:96], chosen.iloc[96:]


def _train(rows, out: Path, on_log=None, with_val: bool = True, **params):
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.train import fine_tune

    train, val = rows
    return fine_tune(
        train["text"].tolist(),
        train["label"].tolist(),
        TrainParams(batch_size=16, max_length=32, **params),
        out,
        base_model=BASE,
        on_log=on_log,
        val_texts=val["text"].tolist() if with_val else None,
        val_labels=val["label"].tolist() if with_val else None,
    )


def test_the_patience_counts_scores_that_fail_to_beat_the_best() -> None:
    from nfl_mlops.modeling.train import EarlyStopping, eval_interval

    stop = EarlyStopping(patience=2)
    assert [stop.update(s) for s in (0.5, 0.6, 0.6, 0.7, 0.65)] == [True, True, False, True, False]
    assert not stop.should_stop and stop.best == 0.7
    stop.update(0.69)  # a second score in a row below the best
    assert stop.should_stop
    never = EarlyStopping(patience=None)
    for s in (0.5, 0.4, 0.3, 0.2):
        never.update(s)
    assert not never.should_stop and never.best == 0.5
    assert eval_interval(0.5, 769) == 384 and eval_interval(0.25, 6) == 2 and eval_interval(0.01, 6) == 1


def test_training_stops_early_when_the_validation_macro_f1_stops_improving(rows, tmp_path: Path) -> None:
    # a learning rate this small leaves the predictions unchanged: the score never strictly improves
    logged: list[tuple[int, dict[str, float]]] = []
    r = _train(
        rows,
        tmp_path,
        on_log=lambda step, values: logged.append((step, values)),
        epochs=3,
        learning_rate=1e-12,
        eval_every=1 / 6,  # every step (6 steps an epoch)
        early_stopping_patience=1,
    )
    assert r.planned_steps == 18
    assert r.stopped_early and r.steps == 2 < r.planned_steps
    assert [p["step"] for p in r.val_curve] == [1, 2]
    assert r.val_curve[1]["macro_f1"] == r.val_curve[0]["macro_f1"]
    assert r.best_step == 1
    val_logs = [(s, v) for s, v in logged if "val/macro_f1" in v]
    assert [s for s, _ in val_logs] == [1, 2]
    assert {"val/loss", "val/accuracy", "val/f1_positive", "epoch"} <= set(val_logs[0][1])
    assert logged[-1] == (2, {"val/best_macro_f1": r.val_curve[0]["macro_f1"], "val/best_step": 1.0})
    assert (tmp_path / "model.safetensors").exists()


def test_the_saved_model_is_the_best_checkpoint_not_the_last(rows, tmp_path: Path) -> None:
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.predictor import SentimentModel

    # a learning rate this high overshoots: the score at step 6 is the best, the later ones fall back
    r = _train(
        rows,
        tmp_path,
        epochs=3,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        eval_every=0.5,
        early_stopping_patience=None,
    )
    curve = [p["macro_f1"] for p in r.val_curve]
    assert [p["step"] for p in r.val_curve] == [3, 6, 9, 12, 15, 18] and r.steps == 18 and not r.stopped_early
    assert curve[-1] < max(curve), f"the run this test needs ends below its best: {curve}"
    best = max(range(len(curve)), key=lambda i: curve[i])  # the first of equal scores
    assert r.best_step == r.val_curve[best]["step"] and r.best_val_macro_f1 == max(curve)

    _, val = rows
    saved = evaluate(val["label"].tolist(), SentimentModel.load(tmp_path).predict_proba(val["text"].tolist()))
    assert saved.macro_f1 == pytest.approx(max(curve), abs=1e-9)
    assert saved.macro_f1 != pytest.approx(curve[-1], abs=1e-9)


def test_without_validation_rows_every_step_runs_and_the_last_weights_are_saved(rows, tmp_path: Path) -> None:
    r = _train(rows, tmp_path, with_val=False, epochs=2 / 6, learning_rate=1e-12)
    assert r.steps == r.planned_steps == 2
    assert r.val_curve == [] and r.best_step is None and r.best_val_macro_f1 is None and not r.stopped_early


def test_the_loss_plot_shows_the_validation_curve_and_the_kept_step() -> None:
    import io

    from PIL import Image

    from nfl_mlops.registry.plots import loss_curve_png

    curve = [{"step": 5, "macro_f1": 0.61}, {"step": 10, "macro_f1": 0.74}, {"step": 15, "macro_f1": 0.70}]
    png = Image.open(io.BytesIO(loss_curve_png([(5, 1.1), (10, 0.8), (15, 0.7)], "v1", curve, best_step=10)))
    assert png.text["Best-Step"] == "10" and "validation macro-F1 0.7400" in png.text["Title"]
    plain = Image.open(io.BytesIO(loss_curve_png([(5, 1.1), (10, 0.8)], "v1")))
    assert "Best-Step" not in plain.text
