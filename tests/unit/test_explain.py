"""Occlusion explanations (issue 13, item 5): word pieces and their offsets, attributions under a known
scoring function, the most confident mistakes and their card section, and a real transformer trained to key on
one word, explained through torch and through ONNX Runtime."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nfl_mlops import LABELS
from nfl_mlops.modeling.explain import (
    EXPLAINED_MISTAKES_FILE,
    TooManyPieces,
    explain,
    explain_many,
    explain_mistakes,
    load_explained_mistakes,
    occlusion_inputs,
    save_explained_mistakes,
    word_pieces,
)

POSITIVE_WORD, NEGATIVE_WORD = "touchdown", "fumble"

FILLER = [
    "the",
    "game",
    "was",
    "today",
    "fans",
    "saw",
    "team",
    "field",
    "crowd",
    "we",
    "watched",
    "stadium",
    "play",
    "with",
    "a",
    "on",
    "in",
    "at",
]


def lexicon_proba(texts):
    """A scoring function with known reasons: +word pushes positive, -word negative, else neutral."""
    out = []
    for t in texts:
        words = set(t.lower().split())
        logits = np.array([0.0, 1.0, 0.0])
        logits[2] += 3.0 * ("great" in words)
        logits[0] += 3.0 * ("awful" in words) + 0.8 * ("refs" in words)
        e = np.exp(logits - logits.max())
        out.append(e / e.sum())
    return np.array(out)


class Counting:
    """Wraps a predict_proba and records the size of every call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, texts):
        self.calls.append(len(texts))
        return self.fn(texts)


# Pieces
def test_pieces_cover_every_character_and_map_back_by_offset():
    text = "RT @NFL: Brady's 4th TD!!! #SB49 https://t.co/x1Y?z=2  wow…  don't"
    pieces = word_pieces(text)
    assert [p.token for p in pieces] == [
        "RT", "@NFL", ":", "Brady's", "4th", "TD", "!!!", "#SB49", "https://t.co/x1Y?z=2", "wow", "…", "don't",
    ]  # fmt: skip
    for p in pieces:
        assert text[p.start : p.end] == p.token
    covered = {i for p in pieces for i in range(p.start, p.end)}
    assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}


def test_occlusion_inputs_are_the_text_then_one_variant_per_piece():
    pieces, texts = occlusion_inputs("great game, refs")
    assert texts[0] == "great game, refs"
    assert texts[1:] == [" game, refs", "great , refs", "great game refs", "great game, "]
    assert len(pieces) == 4
    with pytest.raises(ValueError, match="empty"):
        occlusion_inputs(" \n\t")
    with pytest.raises(TooManyPieces, match="at most 3"):
        occlusion_inputs("one two three four", max_pieces=3)


# Attributions
def test_the_word_that_drives_the_label_gets_the_largest_attribution_in_one_call():
    scorer = Counting(lexicon_proba)
    e = explain("what a great game by the Patriots", scorer)
    assert scorer.calls == [1 + 7]  # the text and its 7 variants, together
    assert e.label == "positive" and e.method == "occlusion"
    assert e.probabilities == pytest.approx(dict(zip(LABELS, lexicon_proba([e.text])[0], strict=True)))
    assert e.top(1)[0].token == "great"
    great = e.top(1)[0].attribution
    assert great == pytest.approx(
        lexicon_proba([e.text])[0][2] - lexicon_proba(["what a  game by the Patriots"])[0][2]
    )
    others = [t.attribution for t in e.tokens if t.token != "great"]
    assert max(abs(a) for a in others) < 1e-9 < great


def test_a_word_against_the_label_gets_a_negative_attribution():
    e = explain("great game refs", lexicon_proba)
    by_token = {t.token: t.attribution for t in e.tokens}
    assert e.label == "positive"
    # removing "refs" raises p(positive): it pulls against the label; "game" does nothing
    assert by_token["refs"] < -0.01 and by_token["great"] > 0.5 and abs(by_token["game"]) < 1e-9


def test_explain_many_batches_every_text_into_one_call_and_matches_explain():
    scorer = Counting(lexicon_proba)
    texts = ["great stuff", "awful refs today", "nothing here"]
    many = explain_many(texts, scorer)
    assert scorer.calls == [(1 + 2) + (1 + 3) + (1 + 2)]
    assert [m.tokens for m in many] == [explain(t, lexicon_proba).tokens for t in texts]


def test_non_finite_probabilities_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        explain("great game", lambda texts: np.full((len(texts), 3), np.nan))


# Most confident mistakes
def test_most_confident_mistakes_are_ranked_explained_and_rendered(tmp_path):
    texts = ["great refs", "awful game", "a fine | day", "great *day*", "awful awful", "meh"]
    labels = ["negative", "negative", "neutral", "neutral", "negative", "neutral"]
    proba = lexicon_proba(texts)
    scorer = Counting(lexicon_proba)
    explained = explain_mistakes(texts, labels, proba, scorer, k=2)
    # the wrong rows are 0 and 3 (both predicted positive); row 3 is the more confident one
    assert explained.n_rows == 6 and explained.n_mistakes == 2
    assert [m.index for m in explained.mistakes] == [3, 0]
    assert proba[3].max() > proba[0].max()
    assert scorer.calls == [(1 + 4) + (1 + 2)]  # both mistakes' variants in one call
    top = explained.mistakes[0]
    assert (top.true, top.predicted) == ("neutral", "positive") and top.top[0].token == "great"
    assert explained.rows()[0][:3] == ["great *day*", "neutral", "positive"]
    assert len(explained.rows()[0]) == len(explained.columns)
    md = explained.markdown()
    assert md.startswith("## Most confident mistakes, explained")
    assert "| 1 | **great** \\*day\\* | neutral | positive |" in md  # markdown in a tweet is escaped

    # round trip through the model folder, and the model card's section
    save_explained_mistakes(tmp_path, explained)
    assert load_explained_mistakes(tmp_path) == explained
    from nfl_mlops.registry.card import explained_mistakes_section

    assert explained_mistakes_section(tmp_path) == md
    assert explained_mistakes_section(tmp_path / "nothing") is None
    (tmp_path / EXPLAINED_MISTAKES_FILE).write_text("{not json")
    assert load_explained_mistakes(tmp_path) is None


def test_k_larger_than_the_mistakes_and_no_mistakes():
    texts, labels = ["great", "awful"], ["positive", "negative"]
    none = explain_mistakes(texts, labels, lexicon_proba(texts), lexicon_proba, k=5)
    assert none.mistakes == [] and "No mistakes" in none.markdown()
    with pytest.raises(ValueError, match="do not match"):
        explain_mistakes(texts, labels[:1], lexicon_proba(texts), lexicon_proba)


def test_the_model_card_shows_the_section_from_the_folder(tmp_path):
    from nfl_mlops.registry.card import write_model_card

    texts = ["great refs", "meh"]
    save_explained_mistakes(
        tmp_path, explain_mistakes(texts, ["negative", "neutral"], lexicon_proba(texts), lexicon_proba)
    )
    info = SimpleNamespace(
        model_name="explain-card",
        version=1,
        metrics={},
        params={},
        lineage={},
        description=None,
        status="ready",
    )
    write_model_card(tmp_path, info, hub_repo=None)
    card = (tmp_path / "README.md").read_text()
    assert "## Most confident mistakes, explained" in card and "**great**" in card
    assert card.index("Most confident mistakes") < card.index("## Lineage")


# A real transformer that keys on one word
def train_keyword_model(out: Path, steps: int = 150, seed: int = 0) -> Path:
    """A one-layer BERT with a 40-word vocabulary trained to answer positive when a text says POSITIVE_WORD,
    negative for NEGATIVE_WORD, neutral otherwise (about 150 steps of 32 short texts: seconds of one core); saved in the Hugging Face layout
    with the project's labels, so `SentimentModel.load`, the ONNX export and the registry take it as a
    version. Words outside its vocabulary read as [UNK]."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, POSITIVE_WORD, NEGATIVE_WORD]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config)

    def example() -> tuple[str, int]:
        words = rng.choices(FILLER, k=rng.randint(2, 9))
        y = rng.randrange(3)
        if y != 1:
            words.insert(rng.randint(0, len(words)), POSITIVE_WORD if y == 2 else NEGATIVE_WORD)
        return " ".join(words), y

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only wait on each other
    for _ in range(steps):
        batch = [example() for _ in range(32)]
        enc = tokenizer([t for t, _ in batch], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([y for _, y in batch])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    model.config.nfl_mlops_max_length = 48
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def keyword_model_dir(tmp_path_factory) -> Path:
    return train_keyword_model(tmp_path_factory.mktemp("keyword-model"))


def _check_keyword_explanations(model) -> list:
    texts = [
        f"the crowd saw a {POSITIVE_WORD} at the stadium today",
        f"we watched the {NEGATIVE_WORD} on the field",
    ]
    out = explain_many(texts, model.predict_proba)
    assert [e.label for e in out] == ["positive", "negative"]
    for e, word in zip(out, (POSITIVE_WORD, NEGATIVE_WORD), strict=True):
        top = e.top(2)
        assert top[0].token == word, e.tokens
        assert top[0].attribution > 0.3 and top[0].attribution > 3 * max(top[1].attribution, 0.0), e.tokens
        assert e.text[top[0].start : top[0].end] == word
    return out


def test_a_real_model_keyed_on_a_word_is_explained_by_that_word(keyword_model_dir):
    from nfl_mlops.modeling.predictor import SentimentModel

    _check_keyword_explanations(SentimentModel.load(keyword_model_dir))


def test_the_same_explanation_through_onnx_runtime(keyword_model_dir, tmp_path):
    import shutil

    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.modeling.runtimes import export_fp32

    folder = tmp_path / "model"
    shutil.copytree(keyword_model_dir, folder)
    export_fp32(folder)
    torch_model = SentimentModel.load(folder)
    onnx_model = SentimentModel.load(folder, backend="onnx")
    assert onnx_model.backend == "onnx"
    by_onnx = _check_keyword_explanations(onnx_model)
    by_torch = explain_many([e.text for e in by_onnx], torch_model.predict_proba)
    for a, b in zip(by_onnx, by_torch, strict=True):
        assert [t.attribution for t in a.tokens] == pytest.approx([t.attribution for t in b.tokens], abs=1e-4)


def test_training_hook_writes_the_folder_file_from_a_real_model(keyword_model_dir, tmp_path):
    import shutil

    from nfl_mlops.modeling.explain import explain_test_mistakes

    folder = tmp_path / "candidate"
    shutil.copytree(keyword_model_dir, folder)
    texts = [f"a {POSITIVE_WORD} today", "fans in the stadium", f"the {NEGATIVE_WORD} we saw"]
    labels = ["negative", "neutral", "positive"]  # two mislabelled on purpose
    from nfl_mlops.modeling.predictor import SentimentModel

    proba = SentimentModel.load(folder).predict_proba(texts)
    explained = explain_test_mistakes(folder, texts, labels, proba, k=5)
    assert sorted(m.index for m in explained.mistakes) == [0, 2]
    assert {m.top[0].token for m in explained.mistakes} == {POSITIVE_WORD, NEGATIVE_WORD}
    assert load_explained_mistakes(folder) == explained
