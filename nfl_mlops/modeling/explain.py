"""Explanations by occlusion: how much each word of a text holds up the label the model gives it.

Occlusion asks the model itself: drop one word (a word-level piece: a word, an @mention, a #hashtag,
a URL, a run of punctuation or emoji) and see how far the probability of the predicted class falls.
It needs nothing but a `predict_proba(texts) -> (n x 3)` function, so one implementation explains a
version on every serving backend (torch, ONNX fp32, ONNX int8) exactly as that backend scores it;
gradient methods would need torch weights and would explain a different runtime than the one serving.
All occluded variants of a text go through the model together (one call, batched by the runtime).

Attribution of a piece = p(label | text) - p(label | text without the piece), where `label` is the
class predicted for the whole text: positive when the piece supports the label, negative when it pulls
against it. Pieces beyond the model's `max_length` tokens are never seen by it and score 0.

Also here: the most confident mistakes on a test split, explained, for the model card and the tracker.
Plain functions, no framework imports at module level; numpy only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nfl_mlops import LABELS

PredictProba = Callable[[Sequence[str]], Any]
"""Texts -> class probabilities (n x len(LABELS)), in `LABELS` order: `SentimentModel.predict_proba`."""

PIECE_PATTERN = re.compile(r"https?://\S+|[@#]?\w+(?:['’]\w+)*|[^\w\s]+")
"""A word-level piece: a URL, a word (with its @ or # and inner apostrophes: "don't"), or a run of
punctuation/emoji ("!!!"). Every non-space character of a text falls in exactly one piece."""

MAX_PIECES = 128
"""Most pieces one text is explained over: each costs one more text through the model (a tweet has
about 20; the model reads at most `max_length` tokens anyway). The API answers 413 above it."""

EXPLAINED_MISTAKES_FILE = "explained_mistakes.json"
"""Written into a model folder at training time (`save_explained_mistakes`); registration copies the
folder and the model card renders it (`registry.card`)."""

TOP_PIECES = 3
"""Pieces shown per explained mistake (the card's table, the tracker's table)."""


@dataclass(frozen=True)
class Piece:
    """A word-level piece of a text: `text[start:end] == token`."""

    token: str
    start: int
    end: int


@dataclass(frozen=True)
class TokenAttribution:
    token: str
    start: int
    end: int
    attribution: float
    """p(label | text) - p(label | text without this piece)."""


@dataclass(frozen=True)
class Explanation:
    """Why the model gave `text` its `label`: one attribution per piece, in text order."""

    text: str
    label: str
    probabilities: dict[str, float]
    tokens: list[TokenAttribution]
    method: str = "occlusion"

    def top(self, n: int = TOP_PIECES) -> list[TokenAttribution]:
        """The `n` pieces that support the label most (largest attribution first; ties in text order)."""
        return sorted(self.tokens, key=lambda t: -t.attribution)[:n]


class TooManyPieces(ValueError):
    """The text has more pieces than an explanation is computed over (`MAX_PIECES`)."""


def word_pieces(text: str) -> list[Piece]:
    """The word-level pieces of `text` with their character offsets (`PIECE_PATTERN`)."""
    return [Piece(m.group(), m.start(), m.end()) for m in PIECE_PATTERN.finditer(text)]


def occluded_texts(text: str, pieces: Sequence[Piece], replacement: str = "") -> list[str]:
    """`text` once without each piece (replaced by `replacement`; the default drops it: no backend needs a
    mask token, and the tokenizers ignore the doubled space left behind)."""
    return [text[: p.start] + replacement + text[p.end :] for p in pieces]


def occlusion_inputs(
    text: str, max_pieces: int = MAX_PIECES, replacement: str = ""
) -> tuple[list[Piece], list[str]]:
    """The pieces of `text` and the texts to score for them: `[text, *occluded]` (row 0 is the full text).

    Raises:
        ValueError: `text` has no piece (empty or only whitespace).
        TooManyPieces: more than `max_pieces` pieces.
    """
    pieces = word_pieces(text)
    if not pieces:
        raise ValueError("text must not be empty or only whitespace")
    if len(pieces) > max_pieces:
        raise TooManyPieces(
            f"text has {len(pieces)} words; explanations are computed for at most {max_pieces}"
        )
    return pieces, [text, *occluded_texts(text, pieces, replacement)]


def explanation_from(text: str, pieces: Sequence[Piece], proba: Any) -> Explanation:
    """The explanation of `text` from the probabilities of `[text, *occluded]` (`occlusion_inputs`)."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (len(pieces) + 1, len(LABELS)):
        raise ValueError(
            f"expected probabilities of shape {(len(pieces) + 1, len(LABELS))}, got {proba.shape}"
        )
    if not np.isfinite(proba).all():
        raise ValueError("the model returned non-finite probabilities")
    c = int(proba[0].argmax())
    drops = proba[0, c] - proba[1:, c]
    return Explanation(
        text=text,
        label=LABELS[c],
        probabilities={name: float(p) for name, p in zip(LABELS, proba[0], strict=True)},
        tokens=[
            TokenAttribution(p.token, p.start, p.end, float(d)) for p, d in zip(pieces, drops, strict=True)
        ],
    )


def explain(
    text: str, predict_proba: PredictProba, max_pieces: int = MAX_PIECES, replacement: str = ""
) -> Explanation:
    """Per-piece occlusion attributions of `text` under `predict_proba`, in one call to it."""
    pieces, texts = occlusion_inputs(text, max_pieces, replacement)
    return explanation_from(text, pieces, predict_proba(texts))


def explain_many(
    texts: Sequence[str], predict_proba: PredictProba, max_pieces: int = MAX_PIECES
) -> list[Explanation]:
    """`explain` for several texts with one call to `predict_proba` (all their variants together)."""
    inputs = [occlusion_inputs(t, max_pieces) for t in texts]
    flat = [v for _, variants in inputs for v in variants]
    proba = np.asarray(predict_proba(flat)) if flat else np.zeros((0, len(LABELS)))
    out, at = [], 0
    for text, (pieces, variants) in zip(texts, inputs, strict=True):
        out.append(explanation_from(text, pieces, proba[at : at + len(variants)]))
        at += len(variants)
    return out


# Most confident mistakes
@dataclass(frozen=True)
class ExplainedMistake:
    index: int
    """Row of the evaluation split."""
    text: str
    true: str
    predicted: str
    confidence: float
    top: list[TokenAttribution]
    """The pieces that held up the wrong label most."""


@dataclass(frozen=True)
class ExplainedMistakes:
    """The `k` test rows the model got wrong with the highest confidence, each with its top pieces."""

    split: str
    n_rows: int
    n_mistakes: int
    mistakes: list[ExplainedMistake] = field(default_factory=list)

    columns: ClassVar[tuple[str, ...]] = ("text", "true", "predicted", "confidence", "top_words")

    def rows(self) -> list[list[Any]]:
        """One row per mistake under `columns` (a W&B table, a Prefect table artifact)."""
        return [
            [m.text, m.true, m.predicted, round(m.confidence, 4), _top_words(m.top)] for m in self.mistakes
        ]

    def markdown(self, heading: str = "## Most confident mistakes, explained") -> str:
        """A markdown section: what the table shows, then one row per mistake with its top words."""
        lines = [heading, ""]
        if not self.mistakes:
            lines.append(f"No mistakes on the {self.split} split ({self.n_rows} rows).")
            return "\n".join(lines)
        lines += [
            f"The {len(self.mistakes)} rows of the {self.split} split ({self.n_mistakes} mistakes in "
            f"{self.n_rows} rows) that the model got wrong with the highest confidence. The words are those "
            "whose removal lowers the probability of the wrong label most (occlusion; the number is that "
            "drop); they are in **bold** in the text.",
            "",
            "| # | text | true | predicted | confidence | words that drove it |",
            "|---|---|---|---|---|---|",
        ]
        for i, m in enumerate(self.mistakes, 1):
            lines.append(
                f"| {i} | {_bold_pieces(m.text, m.top)} | {m.true} | {m.predicted} | {m.confidence:.3f} | "
                f"{_md(_top_words(m.top))} |"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "n_rows": self.n_rows,
            "n_mistakes": self.n_mistakes,
            "mistakes": [asdict(m) for m in self.mistakes],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExplainedMistakes:
        return cls(
            split=str(data["split"]),
            n_rows=int(data["n_rows"]),
            n_mistakes=int(data["n_mistakes"]),
            mistakes=[
                ExplainedMistake(
                    index=int(m["index"]),
                    text=str(m["text"]),
                    true=str(m["true"]),
                    predicted=str(m["predicted"]),
                    confidence=float(m["confidence"]),
                    top=[TokenAttribution(**t) for t in m["top"]],
                )
                for m in data["mistakes"]
            ],
        )


def explain_mistakes(
    texts: Sequence[str],
    labels: Sequence[str],
    proba: Any,
    predict_proba: PredictProba,
    k: int = 5,
    predictions: Sequence[str] | None = None,
    split: str = "test",
    top: int = TOP_PIECES,
) -> ExplainedMistakes:
    """The `k` most confident mistakes among `texts`, each explained by occlusion under `predict_proba`.

    Args:
        proba: the model's probabilities of `texts` (n x 3), as evaluation computed them: they pick the
            mistakes and rank them by confidence, without scoring the split again.
        predictions: the predicted labels, when not the argmax of `proba`.
        predict_proba: the same model, for the occluded variants of the `k` texts (one call).
    """
    proba = np.asarray(proba, dtype=np.float64)
    if len(texts) != len(labels) or proba.shape != (len(texts), len(LABELS)):
        raise ValueError(
            f"{len(texts)} texts, {len(labels)} labels and probabilities of shape {proba.shape} do not match"
        )
    predicted = (
        list(predictions) if predictions is not None else [LABELS[int(i)] for i in proba.argmax(axis=1)]
    )
    confidence = proba.max(axis=1) if len(texts) else np.zeros(0)
    wrong = [i for i in range(len(texts)) if predicted[i] != labels[i] and word_pieces(texts[i])]
    # most confident first; ties by row, so the choice is reproducible
    chosen = sorted(wrong, key=lambda i: (-confidence[i], i))[: max(0, k)]
    explained = explain_many([texts[i] for i in chosen], predict_proba, max_pieces=10**6)
    return ExplainedMistakes(
        split=split,
        n_rows=len(texts),
        n_mistakes=len(wrong),
        mistakes=[
            ExplainedMistake(
                index=i,
                text=texts[i],
                true=str(labels[i]),
                predicted=predicted[i],
                confidence=float(confidence[i]),
                top=e.top(top),
            )
            for i, e in zip(chosen, explained, strict=True)
        ],
    )


def save_explained_mistakes(folder: Path | str, explained: ExplainedMistakes) -> Path:
    """Write `explained` into a model folder (`EXPLAINED_MISTAKES_FILE`), where the model card finds it."""
    path = Path(folder) / EXPLAINED_MISTAKES_FILE
    path.write_text(json.dumps(explained.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def load_explained_mistakes(folder: Path | str) -> ExplainedMistakes | None:
    """The explained mistakes saved in a model folder; None when there are none (or the file is unreadable:
    a card is still written without the section)."""
    path = Path(folder) / EXPLAINED_MISTAKES_FILE
    if not path.is_file():
        return None
    try:
        return ExplainedMistakes.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError):
        return None


def explain_test_mistakes(
    model_dir: Path | str, texts: Sequence[str], labels: Sequence[str], proba: Any, k: int = 5
) -> ExplainedMistakes:
    """Training's hook: explain the `k` most confident test mistakes of the model in `model_dir` and save them
    beside its weights (so the registered version's card shows them); returns them for the tracker."""
    from nfl_mlops.modeling.predictor import SentimentModel

    model = SentimentModel.load(model_dir)
    explained = explain_mistakes(texts, labels, proba, model.predict_proba, k=k)
    save_explained_mistakes(model_dir, explained)
    return explained


def _top_words(top: Sequence[TokenAttribution]) -> str:
    return ", ".join(f"{t.token} ({t.attribution:+.3f})" for t in top)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#!])")


def _md(text: str) -> str:
    """`text` safe inside a markdown table cell (no markup, no HTML, one line)."""
    return _MD_SPECIAL.sub(r"\\\1", re.sub(r"\s+", " ", text))


def _bold_pieces(text: str, top: Sequence[TokenAttribution]) -> str:
    """`text` for a table cell with the `top` pieces (those that hold up the label) in bold."""
    marked = sorted((t for t in top if t.attribution > 0), key=lambda t: t.start)
    out, at = [], 0
    for t in marked:
        out += [_md(text[at : t.start]), f"**{_md(text[t.start : t.end])}**"]
        at = t.end
    out.append(_md(text[at:]))
    return "".join(out).strip()
