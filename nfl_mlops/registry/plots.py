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
PLOT_FILES: dict[str, str] = {
    "confusion_matrix": CONFUSION_PNG,
    "reliability_diagram": RELIABILITY_PNG,
    "training_loss": LOSS_PNG,
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


def loss_curve_png(loss_history: Sequence[tuple[int, float]], title: str = "") -> bytes:
    """The training-loss curve as PNG bytes, from (step, loss) pairs (`TrainResult.losses`: the mean
    loss over each logging interval)."""
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
    ax.set_title(heading)
    return _png(fig, {"Title": heading})


# All three into a model folder


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
) -> dict[str, Path]:
    """Write the model-card plots into `folder`; returns {kind: path} for those written (see PLOT_FILES).

    Args:
        y_true, proba: true classes (ids or label strings) and n x k probabilities of the test split:
            the reliability diagram, and the confusion matrix when `confusion` is not given.
        loss_history: (step, loss) pairs, e.g. `TrainResult.losses`: the training-loss curve.
        confusion: a k x k confusion matrix (rows true) to draw instead of the one from y_true/proba.
        title: prefix of every plot's title, e.g. "nfl-sentiment v3".
        split: the evaluation set y_true/proba/confusion come from (named in their titles).

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
        out["training_loss"].write_bytes(loss_curve_png(loss_history, title))
    return out


def plots_markdown(plots: Mapping[str, Path], title: str = "") -> str:
    """Markdown that shows the plots inline (base64 data URIs), e.g. for a Prefect artifact."""
    import base64

    names = {
        "confusion_matrix": "Confusion matrix (test split)",
        "reliability_diagram": "Reliability diagram",
        "training_loss": "Training loss",
    }
    lines = [f"# {title}" if title else "# Model plots", ""]
    for kind, path in plots.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        lines += [f"## {names.get(kind, kind)}", "", f"![{kind}](data:image/png;base64,{data})", ""]
    return "\n".join(lines)
