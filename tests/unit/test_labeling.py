"""Labelling under a budget: the selection (uncertain, diverse, never near-duplicates), the queue in the
state DB, and Label Studio's task format both ways (all or nothing)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest


def _proba(margin: np.ndarray) -> np.ndarray:
    """Three-class probabilities whose top-1 minus top-2 is `margin`."""
    top2 = (1 - margin) / 2.0
    top1 = top2 + margin
    rest = 1 - top1 - top2
    return np.stack([top1, top2, rest], axis=1)


def test_margins_are_top1_minus_top2() -> None:
    from nfl_mlops.monitoring.labeling import margins

    got = margins(np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.34, 0.33, 0.33]]))
    assert np.allclose(got, [0.2, 0.7, 0.01])
    with pytest.raises(ValueError, match="rows x classes"):
        margins(np.array([0.2, 0.8]))


def test_selection_prefers_uncertain_tweets_and_spreads_over_clusters() -> None:
    """Three clusters of tweets; the most uncertain ones all sit in cluster 0. Uncertainty alone would
    spend the budget there; the selection covers every cluster among the uncertain pool."""
    from nfl_mlops.monitoring.labeling import select_diverse_uncertain

    rng = np.random.default_rng(0)
    centers = np.eye(8)[:3] * 10
    cluster = np.repeat([0, 1, 2], 20)
    emb = centers[cluster] + rng.normal(0, 1.0, (60, 8))
    margin = np.where(cluster == 0, 0.05, 0.4) + rng.uniform(0, 0.02, 60)
    margin[cluster == 2] = 0.9  # cluster 2 is certain: outside the uncertain pool
    texts = [f"tweet number {i}" for i in range(60)]
    sel = select_diverse_uncertain(
        texts, _proba(margin), emb, budget=6, pool_factor=4, duplicate_similarity=0.999
    )
    picked = sel.picked
    assert len(picked) == 6 and len(set(picked)) == 6
    assert picked[0] == int(np.argmin(margin))  # the first pick is the least certain
    assert {int(cluster[i]) for i in picked} == {0, 1}  # both uncertain clusters, never the certain one
    assert sel.pool_size == 24


def test_a_coverage_share_of_the_budget_reaches_traffic_the_model_is_sure_about() -> None:
    """With a coverage share, part of the budget covers every candidate (k-center over all, after the
    uncertain picks): the certain cluster, which margins alone never reach, gets labels too."""
    from nfl_mlops.monitoring.labeling import select_diverse_uncertain

    rng = np.random.default_rng(0)
    centers = np.eye(8)[:3] * 10
    cluster = np.repeat([0, 1, 2], 20)
    emb = centers[cluster] + rng.normal(0, 1.0, (60, 8))
    margin = np.where(cluster == 2, 0.9, 0.05) + rng.uniform(0, 0.02, 60)
    texts = [f"tweet number {i}" for i in range(60)]
    only_pool = select_diverse_uncertain(texts, _proba(margin), emb, budget=6, pool_factor=2)
    covered = select_diverse_uncertain(
        texts, _proba(margin), emb, budget=6, pool_factor=2, coverage_share=0.5
    )
    assert {int(cluster[i]) for i in only_pool.picked} == {0, 1}
    assert len(covered.picked) == 6 and len(set(covered.picked)) == 6
    assert {int(cluster[i]) for i in covered.picked[:3]} <= {0, 1}  # the uncertain half comes first
    assert 2 in {int(cluster[i]) for i in covered.picked[3:]}
    with pytest.raises(ValueError, match="coverage_share"):
        select_diverse_uncertain(texts, _proba(margin), emb, budget=6, coverage_share=1.5)


def test_near_duplicates_and_repeated_texts_are_never_both_picked() -> None:
    from nfl_mlops.monitoring.labeling import normalise, select_diverse_uncertain

    rng = np.random.default_rng(1)
    base = rng.normal(size=(10, 16))
    emb = np.concatenate([base, base + rng.normal(0, 1e-3, base.shape)])  # 10 near-duplicate pairs
    texts = [f"text {i}" for i in range(20)]
    texts[5] = "RT @nfl: Brady did it https://t.co/abc"
    texts[6] = "brady did it   https://t.co/xyz"  # the same tweet after normalising
    emb[6] = rng.normal(size=16) * 5  # though its embedding is far away
    sel = select_diverse_uncertain(texts, _proba(np.linspace(0.01, 0.5, 20)), emb, budget=20)
    picked = sel.picked
    assert len(picked) < 20 and sel.duplicates_skipped == 20 - len(picked)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit[picked] @ unit[picked].T - np.eye(len(picked))
    assert sims.max() < 0.95
    assert len({normalise(texts[i]) for i in picked}) == len(picked)
    assert normalise(texts[5]) == normalise(texts[6]) == "brady did it <url>"


def test_typical_selection_takes_the_dense_core_of_every_cluster_biggest_first() -> None:
    """Three clusters (30, 20 and 10 tweets) each with outliers around a dense core: one pick per cluster,
    the most typical tweet (nearest the core), never an outlier; the biggest cluster first; near-duplicates
    of a pick or of what was queued before are never picked."""
    from nfl_mlops.monitoring.labeling import select_typical

    rng = np.random.default_rng(0)
    centers = np.eye(16)[:3] * 10
    cluster = np.repeat([0, 1, 2], [30, 20, 10])
    spread = np.where(np.arange(60) % 5 == 0, 3.0, 0.5)  # every fifth tweet an outlier of its cluster
    emb = centers[cluster] + rng.normal(0, 1.0, (60, 16)) * spread[:, None]
    texts = [f"tweet number {i}" for i in range(60)]
    proba = _proba(rng.uniform(0, 1, 60))
    sel = select_typical(texts, proba, emb, budget=3)
    assert [int(cluster[i]) for i in sel.picked] == [0, 1, 2]
    assert all(spread[i] == 0.5 for i in sel.picked)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    core = [unit[cluster == c].mean(axis=0) for c in range(3)]
    for i in sel.picked:  # the pick is among the 5 members nearest its cluster's centre
        c = int(cluster[i])
        members = np.flatnonzero(cluster == c)
        closeness = unit[members] @ core[c]
        assert i in set(members[np.argsort(-closeness)[:5]].tolist())

    # queued before: a near-copy of cluster 0's pick blocks it, and its next most typical member comes
    again = select_typical(texts, proba, emb, budget=3, already=emb[[sel.picked[0]]] * 1.0001)
    assert sel.picked[0] not in again.picked and int(cluster[again.picked[0]]) == 0
    # a budget beyond the clusters: more members, each at most once; duplicate texts count as skipped
    texts[1] = texts[2]
    more = select_typical(texts, proba, emb, budget=12)
    assert len(more.picked) == 12 == len(set(more.picked)) and more.duplicates_skipped >= 1
    with pytest.raises(ValueError, match="differ"):
        select_typical(texts[:10], proba, emb, budget=3)
    assert select_typical([], np.zeros((0, 3)), np.zeros((0, 16)), budget=3).picked == []


def _served_tweets(tmp_path, n: int, ids, confidence) -> str:
    """A state DB with `n` served predictions of model "m" v1, "tweet {i} about the game"; its URL."""
    from nfl_mlops.db import Prediction, session_scope

    db = f"sqlite:///{tmp_path / 'state.db'}"
    now = datetime.now(UTC)
    with session_scope(db) as s:
        for i in range(n):
            s.add(
                Prediction(
                    id=ids(i),
                    request_id=f"r{i}",
                    created_at=now,
                    model_name="m",
                    model_version=1,
                    text=f"tweet {i} about the game",
                    text_hash=str(i),
                    label="neutral",
                    confidence=confidence(i),
                    latency_ms=1.0,
                )
            )
    return db


def test_the_queue_tops_up_to_its_budget_and_labels_come_back_from_label_studio(tmp_path) -> None:
    from nfl_mlops.monitoring import labeling as lb

    db = _served_tweets(tmp_path, 40, lambda i: f"p{i:03d}", lambda i: 0.5)
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(40, 8))
    by_text = {f"tweet {i} about the game": i for i in range(40)}
    margin = rng.uniform(0, 1, 40)

    def proba(texts):
        return _proba(margin[[by_text[t] for t in texts]])

    def encode(texts):
        return emb[[by_text[t] for t in texts]]

    first = lb.top_up_queue(
        "m", "ep1", lb.queue_candidates("m", 1, None, None, db), proba, encode, 10, db_url=db
    )
    assert (first.queued_before, first.added, first.candidates) == (0, 10, 40)
    again = lb.top_up_queue(
        "m", "ep1", lb.queue_candidates("m", 1, None, None, db), proba, encode, 15, db_url=db
    )
    assert (again.queued_before, again.added, again.candidates) == (
        10,
        5,
        30,
    )  # queued ones are not candidates
    page = lb.read_queue("m", "ep1", "pending", 0, 100, db)
    assert page.total == 15 and page.pending == 15 and len(page.items) == 15
    assert [i.rank for i in page.items] == list(range(15))

    tasks = lb.label_studio_tasks(page.items[:4], "m")
    assert tasks[0]["data"]["prediction_id"] == page.items[0].prediction_id
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == ["neutral"]
    # what Label Studio exports: annotations added, one task skipped by its annotator, one cancelled
    tasks[0]["annotations"] = [_annotation("Positive")]
    tasks[1]["annotations"] = [_annotation("negative", cancelled=True), _annotation("neutral")]
    tasks[2]["annotations"] = [_annotation("negative", cancelled=True)]
    tasks[3]["annotations"] = []
    got = lb.import_label_studio(tasks, "m", db)
    assert sorted(got.labelled) == sorted(t["data"]["prediction_id"] for t in tasks[:2])
    assert [x["prediction_id"] for x in got.skipped] == [t["data"]["prediction_id"] for t in tasks[2:]]
    page = lb.read_queue("m", "ep1", "labelled", 0, 100, db)
    assert {(i.prediction_id, i.true_label) for i in page.items} == {
        (tasks[0]["data"]["prediction_id"], "positive"),
        (tasks[1]["data"]["prediction_id"], "neutral"),
    }
    assert lb.queue_progress("m", "ep1", db) == (15, 2)

    # a label outside the classes refuses the whole file: nothing recorded
    bad = lb.label_studio_tasks(lb.read_queue("m", "ep1", "pending", 0, 2, db).items, "m")
    bad[0]["annotations"] = [_annotation("neutral")]
    bad[1]["annotations"] = [_annotation("meh")]
    with pytest.raises(lb.LabelImportError, match="'meh' is not one of"):
        lb.import_label_studio(bad, "m", db)
    assert lb.queue_progress("m", "ep1", db) == (15, 2)
    with pytest.raises(lb.LabelImportError, match="a list of tasks"):
        lb.import_label_studio({"data": {}}, "m", db)
    with pytest.raises(lb.LabelImportError, match="prediction_id is missing"):
        lb.import_label_studio([{"data": {"text": "x"}}], "m", db)
    # another model's prediction is unknown to this one
    other = lb.label_studio_tasks(lb.read_queue("m", "ep1", "pending", 0, 1, db).items, "m")
    other[0]["annotations"] = [_annotation("neutral")]
    assert lb.import_label_studio(other, "another-model", db).unknown == [other[0]["data"]["prediction_id"]]


def test_the_typical_strategy_samples_the_window_and_queues_one_tweet_per_region(tmp_path) -> None:
    """`MLOPS_LABELING_STRATEGY=typical`: the database cut is a uniform sample of the window (not its least
    confident predictions, which the margin strategy wants), and the queue gets the typical tweet of each
    cluster of the traffic."""
    from nfl_mlops.monitoring import labeling as lb

    # ids are random hex in the service (here their order is i's); the later, the less confident
    db = _served_tweets(tmp_path, 40, lambda i: f"{i:02x}" * 8, lambda i: 1.0 - i / 100)
    unsure = lb.queue_candidates("m", 1, None, None, db, limit=10)
    sample = lb.queue_candidates("m", 1, None, None, db, limit=10, strategy="typical")
    assert [t for _, t in unsure] == [f"tweet {i} about the game" for i in range(39, 29, -1)]
    assert sorted(t for _, t in sample) == sorted(f"tweet {i} about the game" for i in range(10))

    rng = np.random.default_rng(3)
    cluster = np.arange(40) % 4  # four regions of the traffic
    emb = np.eye(8)[cluster] * 10 + rng.normal(0, 0.5, (40, 8))
    by_text = {f"tweet {i} about the game": i for i in range(40)}
    margin = np.linspace(0.9, 0.0, 40)  # the uncertain ones: cluster order 3, 2, 1, 0 repeated

    def proba(texts):
        return _proba(margin[[by_text[t] for t in texts]])

    def encode(texts):
        return emb[[by_text[t] for t in texts]]

    got = lb.top_up_queue(
        "m",
        "ep1",
        lb.queue_candidates("m", 1, None, None, db, strategy="typical"),
        proba,
        encode,
        4,
        db_url=db,
        strategy="typical",
    )
    assert got.added == 4
    picked = [by_text[i.text] for i in lb.read_queue("m", "ep1", "pending", 0, 10, db).items]
    assert sorted(int(cluster[i]) for i in picked) == [0, 1, 2, 3]


def _annotation(choice: str, cancelled: bool = False) -> dict:
    return {
        "was_cancelled": cancelled,
        "result": [
            {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}
        ],
    }


def test_the_sdk_pages_the_queue_and_imports_label_studio_exports(tmp_path) -> None:
    import asyncio

    from nfl_mlops.db import LabelingTask, Prediction, session_scope
    from nfl_mlops.monitoring import labeling as lb
    from nfl_mlops.sdk import MLOpsService
    from nfl_mlops.settings import Settings

    db = f"sqlite:///{tmp_path / 'sdk.db'}"
    with session_scope(db) as s:
        for i in range(3):
            s.add(
                Prediction(
                    id=f"q{i}",
                    request_id="r",
                    model_name="m",
                    model_version=2,
                    text=f"go hawks {i}",
                    text_hash=str(i),
                    label="positive",
                    confidence=0.6,
                    latency_ms=1.0,
                )
            )
            s.add(LabelingTask(model_name="m", episode_id="e", prediction_id=f"q{i}", rank=i, margin=0.1 * i))
    sdk = MLOpsService(Settings(model_name="m", database_url=db, mlops_home=tmp_path))
    page = asyncio.run(sdk.labeling_queue(episode_id="e"))
    assert (page["total"], page["pending"]) == (3, 3) and [i["prediction_id"] for i in page["items"]] == [
        "q0",
        "q1",
        "q2",
    ]
    tasks = lb.label_studio_tasks(lb.read_queue("m", "e", db_url=db).items[:1], "m")
    tasks[0]["annotations"] = [_annotation("negative")]
    assert asyncio.run(sdk.import_labels(tasks))["labelled"] == 1
    assert (
        asyncio.run(sdk.labeling_queue(episode_id="e", status="labelled"))["items"][0]["true_label"]
        == "negative"
    )
