"""Unit tests of the data layer: cleaning, dedupe keys, topics, prepare, validation, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nfl_mlops import LABELS
from nfl_mlops.data import (
    TOPICS,
    DataValidationError,
    Splits,
    clean_text,
    clean_texts,
    corpus_path,
    load_corpus,
    load_table,
    normalize_for_dedupe,
    normalize_texts,
    prepare,
    select,
    split,
    topic_of,
    topics_of,
    validate_frame,
)
from nfl_mlops.data.corpus import MOJIBAKE

# --------------------------------------------------------------------------------------------
# clean_text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", ["’¢_äŒ_Ü¢", "‰Ûª", "äó»"])
def test_mojibake_apostrophes(seq: str) -> None:
    assert clean_text(f"I don{seq}t like it") == "I don't like it"


@pytest.mark.parametrize("seq", ["‰ÛÏ", "‰Ûù", "äóì", "äóù"])
def test_mojibake_double_quotes(seq: str) -> None:
    assert clean_text(f"he said {seq}go{seq} loudly") == 'he said "go" loudly'


def test_mojibake_ellipsis() -> None:
    assert clean_text("the schedule consists of fo‰Û_") == "the schedule consists of fo..."


def test_every_known_sequence_is_mapped_to_ascii() -> None:
    for bad, good in MOJIBAKE.items():
        assert clean_text(f"a{bad}b") == f"a{good}b"


def test_emoji_mojibake_is_dropped_without_stray_quotes() -> None:
    raw = "I took a Claritin _‰Ûª‰Û_‰Ûª_‰Ûªåç that shit does not help _Ù÷ç"
    assert clean_text(raw) == "I took a Claritin that shit does not help"


def test_clean_text_removes_cr_lf_entities_and_non_ascii() -> None:
    raw = "Delays &amp; more delays\r\nat DEN &gt;:( caf\u00e9 ’¢_äŒÅ–@united  "
    out = clean_text(raw)
    assert out == "Delays & more delays at DEN >:( caf @united"
    assert "\r" not in out and "\n" not in out and "&amp;" not in out
    assert out.isascii()


def test_clean_text_double_escaped_entity() -> None:
    assert clean_text("Ford R&amp;amp;D car") == "Ford R&D car"


def test_clean_text_entity_that_decodes_to_non_ascii_is_dropped() -> None:
    assert clean_text("a&nbsp;b &eacute;") == "a b"


def test_clean_text_keeps_urls_mentions_hashtags() -> None:
    raw = "@SouthwestAir thanks! #bestairline http://t.co/AbC123"
    assert clean_text(raw) == raw


def test_clean_text_non_string_is_empty() -> None:
    assert clean_text(None) == ""  # type: ignore[arg-type]


def test_clean_texts_matches_clean_text() -> None:
    texts = ["x &amp; y\r\n", "don‰Ûªt  stop", "_Ù÷ç", "plain", "", "Brady‰Ûù #DeflateGate‰Û_"]
    assert clean_texts(texts).tolist() == [clean_text(t) for t in texts]


# --------------------------------------------------------------------------------------------
# normalize_for_dedupe and topics
# --------------------------------------------------------------------------------------------


def test_normalize_for_dedupe() -> None:
    assert normalize_for_dedupe("RT @Foo_1: Hello, World!!  http://t.co/x @bar") == "hello world @user"
    assert normalize_for_dedupe("hello world @someone https://t.co/y") == "hello world @user"
    # a retweet and its original share a key
    assert normalize_for_dedupe("RT @fan: Brady is GREAT") == normalize_for_dedupe("brady is great!")
    # RT is only removed at the start
    assert normalize_for_dedupe("I agree RT @fan: yes") == "i agree rt @user yes"
    assert normalize_for_dedupe("Brady is great") != normalize_for_dedupe("Brady is not great")


def test_normalize_texts_matches_scalar() -> None:
    texts = ["RT @a: X y http://t.co/1", "  @b hi!!", "Go #Pats, go.", ""]
    assert normalize_texts(texts).tolist() == [normalize_for_dedupe(t) for t in texts]


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("@united lost my bag again", "airline"),
        ("@JetBlue thanks for the upgrade", "airline"),
        ("Tom Brady and the deflated footballs #DeflateGate", "nfl"),
        ("Who wins the Super Bowl? #SB49 Seahawks", "nfl"),
        ("The NFL should suspend him", "nfl"),
        ("I would never ride in a self-driving car", "cars"),
        ("Google's driverless cars are scary", "cars"),
        ("My new iPhone keeps crashing @apple", "apple"),
        ("The #Coachella2015 lineup is out", "coachella"),
        ("Claritin is not working, sneezing all day", "allergy"),
        ("what a lovely day", "other"),
        # precedence: airline before nfl, nfl before apple
        ("@united flying to the super bowl", "airline"),
        ("watching the Super Bowl on my ipad", "nfl"),
        # word boundaries: "macaroni" is not "mac", "snfl" is not "nfl"
        ("macaroni and cheese", "other"),
    ],
)
def test_topic_of(text: str, topic: str) -> None:
    assert topic_of(text) == topic
    assert topics_of([text]).tolist() == [topic]


def test_topics_tuple() -> None:
    assert TOPICS == ("airline", "nfl", "cars", "apple", "coachella", "allergy", "other")


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


def _raw(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["text", "label", "confidence"])


def test_prepare_dedupes_and_drops_conflicting_groups() -> None:
    raw = _raw(
        [
            ("Brady cheated #DeflateGate", "negative", 1.0),
            ("RT @fan: brady cheated! #deflategate http://t.co/1", "negative", 0.9),  # same key, same label
            ("@united worst flight ever", "negative", 1.0),
            ("@united worst flight ever!!", "positive", 1.0),  # same key, other label -> group dropped
            ("Coachella was amazing", "positive", 0.5),  # low confidence
            ("I love my iPhone", "positive", np.nan),  # no confidence: kept
            ("   ", "neutral", 1.0),  # empty
            ("‰Û_", "neutral", 1.0),  # empty after cleaning
            ("http://t.co/xyz", "neutral", 1.0),  # nothing left after normalising
        ]
    )
    out = prepare(raw)
    assert out["text"].tolist() == ["Brady cheated #DeflateGate", "I love my iPhone"]
    assert out["label"].tolist() == ["negative", "positive"]
    assert out["topic"].tolist() == ["nfl", "apple"]
    assert list(out.index) == [0, 1]
    assert not out["norm"].duplicated().any()
    assert {"text", "label", "confidence", "topic", "norm"} <= set(out.columns)


def test_prepare_confidence_threshold_is_a_parameter() -> None:
    raw = _raw([("Coachella was amazing", "positive", 0.5)])
    assert len(prepare(raw)) == 0
    assert len(prepare(raw, min_confidence=0.4)) == 1


# --------------------------------------------------------------------------------------------
# validate_frame and load_table
# --------------------------------------------------------------------------------------------


def test_validate_frame_accepts_strings_any_case_and_ints() -> None:
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["Negative", " POSITIVE ", 1, 0], "extra": 1})
    out = validate_frame(df)
    assert out["label"].tolist() == ["negative", "positive", "neutral", "negative"]
    assert "extra" in out.columns
    assert df["label"].tolist()[0] == "Negative"  # input untouched


def test_validate_frame_int_column() -> None:
    out = validate_frame(pd.DataFrame({"text": ["a", "b", "c"], "label": np.array([2, 1, 0])}))
    assert out["label"].tolist() == ["positive", "neutral", "negative"]


def test_validate_frame_names_missing_column() -> None:
    with pytest.raises(DataValidationError, match=r"'label'"):
        validate_frame(pd.DataFrame({"text": ["a"], "sentiment": ["negative"]}))
    with pytest.raises(DataValidationError, match=r"'text'"):
        validate_frame(pd.DataFrame({"tweet": ["a"], "label": ["negative"]}))


def test_validate_frame_names_unknown_labels_and_count() -> None:
    df = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["negative", "angry", "angry", 7]})
    with pytest.raises(DataValidationError, match=r"3 row\(s\) have unknown labels") as info:
        validate_frame(df)
    assert "'angry'" in str(info.value) and "7" in str(info.value)


def test_validate_frame_names_empty_texts() -> None:
    df = pd.DataFrame({"text": ["ok", "  ", None, ""], "label": ["neutral"] * 4})
    with pytest.raises(DataValidationError, match=r"3 row\(s\) have empty"):
        validate_frame(df)


def test_validate_frame_rejects_empty_frame() -> None:
    with pytest.raises(DataValidationError, match="no rows"):
        validate_frame(pd.DataFrame({"text": [], "label": []}))


def test_data_validation_error_is_a_value_error() -> None:
    assert issubclass(DataValidationError, ValueError)


def test_load_table_csv_and_parquet(tmp_path) -> None:
    df = pd.DataFrame(
        {"text": ["great game", "awful refs", "kickoff at 6"], "label": ["positive", "negative", 1]}
    )
    csv = tmp_path / "data.csv"
    df.astype({"label": str}).to_csv(csv, index=False)
    pq = tmp_path / "data.parquet"
    df.astype({"label": str}).to_parquet(pq)
    for path in (csv, pq):
        out = load_table(path)
        assert out["label"].tolist() == ["positive", "negative", "neutral"]
        assert out["text"].tolist() == ["great game", "awful refs", "kickoff at 6"]


def test_load_table_csv_with_int_labels(tmp_path) -> None:
    path = tmp_path / "ints.csv"
    path.write_text("text,label\nhello,0\nworld,2\n")
    assert load_table(path)["label"].tolist() == ["negative", "positive"]


def test_load_table_errors(tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataValidationError, match="empty"):
        load_table(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DataValidationError, match="no rows"):
        load_table(header_only)
    txt = tmp_path / "data.txt"
    txt.write_text("text,label\na,negative\n")
    with pytest.raises(DataValidationError, match=r"Unsupported file type '\.txt'"):
        load_table(txt)
    with pytest.raises(DataValidationError, match="not found"):
        load_table(tmp_path / "missing.csv")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(DataValidationError, match="Cannot read"):
        load_table(broken)
    bad_labels = tmp_path / "bad.csv"
    bad_labels.write_text("text,label\na,happy\n")
    with pytest.raises(DataValidationError, match="unknown labels 'happy'"):
        load_table(bad_labels)


# --------------------------------------------------------------------------------------------
# split and select
# --------------------------------------------------------------------------------------------


def _synthetic(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Unique texts with imbalanced labels (50/35/15) and two topics, sorted by label like the corpus."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(LABELS, size=n, p=[0.5, 0.35, 0.15])
    topics = rng.choice(["nfl", "airline"], size=n, p=[0.3, 0.7])
    df = pd.DataFrame(
        {
            "text": [f"tweet number {i} about {t}" for i, t in enumerate(topics)],
            "label": labels,
            "topic": topics,
        }
    )
    df["norm"] = normalize_texts(df["text"]).to_numpy()
    return df.sort_values("label").reset_index(drop=True)


def _shares(df: pd.DataFrame) -> pd.Series:
    return df["label"].value_counts(normalize=True).reindex(list(LABELS), fill_value=0.0)


def test_split_sizes_and_stratification() -> None:
    df = _synthetic()
    s = split(df, test_size=0.15, val_size=0.1, seed=42)
    assert isinstance(s, Splits)
    assert sum(s.sizes.values()) == len(df)
    assert s.sizes["test"] == pytest.approx(0.15 * len(df), abs=2)
    assert s.sizes["val"] == pytest.approx(0.10 * len(df), abs=2)
    overall = _shares(df)
    for part in (s.train, s.val, s.test):
        assert (abs(_shares(part) - overall) < 0.02).all()
        assert list(part.index) == list(range(len(part)))


def test_split_is_deterministic_and_seed_dependent() -> None:
    df = _synthetic()
    a, b = split(df, seed=1), split(df, seed=1)
    c = split(df, seed=2)
    assert a.test["text"].tolist() == b.test["text"].tolist()
    assert a.train["text"].tolist() == b.train["text"].tolist()
    assert set(a.test["text"]) != set(c.test["text"])


def test_split_does_not_depend_on_row_order() -> None:
    df = _synthetic()
    shuffled = df.sample(frac=1.0, random_state=7)
    assert set(split(df).test["text"]) == set(split(shuffled).test["text"])


def test_split_never_lets_near_duplicates_cross() -> None:
    base = _synthetic(600).drop(columns=["norm"])
    # add retweets / re-cased copies of every text: same normalised key, same label
    dups = base.assign(text="RT @someone: " + base["text"].str.upper() + "!!")
    s = split(pd.concat([base, dups], ignore_index=True), seed=3)
    assert sum(s.sizes.values()) == len(base)  # deduplicated defensively
    keys = [set(normalize_texts(part["text"])) for part in (s.train, s.val, s.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def test_split_drops_conflicting_groups_defensively() -> None:
    df = pd.concat(
        [
            _synthetic(300),
            pd.DataFrame({"text": ["same words", "Same words!"], "label": ["negative", "positive"]}),
        ],
        ignore_index=True,
    )
    df["norm"] = normalize_texts(df["text"]).to_numpy()
    s = split(df)
    everything = pd.concat([s.train, s.val, s.test])
    assert "same words" not in set(everything["norm"])


def test_split_by_label_and_topic_keeps_topic_shares() -> None:
    df = _synthetic(4000)
    s = split(df, stratify_by=("label", "topic"), seed=5)
    for part in (s.train, s.val, s.test):
        assert abs((part["topic"] == "nfl").mean() - (df["topic"] == "nfl").mean()) < 0.02


def test_split_falls_back_when_strata_are_tiny() -> None:
    df = _synthetic(200)
    df.loc[df.index[:3], "topic"] = "cars"  # a (label, topic) cell too small to stratify
    df.loc[df.index[-1], "label"] = "neutral"
    s = split(df, stratify_by=("label", "topic"))
    assert sum(s.sizes.values()) == len(df)
    tiny = pd.DataFrame(
        {"text": ["a b", "c d", "e f", "g h"], "label": ["negative", "positive", "neutral", "neutral"]}
    )
    assert sum(split(tiny, test_size=0.25, val_size=0.25).sizes.values()) == 4


def test_data_hash_is_stable_and_content_sensitive() -> None:
    df = _synthetic(500)
    h = split(df, seed=1).data_hash
    assert len(h) == 16 and int(h, 16) >= 0
    assert split(df.sample(frac=1.0, random_state=3), seed=1).data_hash == h
    changed = df.copy()
    changed.loc[0, "label"] = "positive" if changed.loc[0, "label"] != "positive" else "negative"
    assert split(changed, seed=1).data_hash != h


def test_split_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        split(_synthetic(100), test_size=0.6, val_size=0.5)


def test_select_filters_topics_and_samples_stratified() -> None:
    df = _synthetic(3000)
    only_nfl = select(df, topics_include=["nfl"])
    assert set(only_nfl["topic"]) == {"nfl"}
    no_nfl = select(df, topics_exclude=["nfl"])
    assert "nfl" not in set(no_nfl["topic"]) and len(no_nfl) + len(only_nfl) == len(df)
    sample = select(df, max_rows=1000, seed=1)
    assert len(sample) == 1000
    assert (abs(_shares(sample) - _shares(df)) < 0.02).all()
    assert sample["text"].tolist() == select(df, max_rows=1000, seed=1)["text"].tolist()
    assert sample["text"].tolist() != select(df, max_rows=1000, seed=2)["text"].tolist()
    assert len(select(df, max_rows=10_000)) == len(df)


def test_select_computes_topic_and_rejects_unknown_topics() -> None:
    df = pd.DataFrame({"text": ["@united late again", "Brady cheated"], "label": ["negative", "negative"]})
    assert select(df, topics_include=["nfl"])["text"].tolist() == ["Brady cheated"]
    with pytest.raises(DataValidationError, match="football"):
        select(df, topics_include=["football"])


# --------------------------------------------------------------------------------------------
# The real corpus (fast: about a second)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_corpus() -> pd.DataFrame:
    try:
        corpus_path()
    except DataValidationError as exc:
        pytest.skip(str(exc))
    return load_corpus()


def test_load_corpus(raw_corpus: pd.DataFrame) -> None:
    assert list(raw_corpus.columns) == ["text", "label", "confidence"]
    assert len(raw_corpus) == 38_158
    assert set(raw_corpus["label"]) == set(LABELS)
    assert raw_corpus["confidence"].isna().sum() == 5_460
    assert raw_corpus["confidence"].dtype == float


def test_prepare_real_corpus(raw_corpus: pd.DataFrame) -> None:
    before = topics_of(clean_texts(raw_corpus["text"]))
    assert (before == "nfl").sum() > 7000
    out = prepare(raw_corpus)
    assert 30_000 <= len(out) <= 35_000
    assert out["text"].map(str.isascii).all()
    assert not out["norm"].duplicated().any()
    assert not out["text"].str.contains("\r|\n|&amp;").any()
    assert set(out["label"]) == set(LABELS)
    assert set(out["topic"]) <= set(TOPICS)
    assert ((out["confidence"] >= 0.6) | out["confidence"].isna()).all()


# --------------------------------------------------------------------------------------------
# feedback roles (train / evaluation), fixed once per row
# --------------------------------------------------------------------------------------------


def _base_frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["great", "awful", "fine", "flight", "phone", "game", "delay", "crash", "love", "meh"]
    texts = [f"base tweet {i} " + " ".join(rng.choice(words, 4)) for i in range(n)]
    return prepare(pd.DataFrame({"text": texts, "label": [LABELS[i % 3] for i in range(n)]}))


def _feedback(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"Patriots fan tweet number {i} about the game" for i in range(start, start + n)],
            "label": [LABELS[(i * 7) % 3] for i in range(start, start + n)],
        }
    )


def test_feedback_role_is_stable_and_near_the_evaluation_share() -> None:
    from nfl_mlops.data.datasets import EVALUATION_SHARE, feedback_role

    norms = normalize_texts(_feedback(0, 4000)["text"]).tolist()
    roles = [feedback_role(n) for n in norms]
    assert roles == [feedback_role(n) for n in norms]  # a pure function of the text
    assert set(roles) == {"train", "evaluation"}
    share = roles.count("evaluation") / len(roles)
    assert abs(share - EVALUATION_SHARE) < 0.03
    # a fixed value, not Python's per-process salted hash()
    assert feedback_role("patriots fan tweet number 0 about the game") == roles[0]


def test_more_feedback_later_never_moves_an_existing_row() -> None:
    from nfl_mlops.data.datasets import build_training_data
    from nfl_mlops.modeling.params import DataParams

    params = DataParams(seed=1)
    base = _base_frame()
    first = build_training_data(params, base, _feedback(0, 200))
    later = build_training_data(params, base, pd.concat([_feedback(200, 400), _feedback(0, 200)]))
    fb_norms = set(normalize_texts(_feedback(0, 200)["text"]))
    train1 = set(first.train["norm"]) & fb_norms
    recent1 = set(first.recent["norm"])
    assert train1 and recent1 and not train1 & recent1
    assert len(train1) + len(recent1) == 200
    # every row keeps its role once more feedback has arrived (in any order)
    assert train1 <= set(later.train["norm"])
    assert recent1 <= set(later.recent["norm"])
    assert not set(later.train["norm"]) & set(later.recent["norm"])
    assert len(later.recent) > len(first.recent)
    assert first.description["feedback_evaluation_rows"] == len(first.recent)
    assert first.description["feedback_train_rows"] == len(train1)


def test_few_feedback_rows_still_keep_their_evaluation_role() -> None:
    """Old behaviour put all of fewer than 10 rows into training; a row's role must not depend on how many arrived."""
    from nfl_mlops.data.datasets import build_training_data, feedback_role
    from nfl_mlops.modeling.params import DataParams

    fb = _feedback(0, 6)
    roles = [feedback_role(n) for n in normalize_texts(fb["text"])]
    assert "evaluation" in roles  # (true for these 6 texts)
    data = build_training_data(DataParams(seed=1), _base_frame(), fb)
    assert len(data.recent) == roles.count("evaluation")


def test_feedback_never_evaluates_on_base_training_rows() -> None:
    from nfl_mlops.data.datasets import build_training_data, feedback_role
    from nfl_mlops.modeling.params import DataParams

    params = DataParams(seed=1)
    base = _base_frame()
    plain = build_training_data(params, base)
    # feedback that repeats base training tweets (only the evaluation-role ones matter)
    repeats = plain.train[plain.train["norm"].map(feedback_role) == "evaluation"][["text", "label"]]
    assert len(repeats)
    data = build_training_data(params, base, pd.concat([repeats, _feedback(0, 50)]))
    assert not set(data.recent["norm"]) & set(data.train["norm"])
    assert not set(data.recent["norm"]) & (set(data.test["norm"]) | set(data.val["norm"]))


def test_recent_since_puts_the_drifted_traffic_last_and_counts_it() -> None:
    """A retraining for an episode: the gate still judges on every held-out label (power), and the rows of
    the traffic since the episode's window began come last in `recent` and in train's feedback, counted,
    for the new version's reference; older evaluation-role labels are never trained on."""
    from datetime import UTC, datetime, timedelta

    from nfl_mlops.data.datasets import build_training_data
    from nfl_mlops.modeling.params import DataParams
    from nfl_mlops.monitoring.reference import reference_rows

    start = datetime(2026, 12, 1, tzinfo=UTC)
    old, new = _feedback(0, 200), _feedback(200, 200)
    fb = pd.concat(
        [old.assign(served_at=start - timedelta(hours=30)), new.assign(served_at=start + timedelta(hours=2))]
    )
    base = _base_frame()
    everything = build_training_data(DataParams(seed=1), base, fb)
    windowed = build_training_data(DataParams(seed=1, recent_since=start), base, fb)
    new_norms = set(normalize_texts(new["text"]))
    assert set(windowed.recent["norm"]) == set(everything.recent["norm"])  # the gate's window: all
    n = windowed.description["feedback_evaluation_rows_in_window"]
    assert 0 < n < len(windowed.recent)
    assert set(windowed.recent.tail(n)["norm"]) == set(everything.recent["norm"]) & new_norms
    assert set(windowed.train["norm"]) == set(everything.train["norm"])
    assert not set(windowed.train["norm"]) & set(everything.recent["norm"])
    assert windowed.description["recent_since"] == start.isoformat()
    m = windowed.description["feedback_train_rows_in_window"]
    assert 0 < m < windowed.description["feedback_train_rows"]
    assert set(windowed.train.tail(m)["norm"]) == (set(windowed.train["norm"]) & new_norms)
    # the reference reads the window only (enough rows), the gate the whole recent split
    proba = np.full((len(windowed.recent), 3), 1 / 3)
    rows = reference_rows(windowed.train, windowed.test, windowed.recent, {"recent": proba}, m, 10, n)
    assert rows.basis == "recent" and len(rows.texts) == n and len(rows.proba) == n
    assert set(normalize_texts(pd.Series(rows.texts))) <= new_norms


def test_fit_rows_repeat_the_feedback_rows_only_and_within_their_share() -> None:
    """The retraining recipe weights an episode's labels by repeating them (TrainParams.feedback_repeat), never
    the base rows, and never beyond `feedback_max_share` of an epoch; the stored splits stay as they are."""
    from collections import Counter

    from nfl_mlops.data.datasets import build_training_data, repeat_within_share
    from nfl_mlops.modeling.params import DataParams

    data = build_training_data(DataParams(seed=1), _base_frame(), _feedback(0, 200))
    n_fb = data.description["feedback_train_rows"]
    n_base = len(data.train) - n_fb
    fb_texts = set(data.train.tail(n_fb)["text"])
    assert 0 < n_fb < n_base
    version = data.version

    texts, labels, used = data.fit_rows(repeat=3, max_share=0.9)
    assert used == 3 and len(texts) == len(labels) == n_base + 3 * n_fb
    counts = Counter(texts)
    assert all(counts[t] == 3 for t in fb_texts)
    assert all(counts[t] == 1 for t in data.train.head(n_base)["text"] if t not in fb_texts)
    # texts and labels stay paired
    pairs = Counter(zip(texts, labels, strict=True))
    assert all(
        pairs[(t, y)] == 3
        for t, y in zip(data.train.tail(n_fb)["text"], data.train.tail(n_fb)["label"], strict=True)
    )

    # the share caps the repeat (and 1 leaves the rows as they are)
    texts, _, used = data.fit_rows(repeat=20, max_share=0.5)
    assert used == repeat_within_share(n_base, n_fb, 20, 0.5) and used * n_fb <= len(texts) * 0.5
    assert data.fit_rows(repeat=1)[0] == data.train["text"].tolist()
    assert len(data.train) == n_base + n_fb and data.version == version  # the split is not changed

    # without feedback nothing is repeated
    plain = build_training_data(DataParams(seed=1), _base_frame())
    assert plain.fit_rows(repeat=5) == (plain.train["text"].tolist(), plain.train["label"].tolist(), 1)


@pytest.mark.parametrize(
    ("n_base", "n_feedback", "repeat", "share", "expected"),
    [
        (3000, 300, 5, 0.5, 5),  # 1,500 of 4,500 rows
        (3000, 1200, 5, 0.5, 2),  # 5x would be 67 %: 2x is 44 %
        (3000, 3000, 5, 0.5, 1),  # exactly half at 1x
        (10, 900, 5, 0.5, 1),  # never below 1
        (3000, 0, 5, 0.5, 1),
        (3000, 300, 1, 0.5, 1),
    ],
)
def test_repeat_within_share(n_base: int, n_feedback: int, repeat: int, share: float, expected: int) -> None:
    from nfl_mlops.data.datasets import repeat_within_share

    used = repeat_within_share(n_base, n_feedback, repeat, share)
    assert used == expected
    if used > 1:
        assert used * n_feedback / (n_base + used * n_feedback) <= share
        assert (used + 1) * n_feedback / (n_base + (used + 1) * n_feedback) > share or used == repeat
