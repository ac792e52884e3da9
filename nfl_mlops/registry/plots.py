"""Model-card plots drawn with matplotlib (Agg, no display): confusion matrix, reliability diagram, loss curve.

Every `*_png` function returns PNG bytes; `write_model_plots` writes the three of them into a model
folder under the fixed file names below, which the model card (`registry/card.py`) embeds. matplotlib
is imported inside the functions, so importing this module costs nothing.

The PNGs carry their title (and, for the reliability diagram, the ECE) as PNG text chunks, so a
reader can check what an image shows without looking at its pixels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nfl_mlops import LABELS

CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability_diagram.png"
LOSS_PNG = "training_loss.png"
PER_CLASS_F1_PNG = "per_class_f1.png"
RECENT_CONFUSION_PNG = "confusion_matrix_recent.png"
PLOT_FILES: dict[str, str] = {
    "confusion_matrix": CONFUSION_PNG,
    "reliability_diagram": RELIABILITY_PNG,
    "training_loss": LOSS_PNG,
    "per_class_f1": PER_CLASS_F1_PNG,
    "confusion_matrix_recent": RECENT_CONFUSION_PNG,
}
"""Plot kind -> file name inside a model folder (the keys `write_model_plots` returns)."""

DPI = 100


def _new_figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas (no pyplot: no global state, safe in worker threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any, metadata: Mapping[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(
        buf, format="png", dpi=DPI, metadata={"Software": "nfl-mlops (matplotlib)", **(metadata or {})}
    )
    return buf.getvalue()


def _class_ids(y_true: Sequence[Any] | np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Class ids (ints) from ids or from label strings (their index in `labels`)."""
    values = list(y_true)
    if values and isinstance(values[0], str):
        index = {name: i for i, name in enumerate(labels)}
        return np.asarray([index[v] for v in values], dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def _checked_proba(y: np.ndarray, proba: Any) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise ValueError(f"need an n x k probability array for n={len(y)} > 0 labels (got shape {p.shape})")
    return p


# Confusion matrix


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> bytes:
    """A confusion matrix (rows true, columns predicted) as PNG bytes.

    Cells are shaded by their row share (recall) and show the count and the percentage of the row.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    k = len(labels)
    if cm.shape != (k, k):
        raise ValueError(f"matrix shape {cm.shape} does not match {k} labels")
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)

    fig = _new_figure(1.6 + 1.3 * k, 1.2 + 1.2 * k)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{100 * share[i, j]:.0f}%",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=11,
            )
    ax.set_xticks(range(k), labels=list(labels))
    ax.set_yticks(range(k), labels=list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if title:
        ax.set_title(title)
    return _png(fig, {"Title": title or "confusion matrix"})


# Reliability diagram


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label calibration in equal-width confidence bins (the binning of `metrics.expected_calibration_error`).

    `confidence` and `accuracy` are NaN in empty bins; `ece` is sum(count/n * |accuracy - confidence|).
    """

    edges: np.ndarray  # n_bins + 1 bin edges over [0, 1]
    counts: np.ndarray  # rows per bin
    confidence: np.ndarray  # mean top-class probability per bin
    accuracy: np.ndarray  # share of rows whose top class is the true class, per bin
    ece: float

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def reliability_bins(
    y_true: Sequence[Any] | np.ndarray, proba: Any, n_bins: int = 10, labels: Sequence[str] = LABELS
) -> ReliabilityBins:
    """Confidence vs. accuracy per bin of the top-class probability.

    Args:
        y_true: true classes, as ids or as label strings (their index in `labels`).
        proba: n x k class probabilities.
    """
    y = _class_ids(y_true, labels)
    p = _checked_proba(y, proba)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    which = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(y) * np.abs(accuracy[filled] - mean_conf[filled])))
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), counts, mean_conf, accuracy, ece)


def reliability_diagram_png(
    y_true: Sequence[Any] | np.ndarray,
    proba: Any,
    n_bins: int = 10,
    title: str = "",
    labels: Sequence[str] = LABELS,
) -> bytes:
    """A reliability diagram as PNG bytes: accuracy vs. confidence per bin over the diagonal, ECE in the
    title, and the rows per bin below (the PNG's text chunk `ECE` holds the value, to 6 decimals)."""
    bins = reliability_bins(y_true, proba, n_bins, labels)
    width = 1.0 / n_bins
    centers = bins.edges[:-1] + width / 2
    filled = bins.counts > 0
    heading = f"{title + ': ' if title else ''}ECE = {bins.ece:.4f} ({n_bins} bins, n={bins.n})"

    fig = _new_figure(6.0, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(
        centers[filled],
        bins.accuracy[filled],
        width=width,
        edgecolor="black",
        color="#4c72b0",
        label="accuracy",
    )
    gap_low = np.minimum(bins.accuracy[filled], bins.confidence[filled])
    top.bar(
        centers[filled],
        np.abs(bins.accuracy[filled] - bins.confidence[filled]),
        bottom=gap_low,
        width=width,
        color="#dd8452",
        alpha=0.5,
        hatch="//",
        label="gap to mean confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(heading)
    top.legend(loc="upper left")
    bottom.bar(centers, bins.counts, width=width, edgecolor="black", color="#8c8c8c")
    for x, c in zip(centers, bins.counts, strict=True):
        if c:
            bottom.annotate(str(int(c)), (x, c), ha="center", va="bottom", fontsize=8)
    bottom.set_ylim(0, max(1, int(bins.counts.max())) * 1.25)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("rows")
    return _png(fig, {"Title": heading, "ECE": f"{bins.ece:.6f}"})


# Training loss


def loss_curve_png(
    loss_history: Sequence[tuple[int, float]],
    title: str = "",
    val_history: Sequence[Mapping[str, float]] | None = None,
    best_step: int | None = None,
) -> bytes:
    """The training-loss curve as PNG bytes, from (step, loss) pairs (`TrainResult.losses`: the mean
    loss over each logging interval), with the validation macro-F1 on a second axis when given
    (`TrainResult.val_curve`) and the kept checkpoint marked, so the card shows why that step was saved."""
    pairs = [(int(s), float(v)) for s, v in loss_history]
    if not pairs:
        raise ValueError("empty loss history")
    steps, losses = zip(*pairs, strict=True)
    heading = f"{title + ': ' if title else ''}training loss (final {losses[-1]:.4f} at step {steps[-1]})"

    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.plot(steps, losses, marker="o" if len(pairs) <= 50 else None, markersize=3, color="#4c72b0")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (mean over the logging interval)")
    ax.grid(True, alpha=0.3)
    metadata = {}
    if val_history:
        val_steps = [int(p["step"]) for p in val_history]
        f1 = [float(p["macro_f1"]) for p in val_history]
        right = ax.twinx()
        right.plot(val_steps, f1, marker="s", markersize=4, color="#dd8452", label="validation macro-F1")
        right.set_ylabel("validation macro-F1", color="#dd8452")
        if best_step is not None and best_step in val_steps:
            best = f1[val_steps.index(best_step)]
            right.axvline(best_step, color="#dd8452", linestyle=":", alpha=0.7)
            heading += f"\nkept step {best_step}: validation macro-F1 {best:.4f}"
            metadata["Best-Step"] = str(best_step)
    ax.set_title(heading)
    return _png(fig, {"Title": heading, **metadata})


# Per-class F1 beside the baseline


def per_class_f1_png(
    model: Mapping[str, float], baseline: Mapping[str, float], title: str = "", labels: Sequence[str] = LABELS
) -> bytes:
    """F1 per class (and macro, under the key "macro") of the model beside the TF-IDF baseline's."""
    keys = [k for k in (*labels, "macro") if k in model]
    x = np.arange(len(keys))
    fig = _new_figure(1.8 + 1.2 * len(keys), 3.6)
    ax = fig.add_subplot()
    width = 0.38
    for offset, (name, values, color) in enumerate(
        (("model", model, "#1f77b4"), ("TF-IDF baseline", baseline, "#bbbbbb"))
    ):
        heights = [float(values.get(k, np.nan)) for k in keys]
        bars = ax.bar(x + (offset - 0.5) * width, heights, width, label=name, color=color)
        for bar, h in zip(bars, heights, strict=True):
            if np.isfinite(h):
                ax.text(bar.get_x() + bar.get_width() / 2, h + 0.01, f"{h:.2f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels=keys)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("F1")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "F1 per class")
    return _png(fig, {"Title": title or "F1 per class"})


# Drift per signal

P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "t_test", "fisher_exact", "anderson", "cramer_von_mises", "mannw", "g_test"}
)
"""Evidently's tests whose score is a p-value (drift when it falls below the threshold); the others are
distances or AUCs (drift when they rise above it)."""


def drift_severity(method: str, score: float, threshold: float) -> float:
    """How far a signal is past its threshold: > 1 drifted, < 1 not, whatever the test's direction."""
    base = method.split(" ")[0].split("(")[0].strip()
    if not (np.isfinite(score) and np.isfinite(threshold)) or threshold <= 0:
        return float("nan")
    if base in P_VALUE_METHODS:
        return float(threshold / max(score, 1e-12))
    return float(score / threshold)


def drift_signals_png(columns: Sequence[Any], title: str = "") -> bytes:
    """One bar per signal: its score relative to its threshold (log scale, 1 = the threshold), red when
    the check counted it as drifted. `columns` are `ColumnDrift`s (column, method, score, threshold,
    drifted)."""
    rows = [
        (c.column, c.method, drift_severity(c.method, c.score, c.threshold), bool(c.drifted)) for c in columns
    ]
    rows.sort(key=lambda r: -np.nan_to_num(r[2], nan=0.0))
    fig = _new_figure(7.0, 1.2 + 0.32 * max(len(rows), 1))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    values = np.clip([np.nan_to_num(r[2], nan=1e-2) for r in rows], 1e-2, 1e2)
    ax.barh(y, values, color=["#d62728" if r[3] else "#2ca02c" for r in rows], left=0)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlim(1e-2, 1e2)
    ax.set_yticks(y, labels=[f"{r[0]} ({r[1].split(' ')[0]})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("score relative to its threshold (past 1 = drifted; p-value tests inverted)")
    ax.set_title(title or "drift per signal")
    drifted = sum(r[3] for r in rows)
    return _png(fig, {"Title": title or "drift per signal", "Drifted": f"{drifted} of {len(rows)}"})


# A rollout's traffic steps and gate checks


def rollout_png(history: Sequence[Mapping[str, Any]], version: int, title: str = "") -> bytes:
    """The candidate's share of live traffic over a rollout (a step line) and each gate check on it
    (green: every gate passed, red: one failed, grey: not enough data yet). `history` is the rollout's
    history (`at` ISO times, `arms` with version/weight/shadow, `gates` with `passed`)."""
    from datetime import datetime

    times, shares, checks = [], [], []
    share = 0.0
    for h in history:
        try:
            at = datetime.fromisoformat(str(h.get("at")))
        except ValueError:
            continue
        arms = h.get("arms") or {}
        if arms:
            share = sum(
                float(a.get("weight", 0.0))
                for a in arms.values()
                if int(a.get("version", -1)) == int(version) and not a.get("shadow")
            )
        times.append(at)
        shares.append(share)
        gates = [g.get("passed") for g in h.get("gates") or []]
        if gates:
            state = "fail" if False in gates else "wait" if None in gates else "pass"
            checks.append((at, share, state))
    fig = _new_figure(7.0, 3.2)
    ax = fig.add_subplot()
    if times:
        t0 = times[0]
        x = [(t - t0).total_seconds() for t in times]
        ax.step(x, shares, where="post", color="#1f77b4", label=f"v{version} share of live traffic")
        colors = {"pass": "#2ca02c", "fail": "#d62728", "wait": "#999999"}
        for state in ("pass", "wait", "fail"):
            pts = [((at - t0).total_seconds(), y) for at, y, s in checks if s == state]
            if pts:
                ax.scatter(
                    *zip(*pts, strict=True), color=colors[state], zorder=3, s=18, label=f"gate check: {state}"
                )
        ax.legend(loc="center right", fontsize=8)
    ax.set_ylim(-5, 105)
    ax.set_xlabel("seconds since the rollout started")
    ax.set_ylabel("% of live traffic")
    ax.set_title(title or f"rollout of v{version}")
    failed = sum(1 for *_, s in checks if s == "fail")
    return _png(
        fig, {"Title": title or f"rollout of v{version}", "Checks": f"{len(checks)} ({failed} failed)"}
    )


# All of them into a model folder


def write_model_plots(
    folder: Path | str,
    *,
    y_true: Sequence[Any] | np.ndarray | None = None,
    proba: Any = None,
    loss_history: Sequence[tuple[int, float]] | None = None,
    labels: Sequence[str] = LABELS,
    confusion: Sequence[Sequence[int]] | None = None,
    title: str = "",
    split: str = "test",
    n_bins: int = 10,
    f1: Mapping[str, float] | None = None,
    baseline_f1: Mapping[str, float] | None = None,
    recent: tuple[Sequence[Any], Any] | None = None,
    val_history: Sequence[Mapping[str, float]] | None = None,
    best_step: int | None = None,
) -> dict[str, Path]:
    """Write the model-card plots into `folder`; returns {kind: path} for those written (see PLOT_FILES).

    Args:
        y_true, proba: true classes (ids or label strings) and n x k probabilities of the test split:
            the reliability diagram, and the confusion matrix when `confusion` is not given.
        loss_history: (step, loss) pairs, e.g. `TrainResult.losses`: the training-loss curve.
        val_history, best_step: `TrainResult.val_curve` and `.best_step`, drawn on the loss plot.
        confusion: a k x k confusion matrix (rows true) to draw instead of the one from y_true/proba.
        title: prefix of every plot's title, e.g. "nfl-sentiment v3".
        split: the evaluation set y_true/proba/confusion come from (named in their titles).
        f1, baseline_f1: F1 per class (and "macro") of the model and of the TF-IDF baseline on `split`.
        recent: (true classes, probabilities) of the recent window (e.g. the drifted NFL feedback): its own
            confusion matrix.

    A plot whose inputs are missing (None or empty) is skipped, not drawn empty.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    on_split = " ".join(x for x in (title, split) if x)
    have_proba = y_true is not None and proba is not None and len(y_true) > 0
    out: dict[str, Path] = {}
    if confusion is None and have_proba:
        assert y_true is not None  # have_proba
        y = _class_ids(y_true, labels)
        pred = _checked_proba(y, proba).argmax(axis=1)
        cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        confusion = cm.tolist()
    if confusion is not None:
        n = int(np.asarray(confusion).sum())
        out["confusion_matrix"] = folder / CONFUSION_PNG
        out["confusion_matrix"].write_bytes(
            confusion_matrix_png(confusion, labels, f"{on_split} n={n}".strip())
        )
    if have_proba:
        assert y_true is not None  # have_proba
        out["reliability_diagram"] = folder / RELIABILITY_PNG
        out["reliability_diagram"].write_bytes(
            reliability_diagram_png(y_true, proba, n_bins, on_split, labels)
        )
    if loss_history:
        out["training_loss"] = folder / LOSS_PNG
        out["training_loss"].write_bytes(loss_curve_png(loss_history, title, val_history, best_step))
    if f1 and baseline_f1:
        out["per_class_f1"] = folder / PER_CLASS_F1_PNG
        out["per_class_f1"].write_bytes(
            per_class_f1_png(f1, baseline_f1, f"{on_split} F1 beside the baseline")
        )
    if recent is not None and len(recent[0]) > 0:
        y = _class_ids(recent[0], labels)
        pred = _checked_proba(y, recent[1]).argmax(axis=1)
        cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        out["confusion_matrix_recent"] = folder / RECENT_CONFUSION_PNG
        out["confusion_matrix_recent"].write_bytes(
            confusion_matrix_png(cm.tolist(), labels, f"{title} recent window n={len(y)}".strip())
        )
    return out


def plots_markdown(plots: Mapping[str, Path], title: str = "") -> str:
    """Markdown that shows the plots inline (base64 data URIs), e.g. for a Prefect artifact."""
    import base64

    names = {
        "confusion_matrix": "Confusion matrix (test split)",
        "reliability_diagram": "Reliability diagram",
        "training_loss": "Training loss",
        "per_class_f1": "F1 per class beside the TF-IDF baseline (test split)",
        "confusion_matrix_recent": "Confusion matrix (recent window)",
        "drift_signals": "Drift per signal",
    }
    lines = [f"# {title}" if title else "# Model plots", ""]
    for kind, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        lines += [f"## {names.get(kind, kind)}", "", f"![{kind}](data:image/png;base64,{data})", ""]
    return "\n".join(lines)
