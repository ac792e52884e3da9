"""Text features for the feature store and for drift monitoring.

Cheap, interpretable per-tweet statistics (length, hashtags, mentions, URLs, NFL entities,
shouting, out-of-vocabulary share) plus the keyword topic. They are computed with Arrow compute
kernels (RE2 regexes) on whole columns, so 100k texts take a fraction of a second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nfl_mlops.data.corpus import as_text_series, topics_of

_NFL_TEAMS = (
    "cardinals",
    "falcons",
    "ravens",
    "bills",
    "panthers",
    "bears",
    "bengals",
    "browns",
    "cowboys",
    "broncos",
    "lions",
    "packers",
    "texans",
    "colts",
    "jaguars",
    "jags",
    "chiefs",
    "chargers",
    "rams",
    "dolphins",
    "vikings",
    "patriots",
    "pats",
    "saints",
    "giants",
    "jets",
    "raiders",
    "eagles",
    "steelers",
    "49ers",
    "niners",
    "seahawks",
    "buccaneers",
    "bucs",
    "titans",
    "redskins",
    "commanders",
)
_NFL_PEOPLE = (
    "brady",
    "belichick",
    "manning",
    "wilson",
    "lynch",
    "gronk",
    "gronkowski",
    "goodell",
    "edelman",
    "revis",
    "sherman",
    "carroll",
    "kraft",
    "blount",
    "amendola",
    "butler",
    "brees",
    "rodgers",
    "andrew luck",
    "mcnally",
    "jastremski",
    "ted wells",
    "wells report",
)
_NFL_TERMS = (
    "nfl",
    "super ?bowl",
    "sb ?49",
    "sb ?xlix",
    "deflate ?gate",
    "deflated",
    "deflating",
    "afc",
    "nfc",
    "touchdown",
    "quarterback",
    "qb",
)

NFL_ENTITY_RE: re.Pattern[str] = re.compile(
    r"\b(?:" + "|".join((*_NFL_TEAMS, *_NFL_PEOPLE, *_NFL_TERMS)) + r")\b", re.ASCII | re.IGNORECASE
)
"""NFL team nicknames, players/coaches/officials of the 2014-15 season, and NFL terms (SB49, DeflateGate)."""

FEATURE_COLUMNS: tuple[str, ...] = (
    "n_chars",
    "n_words",
    "n_hashtags",
    "n_mentions",
    "n_urls",
    "n_nfl_entities",
    "n_exclaims",
    "upper_share",
    "oov_share",
)
"""Numeric feature columns, in output order (`topic` follows them)."""

_URL = r"https?://\S+|www\.\S+"
_MENTION = r"@\w+"
_HASHTAG = r"#\w+"

_URL_RE = re.compile(_URL, re.ASCII)
_MENTION_RE = re.compile(_MENTION, re.ASCII)
_TOKEN_RE = re.compile(r"[a-z0-9_]+")

# Byte classes. In UTF-8 every byte of a multi-byte character is >= 0x80, so counting ASCII
# classes byte by byte is exact.
_ASCII = np.arange(256)
_IS_LETTER = ((_ASCII >= ord("a")) & (_ASCII <= ord("z"))) | ((_ASCII >= ord("A")) & (_ASCII <= ord("Z")))
_IS_UPPER = (_ASCII >= ord("A")) & (_ASCII <= ord("Z"))
_IS_SPACE = np.isin(_ASCII, [ord(c) for c in " \t\n\v\f\r"])
_IS_TOKEN = (
    ((_ASCII >= ord("a")) & (_ASCII <= ord("z")))
    | ((_ASCII >= ord("0")) & (_ASCII <= ord("9")))
    | (_ASCII == ord("_"))
)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens ([a-z0-9_]+) with URLs and @mentions removed."""
    if not isinstance(text, str):
        return []
    t = _MENTION_RE.sub(" ", _URL_RE.sub(" ", text.lower()))
    return _TOKEN_RE.findall(t)


def _arrow(texts: Iterable[str] | pd.Series | pa.Array) -> pa.LargeStringArray:
    """Texts as one contiguous Arrow large_string array; None/NaN become ""."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if isinstance(texts, pa.Array):
        arr = texts
    else:
        try:
            arr = pa.array(
                texts if isinstance(texts, (list, pd.Series)) else list(texts),
                type=pa.large_string(),
                from_pandas=True,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = pa.array(as_text_series(texts).array)
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    return arr.fill_null("") if arr.null_count else arr


def _bytes(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 data bytes of a (large_)string array and its n+1 row offsets into them."""
    _, offsets_buf, data_buf = arr.buffers()
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=off_type)[arr.offset : arr.offset + len(arr) + 1].astype(
        np.int64
    )
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets


def _count_per_row(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """How many True bytes each row [offsets[i], offsets[i+1]) holds."""
    n = len(offsets) - 1
    if len(mask) == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    sums = np.add.reduceat(mask, np.minimum(offsets[:-1], len(mask) - 1), dtype=np.int64)
    return np.where(offsets[1:] > offsets[:-1], sums, 0)


def _word_counts(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Number of whitespace-separated words per row."""
    nonspace = ~_IS_SPACE[data]
    prev_space = np.ones(len(data), dtype=bool)
    prev_space[1:] = ~nonspace[:-1]
    starts = offsets[:-1][offsets[:-1] < offsets[1:]]
    prev_space[starts] = True  # a row's first byte starts a word whatever came before it
    return _count_per_row(nonspace & prev_space, offsets)


def _flat_tokens(texts: Iterable[str] | pd.Series | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Vectorised `tokenize`: all tokens of all texts and the position of the text each came from."""
    arr = _arrow(texts)
    lowered = pc.utf8_lower(arr)
    lowered = pc.replace_substring_regex(lowered, _URL, " ")
    lowered = pc.replace_substring_regex(lowered, _MENTION, " ")
    data, offsets = _bytes(lowered)
    spaced = np.where(_IS_TOKEN[data], data, np.uint8(32)).astype(np.uint8)  # same length: offsets hold
    ascii_arr = pa.LargeStringArray.from_buffers(
        len(offsets) - 1,
        pa.py_buffer((offsets - offsets[0]).astype(np.int64)),
        pa.py_buffer(spaced[offsets[0] :]),
    )
    lists = pc.ascii_split_whitespace(ascii_arr)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    nonempty = pc.not_equal(flat, "")  # leading/trailing spaces yield "" pieces
    return flat.filter(nonempty), parents[nonempty.to_numpy(zero_copy_only=False)]


def build_vocabulary(texts: Iterable[str], min_count: int = 2, max_size: int = 50_000) -> frozenset[str]:
    """The `max_size` most frequent `tokenize` tokens seen at least `min_count` times."""
    tokens, _ = _flat_tokens(texts)
    if len(tokens) == 0:
        return frozenset()
    counts = pc.value_counts(tokens)
    ranked = sorted(
        zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True),
        key=lambda vc: (-vc[1], vc[0]),
    )  # ties broken alphabetically: deterministic
    return frozenset(tok for tok, n in ranked[:max_size] if n >= min_count)


def compute_features(
    texts: Sequence[str] | pd.Series, vocabulary: set[str] | frozenset[str] | None = None
) -> pd.DataFrame:
    """Per-text features (FEATURE_COLUMNS, then `topic`), one row per text in input order (index 0..n-1).

    `upper_share` is the share of uppercase among ASCII letters (0.0 without letters). `oov_share`
    is the share of `tokenize` tokens not in `vocabulary` (0.0 for a text without tokens); the
    column is all NaN when no vocabulary is given.
    """
    arr = _arrow(texts)
    n = len(arr)
    data, offsets = _bytes(arr)
    lowered = pc.utf8_lower(arr)
    letters = _count_per_row(_IS_LETTER[data], offsets).astype(float)
    upper = _count_per_row(_IS_UPPER[data], offsets).astype(float)

    def count(a: pa.Array, pattern: str) -> np.ndarray:
        return pc.count_substring_regex(a, pattern).to_numpy(zero_copy_only=False).astype(np.int64)

    out = pd.DataFrame(
        {
            "n_chars": pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.int64),
            "n_words": _word_counts(data, offsets),
            "n_hashtags": count(arr, _HASHTAG),
            "n_mentions": count(arr, _MENTION),
            "n_urls": count(arr, _URL),
            "n_nfl_entities": count(lowered, NFL_ENTITY_RE.pattern),
            "n_exclaims": _count_per_row(data == ord("!"), offsets),
            "upper_share": np.divide(upper, letters, out=np.zeros(n), where=letters > 0),
        }
    )
    if vocabulary is None:
        out["oov_share"] = np.nan
    else:
        tokens, parents = _flat_tokens(arr)
        vocab = pa.array(sorted(vocabulary), type=pa.large_string())
        known = pc.is_in(tokens, value_set=vocab).to_numpy(zero_copy_only=False).astype(bool)
        total = np.bincount(parents, minlength=n).astype(float)
        missing = np.bincount(parents, weights=(~known).astype(float), minlength=n)
        out["oov_share"] = np.divide(missing, total, out=np.zeros(n), where=total > 0)
    out["topic"] = (
        topics_of(pd.Series(arr, dtype="string[pyarrow]")).to_numpy() if n else np.array([], object)
    )
    return out
