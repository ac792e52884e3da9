"""Behavioural tests of a sentiment model (CheckList-style), part of the registration gate.

Held-out metrics say how often a model is right on tweets like its training data; they do not say
whether it is right for the right reasons. These tests ask three plain questions on NFL-flavoured
tweets generated from fixed templates and lists (deterministic, readable, no data to download):

- **minimum functionality**: clearly positive, clearly negative and neutral (scheduling, roster
  news) tweets get their label, one test per class, so a model that never says "neutral" fails;
- **invariance**: changing who is @mentioned, which URL is linked, or which team or player is
  named does not change the predicted label;
- **directional expectations**: negating a positive tweet, or adding an insult to a positive or
  neutral one, lowers its polarity, P(positive) - P(negative).

Each test passes at a pass rate, not all-or-nothing: a real small model is not perfect (negation
is hard for MiniLM fine-tuned on a few thousand tweets), and the gate is meant to catch a model that
learned nothing or learned the wrong thing, not to demand perfection. The thresholds' defaults
are calibrated on the demo's model (see `BehaviourParams`). Nothing heavy is imported here: the
caller hands in `predict_proba`, so the checks run on whatever runtime loaded the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from nfl_mlops import LABEL2ID, LABELS

Kind = Literal["minimum_functionality", "invariance", "directional"]
PredictProba = Callable[[Sequence[str]], np.ndarray]


class BehaviourParams(BaseModel):
    """Pass-rate thresholds of the behavioural tests (each default is defined here, once)."""

    min_functionality: float = Field(
        0.80,
        ge=0.0,
        le=1.0,
        description="Share of the clear tweets of each class (one test per class) that must get their label. "
        "Measured: the demo's v1 (MiniLM, 3,000 non-NFL tweets, 1 epoch) gets 1.00 on each class; the same "
        "recipe on flipped labels 0.00 on positive and negative; an untrained head 0.05 to 0.60.",
    )
    invariance: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="Share of the pairs (a changed @mention, URL, team or player) whose label must not change. "
        "The demo's v1 keeps 1.00; a model can change its mind on a borderline tweet, but more than 15 % "
        "flips means it keys on names (toy models of 200-400 rows: 0.64 to 0.78 on some).",
    )
    directional: float = Field(
        0.70,
        ge=0.0,
        le=1.0,
        description="Share of the pairs (negation, insult) whose polarity P(positive) - P(negative) must fall by "
        "at least `min_shift`. The demo's v1: 1.00 (negation), 0.88 (insult); flipped labels 0.00 and 0.05; "
        "an untrained head 0.00 (it barely moves).",
    )
    min_shift: float = Field(
        0.01,
        ge=0.0,
        lt=1.0,
        description="How far the polarity must move for a directional pair to pass, so noise in a model that "
        "barely reacts does not count as the right direction.",
    )
    max_examples: int = Field(
        5, ge=0, le=100, description="Failing examples kept per test (in the record and the model card)."
    )


# --------------------------------------------------------------------------------------------
# The cases (fixed lists and templates: the same cases every run)
# --------------------------------------------------------------------------------------------

# (player, team) pairs: a template that names both uses one pair, so a tweet stays plausible
ROSTER: tuple[tuple[str, str], ...] = (
    ("Tom Brady", "Patriots"),
    ("Russell Wilson", "Seahawks"),
    ("Andrew Luck", "Colts"),
    ("Aaron Rodgers", "Packers"),
    ("Peyton Manning", "Broncos"),
    ("Tony Romo", "Cowboys"),
)
MENTIONS: tuple[str, ...] = ("@NFL", "@espn", "@nflnetwork", "@Patriots", "@Seahawks", "@SportsCenter")
URLS: tuple[str, ...] = (
    "http://t.co/x8Kq2LmZ",
    "https://t.co/Pq77aBcD",
    "http://espn.go.com/nfl/story/_/id/12245",
    "https://www.nfl.com/news/article-0921",
    "http://bit.ly/1zQ9xYt",
    "https://youtu.be/dQw4w9W",
)

MFT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "What a great win for the {team}! So happy right now",
        "{player} was amazing tonight, I love this team",
        "So proud of the {team}, best game of the season!",
        "Congrats to {player} and the {team}, well deserved!",
        "Thank you {team} for an awesome season, love you guys",
    ),
    "negative": (
        "The {team} were terrible tonight, worst game ever",
        "{player} played awful, so disappointed and angry",
        "I hate the {team}, this is a disgrace",
        "Ugh, {player} blew it again. Horrible, just horrible",
        "The {team} are a joke, what an embarrassing loss",
    ),
    "neutral": (
        "The {team} play at 1pm on Sunday",
        "{player} will speak to reporters on Thursday",
        "Kickoff for the {team} game is at 8:30 ET on NBC",
        "{player} is expected to start for the {team} this week",
        "The {team} have signed two players to the practice squad",
    ),
}

# (positive tweet, the same tweet negated): the negation must lower the polarity
NEGATION_PAIRS: tuple[tuple[str, str], ...] = (
    ("The {team} played great today", "The {team} did not play great today"),
    ("I love watching {player} play", "I don't love watching {player} play"),
    ("{player} was amazing tonight", "{player} was not amazing tonight"),
    ("Happy with the {team} this season", "Not happy with the {team} this season"),
    ("The {team} deserved that win", "The {team} never deserved that win"),
)
INSULTS: tuple[str, ...] = ("What a bunch of clowns.", "You idiots.", "Pathetic losers.")


@dataclass(frozen=True)
class Case:
    """One behavioural case: a text (and the text it is compared with, for pairs)."""

    test: str
    kind: Kind
    text: str
    expected: str | None = None  # minimum functionality: the label
    original: str | None = None  # invariance / directional: the unperturbed text


def _fill(template: str, player: str, team: str) -> str:
    return template.format(player=player, team=team)


def _with_mention_and_url(text: str, i: int) -> str:
    """A base tweet as people write them: a mention in front, a link at the end."""
    return f"{MENTIONS[i % len(MENTIONS)]} {text} {URLS[i % len(URLS)]}"


def build_cases() -> list[Case]:
    """Every case of the suite, in a fixed order (about 60 clear tweets, 120 pairs, 60 directional pairs)."""
    cases: list[Case] = []
    bases: list[tuple[str, str, str, str]] = []  # (template, player, team, label): the invariance bases
    for label, templates in MFT_TEMPLATES.items():
        for t, template in enumerate(templates):
            for r in range(4):  # four roster pairs per template, rotated so every pair appears
                player, team = ROSTER[(t + r) % len(ROSTER)]
                text = _fill(template, player, team)
                cases.append(Case(f"mft_{label}", "minimum_functionality", text, expected=label))
                bases.append((template, player, team, label))

    for i, (template, player, team, _label) in enumerate(bases):
        j = (i + 1) % len(ROSTER)
        other_player, other_team = ROSTER[j] if ROSTER[j][0] != player else ROSTER[(j + 1) % len(ROSTER)]
        base = _with_mention_and_url(_fill(template, player, team), i)
        if "{team}" in template:
            swapped = _with_mention_and_url(_fill(template, player, other_team), i)
            cases.append(Case("inv_team", "invariance", swapped, original=base))
        if "{player}" in template:
            swapped = _with_mention_and_url(_fill(template, other_player, team), i)
            cases.append(Case("inv_player", "invariance", swapped, original=base))
        text = _fill(template, player, team)
        mention = f"{MENTIONS[(i + 3) % len(MENTIONS)]} {text} {URLS[i % len(URLS)]}"
        cases.append(Case("inv_mention", "invariance", mention, original=base))
        url = f"{MENTIONS[i % len(MENTIONS)]} {text} {URLS[(i + 3) % len(URLS)]}"
        cases.append(Case("inv_url", "invariance", url, original=base))

    for t, (positive, negated) in enumerate(NEGATION_PAIRS):
        for r in range(len(ROSTER)):
            player, team = ROSTER[(t + r) % len(ROSTER)]
            cases.append(
                Case(
                    "dir_negation",
                    "directional",
                    _fill(negated, player, team),
                    original=_fill(positive, player, team),
                )
            )
    for i, (template, player, team, label) in enumerate(bases):
        if label == "negative":  # already negative: an insult has little room to move it
            continue
        text = _fill(template, player, team)
        insult = INSULTS[i % len(INSULTS)]
        cases.append(Case("dir_insult", "directional", f"{text} {insult}", original=text))
    return cases


TEST_DESCRIPTIONS: dict[str, str] = {
    "mft_positive": "clearly positive tweets are predicted positive",
    "mft_negative": "clearly negative tweets are predicted negative",
    "mft_neutral": "neutral tweets (schedules, roster news) are predicted neutral",
    "inv_team": "naming another team does not change the label",
    "inv_player": "naming another player does not change the label",
    "inv_mention": "another @mention does not change the label",
    "inv_url": "another URL does not change the label",
    "dir_negation": "negating a positive tweet lowers P(positive) - P(negative)",
    "dir_insult": "adding an insult lowers P(positive) - P(negative)",
}


# --------------------------------------------------------------------------------------------
# Running them
# --------------------------------------------------------------------------------------------


@dataclass
class BehaviourTest:
    """One test's outcome: its pass rate against its threshold, and some of the cases it failed."""

    name: str
    kind: Kind
    description: str
    n: int
    n_passed: int
    pass_rate: float
    threshold: float
    passed: bool
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BehaviourResult:
    """Every test's outcome; `passed` only when each test meets its threshold."""

    passed: bool
    tests: list[BehaviourTest]
    params: dict[str, Any]

    @property
    def failed(self) -> list[BehaviourTest]:
        return [t for t in self.tests if not t.passed]

    def reasons(self) -> list[str]:
        """One line per failed test, for the gate's reasons (names the test and how far it fell short)."""
        return [
            f"behaviour: {t.name} pass rate {t.pass_rate:.2f} < {t.threshold:.2f} ({t.n - t.n_passed} of {t.n} "
            f"failed: {t.description}; e.g. {t.failures[0]['text']!r}: expected {t.failures[0]['expected']}, "
            f"got {t.failures[0]['got']})"
            if t.failures
            else f"behaviour: {t.name} pass rate {t.pass_rate:.2f} < {t.threshold:.2f} ({t.description})"
            for t in self.failed
        ]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _proba_dict(row: np.ndarray) -> dict[str, float]:
    return {label: round(float(p), 4) for label, p in zip(LABELS, row, strict=True)}


def polarity(proba: np.ndarray) -> np.ndarray:
    """P(positive) - P(negative) per row: the score the directional tests move."""
    return proba[..., LABEL2ID["positive"]] - proba[..., LABEL2ID["negative"]]


def behavioural_checks(
    predict_proba: PredictProba, params: BehaviourParams | None = None, cases: Sequence[Case] | None = None
) -> BehaviourResult:
    """Run the behavioural tests on a model given as its `predict_proba` (texts -> n x 3, `LABELS` order).

    Args:
        predict_proba: the model's probabilities, e.g. `SentimentModel.predict_proba` of the runtime
            being registered.
        params: pass-rate thresholds and how many failing examples to keep.
        cases: the cases to run; default `build_cases()`.
    """
    params = params or BehaviourParams()
    cases = list(build_cases() if cases is None else cases)
    texts = sorted({c.text for c in cases} | {c.original for c in cases if c.original is not None})
    if not texts:
        raise ValueError("no behavioural cases to run")
    proba = np.asarray(predict_proba(texts), dtype=np.float64)
    if proba.shape != (len(texts), len(LABELS)):
        raise ValueError(f"predict_proba returned shape {proba.shape}, expected {(len(texts), len(LABELS))}")
    row = {t: proba[i] for i, t in enumerate(texts)}
    threshold = {
        "minimum_functionality": params.min_functionality,
        "invariance": params.invariance,
        "directional": params.directional,
    }

    outcomes: dict[str, list[tuple[bool, dict[str, Any]]]] = {}
    kinds: dict[str, Kind] = {}
    for c in cases:
        p = row[c.text]
        got = LABELS[int(p.argmax())]
        if c.kind == "minimum_functionality":
            ok = got == c.expected
            detail = {"text": c.text, "expected": c.expected, "got": got, "proba": _proba_dict(p)}
        elif c.kind == "invariance":
            assert c.original is not None  # invariance and directional cases are made from an original
            q = row[c.original]
            label_before = LABELS[int(q.argmax())]
            ok = got == label_before
            detail = {
                "text": c.text,
                "original": c.original,
                "expected": f"{label_before} (as the original)",
                "got": got,
                "proba": _proba_dict(p),
                "original_proba": _proba_dict(q),
            }
        else:
            assert c.original is not None
            q = row[c.original]
            before, after = float(polarity(q)), float(polarity(p))
            ok = after <= before - params.min_shift
            detail = {
                "text": c.text,
                "original": c.original,
                "expected": f"polarity below {before:+.3f} - {params.min_shift:g}",
                "got": f"polarity {after:+.3f}",
                "proba": _proba_dict(p),
                "original_proba": _proba_dict(q),
            }
        outcomes.setdefault(c.test, []).append((bool(ok), detail))
        kinds[c.test] = c.kind

    tests = []
    for name, results in outcomes.items():
        n_passed = sum(ok for ok, _ in results)
        rate = n_passed / len(results)
        limit = threshold[kinds[name]]
        tests.append(
            BehaviourTest(
                name=name,
                kind=kinds[name],
                description=TEST_DESCRIPTIONS.get(name, name),
                n=len(results),
                n_passed=n_passed,
                pass_rate=round(rate, 4),
                threshold=limit,
                passed=rate >= limit,
                failures=[d for ok, d in results if not ok][: params.max_examples],
            )
        )
    return BehaviourResult(all(t.passed for t in tests), tests, params.model_dump())


def check_model_folder(path: Any, params: BehaviourParams | None = None) -> BehaviourResult:
    """The behavioural tests of the model in the folder `path`, loaded the way the gate scores it (torch)."""
    from nfl_mlops.modeling.predictor import SentimentModel

    return behavioural_checks(SentimentModel.load(path).predict_proba, params)


def pass_rate_table(results: dict[str, BehaviourResult]) -> str:
    """A markdown table of pass rates, one column per model, the thresholds last (for bench notes)."""
    names = list(results)
    tests = [t.name for t in next(iter(results.values())).tests]
    rates = {n: {t.name: t.pass_rate for t in r.tests} for n, r in results.items()}
    limits = {t.name: t.threshold for t in next(iter(results.values())).tests}
    lines = [
        "| test | " + " | ".join(names) + " | threshold |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    lines += [
        f"| {t} | " + " | ".join(f"{rates[n][t]:.2f}" for n in names) + f" | {limits[t]:.2f} |" for t in tests
    ]
    lines.append("| **passed** | " + " | ".join(str(results[n].passed) for n in names) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m nfl_mlops.registry.behaviour MODEL_DIR [MODEL_DIR ...]
    import sys
    from pathlib import Path

    folders = sys.argv[1:]
    if not folders:
        sys.exit("usage: python -m nfl_mlops.registry.behaviour MODEL_DIR [MODEL_DIR ...]")
    print(pass_rate_table({Path(f).name: check_model_folder(f) for f in folders}))
