"""Unit tests of the text features used by the feature store and drift monitoring."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pandas as pd
import pytest

from nfl_mlops.features import FEATURE_COLUMNS, NFL_ENTITY_RE, build_vocabulary, compute_features, tokenize
from nfl_mlops.features.text import _flat_tokens


def test_feature_columns_and_order() -> None:
    out = compute_features(["hello"])
    assert tuple(out.columns) == (*FEATURE_COLUMNS, "topic")
    for col in FEATURE_COLUMNS:
        assert pd.api.types.is_numeric_dtype(out[col]), col


def test_counts_on_hand_made_strings() -> None:
    texts = [
        "Brady and the #Patriots!! http://t.co/x @NFL wow",
        "@united @delta #fail #help #now www.example.com https://a.b/c WHY!",
        "",
        "  spaced   out\twords\nhere  ",
    ]
    out = compute_features(texts)
    assert out["n_chars"].tolist() == [len(t) for t in texts]
    assert out["n_words"].tolist() == [7, 8, 0, 4]
    assert out["n_hashtags"].tolist() == [1, 3, 0, 0]
    assert out["n_mentions"].tolist() == [1, 2, 0, 0]
    assert out["n_urls"].tolist() == [1, 2, 0, 0]
    assert out["n_exclaims"].tolist() == [2, 1, 0, 0]
    assert out["n_nfl_entities"].tolist() == [3, 0, 0, 0]  # brady, patriots, nfl
    assert out["topic"].tolist() == ["nfl", "airline", "other", "other"]


def test_upper_share() -> None:
    out = compute_features(["ABcd", "WHY", "123 !!", "caf\u00e9 OK"])
    assert out["upper_share"].tolist() == pytest.approx([0.5, 1.0, 0.0, 2 / 5])


def test_nfl_entities() -> None:
    text = (
        "Brady, Belichick & Gronk: #Patriots vs Seahawks (Wilson, Lynch) in Super Bowl XLIX #SB49 "
        "#DeflateGate -- Goodell, the NFL and the Colts"
    )
    assert compute_features([text])["n_nfl_entities"].item() == 13
    assert len(NFL_ENTITY_RE.findall(text)) == 13
    # no partial words, no airline handles
    assert compute_features(["@JetBlue brilliant manningtree patriotism"])["n_nfl_entities"].item() == 0
    # all 32 teams are known
    teams = (
        "cardinals falcons ravens bills panthers bears bengals browns cowboys broncos lions packers "
        "texans colts jaguars chiefs chargers rams dolphins vikings patriots saints giants jets raiders "
        "eagles steelers 49ers seahawks buccaneers titans redskins"
    )
    assert compute_features([teams])["n_nfl_entities"].item() == 32


def test_tokenize() -> None:
    assert tokenize("RT @Foo: Don't STOP #Believing http://t.co/abc!") == [
        "rt",
        "don",
        "t",
        "stop",
        "believing",
    ]
    assert tokenize("") == []
    assert tokenize(None) == []  # type: ignore[arg-type]


def test_vectorised_tokens_match_tokenize() -> None:
    rng = random.Random(0)
    alphabet = "abcXYZ019_ #@!.,'é\t\n:/"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(500)]
    texts += ["http://t.co/x hi", "@user only", "  lead and trail  "]
    tokens, parents = _flat_tokens(texts)
    flat = tokens.to_pylist()
    for i, text in enumerate(texts):
        assert [flat[j] for j in np.nonzero(parents == i)[0]] == tokenize(text), text


def test_oov_share_with_vocabulary() -> None:
    vocab = {"brady", "is", "great"}
    out = compute_features(
        ["Brady is GREAT", "Brady is overrated", "zzz yyy", "zzz", "http://t.co/x @a", ""], vocab
    )
    assert out["oov_share"].tolist() == pytest.approx([0.0, 1 / 3, 1.0, 1.0, 0.0, 0.0])


def test_oov_share_is_nan_without_vocabulary() -> None:
    out = compute_features(["a b c"])
    assert math.isnan(out["oov_share"].item())


def test_build_vocabulary() -> None:
    texts = ["the cat", "the dog", "the cat sat", "a bird @the http://the.com"]
    assert build_vocabulary(texts, min_count=2) == frozenset({"the", "cat"})
    assert build_vocabulary(texts, min_count=1, max_size=1) == frozenset({"the"})
    # ties broken alphabetically, so the result never depends on input order
    assert build_vocabulary(["b a", "a b"], min_count=1, max_size=1) == frozenset({"a"})
    assert build_vocabulary([]) == frozenset()


def test_vocabulary_round_trip_gives_zero_oov() -> None:
    texts = ["Go Pats go", "Pats win", "go go go"]
    vocab = build_vocabulary(texts, min_count=1)
    assert compute_features(texts, vocab)["oov_share"].tolist() == [0.0, 0.0, 0.0]


def test_inputs_series_none_and_order() -> None:
    s = pd.Series(["b!", None, "a!!"], index=[10, 5, 7])
    out = compute_features(s)
    assert list(out.index) == [0, 1, 2]
    assert out["n_exclaims"].tolist() == [1, 0, 2]
    assert compute_features([]).shape == (0, len(FEATURE_COLUMNS) + 1)


def test_features_agree_with_plain_python() -> None:
    rng = random.Random(1)
    words = ["Brady", "#SB49", "@united", "http://t.co/x", "WOW!", "caf\u00e9", "ok", "the", "\tx"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 12))) for _ in range(300)]
    out = compute_features(texts)
    assert out["n_hashtags"].tolist() == [len(re.findall(r"#\w+", t, re.ASCII)) for t in texts]
    assert out["n_mentions"].tolist() == [len(re.findall(r"@\w+", t, re.ASCII)) for t in texts]
    assert out["n_urls"].tolist() == [t.count("http://") for t in texts]
    assert out["n_exclaims"].tolist() == [t.count("!") for t in texts]
    assert out["n_words"].tolist() == [len(t.split()) for t in texts]
    assert out["n_chars"].tolist() == [len(t) for t in texts]
