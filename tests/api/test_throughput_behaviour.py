"""How the service behaves under concurrency, over real HTTP (behaviour only: nothing is timed).

- concurrent single requests are answered from shared forward passes (the batch-size histogram
  of /metrics counts fewer forwards than requests);
- inference runs off the event loop: while a forward pass is held inside the model, the same
  process still answers /mlops/health;
- a version is loaded and warmed before traffic switches to it, not on its first request;
- repeated texts are answered from the cache without a forward pass;
- overload is shed: a full queue answers 503 with Retry-After at once;
- shadow copies are bounded (half the queue) and dropped before any request is shed, and counted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.api.helpers import (
    ServerHandle,
    api_settings,
    make_client,
    register_versions,
    serving,
    wait_serving,
)

pytestmark = pytest.mark.slow

MODEL_NAME = "api-throughput"
TWEETS = [
    "Brady was brilliant tonight",
    "Worst call of the season, refs blew it",
    "Kickoff is at 6:30 on Sunday",
    "Deflategate again? Enough already",
    "Seahawks defense is elite",
]


@pytest.fixture(scope="module")
def server(settings, tiny_model_dir) -> Iterator[ServerHandle]:
    from nfl_mlops.rollout import state as rollouts

    s = api_settings(MODEL_NAME, max_batch_size=64, max_wait_ms=5.0)
    assert register_versions(MODEL_NAME, tiny_model_dir, 2, s) == [1, 2]
    rollouts.activate(MODEL_NAME, 1, reason="throughput tests: initial", db_url=s.db_url)
    with serving(s) as handle:
        yield handle


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_concurrent_requests_share_forward_passes(server: ServerHandle) -> None:
    n = 48
    with make_client(server.base_url) as c:
        before = c.get("/metrics").text
    local = threading.local()
    clients = []

    def one(i: int) -> int:
        if not hasattr(local, "c"):
            local.c = make_client(server.base_url)
            clients.append(local.c)
        r = local.c.post("/mlops/predict/sentiment", json={"text": f"{TWEETS[i % len(TWEETS)]} (share {i})"})
        assert r.status_code == 200, r.text
        return r.json()["model_version"]

    pool = ThreadPoolExecutor(max_workers=n)
    try:
        versions = list(pool.map(one, range(n)))
    finally:
        pool.shutdown()
        for cl in clients:
            cl.close()
    assert versions == [1] * n
    with make_client(server.base_url) as c:
        after = c.get("/metrics").text
    texts = _metric(after, "nfl_mlops_batch_size_sum") - _metric(before, "nfl_mlops_batch_size_sum")
    forwards = _metric(after, "nfl_mlops_batch_size_count") - _metric(before, "nfl_mlops_batch_size_count")
    assert texts == n  # every text went through the model once (all new, no cache hits)
    assert forwards < n, f"{n} concurrent requests took {forwards:.0f} forward passes: nothing was batched"
    # the histogram's first bucket (batches of 1) holds fewer than all of the forwards
    ones = _metric(after, 'nfl_mlops_batch_size_bucket{le="1.0"}') - _metric(
        before, 'nfl_mlops_batch_size_bucket{le="1.0"}'
    )
    assert ones < forwards


def test_inference_runs_off_the_event_loop(server: ServerHandle) -> None:
    service = server.service
    batcher = service.batcher_for(1)  # the forward pass v1's requests go through (the model's predict, bound)
    entered, release = threading.Event(), threading.Event()
    real_infer = batcher.infer

    def held_infer(texts):
        entered.set()
        assert release.wait(60), "the test never released the forward pass"
        return real_infer(texts)

    batcher.infer = held_infer
    try:
        with make_client(server.base_url) as c, ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(
                c.post, "/mlops/predict/sentiment", json={"text": "held in the model (loop test)"}
            )
            assert entered.wait(60), "the request never reached the model"
            # the forward pass is blocked inside the inference thread; the event loop must still answer
            with make_client(server.base_url) as other:
                assert other.get("/mlops/health").status_code == 200
                assert other.get("/mlops/status").status_code == 200
            release.set()
            r = pending.result(timeout=60)
            assert r.status_code == 200, r.text
    finally:
        release.set()
        batcher.infer = real_infer


def test_overload_is_a_fast_503_with_retry_after(server: ServerHandle) -> None:
    """With the model busy and the queue full, a request is refused at once (503, Retry-After, a message
    that says why), never queued without bound; the queued ones are answered once the model is free."""
    service = server.service
    batcher = service.batcher_for(1)
    entered, release = threading.Event(), threading.Event()
    real_infer, real_max = batcher.infer, batcher.max_queued

    def held_infer(texts):
        entered.set()
        assert release.wait(60), "the test never released the forward pass"
        return real_infer(texts)

    batcher.infer, batcher.max_queued = held_infer, 2
    try:
        with make_client(server.base_url) as c, ThreadPoolExecutor(max_workers=3) as pool:
            held = pool.submit(c.post, "/mlops/predict/sentiment", json={"text": "held (overload test)"})
            assert entered.wait(60), "the request never reached the model"
            queued = [
                pool.submit(c.post, "/mlops/predict/sentiment", json={"text": f"queued {i} (overload test)"})
                for i in range(2)
            ]
            threading.Event().wait(0.5)  # let both reach the batcher's queue
            assert batcher.waiting == 2
            with make_client(server.base_url) as other:
                r = other.post("/mlops/predict/sentiment", json={"text": "one too many (overload test)"})
                assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
                assert "overloaded" in r.json()["detail"] and "wait for the model" in r.json()["detail"]
                metrics = other.get("/metrics").text
                assert 'status="503"' in metrics
                assert _metric(metrics, 'nfl_mlops_shed_total{reason="queue_full"}') >= 1
            release.set()
            assert held.result(timeout=60).status_code == 200
            assert [q.result(timeout=60).status_code for q in queued] == [200, 200]
    finally:
        release.set()
        batcher.infer, batcher.max_queued = real_infer, real_max


def test_a_new_version_is_loaded_and_warmed_before_it_serves(server: ServerHandle, monkeypatch) -> None:
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.rollout import state as rollouts

    warmed: list[str] = []
    real_warmup = SentimentModel.warmup

    def recording_warmup(self, *args, **kwargs):
        result = real_warmup(self, *args, **kwargs)
        warmed.append(self.name)
        return result

    monkeypatch.setattr(SentimentModel, "warmup", recording_warmup)
    service = server.service
    forwards_before = service.metrics.batch_size._sum.get()
    try:
        rollouts.activate(MODEL_NAME, 2, reason="throughput tests: v2", db_url=server.settings.db_url)
        with make_client(server.base_url) as c:
            wait_serving(c, 2)
            # warmed during the switch, before any request reached v2
            assert warmed == [f"{MODEL_NAME}-v2"]
            assert service.metrics.batch_size._sum.get() == forwards_before
            r = c.post("/mlops/predict/sentiment", json={"text": "first request to v2"})
            assert r.status_code == 200 and r.json()["model_version"] == 2
            assert warmed == [f"{MODEL_NAME}-v2"]  # the request did not load or warm anything
            assert 1 in service.loaded_versions  # the previous version stays warm for a rollback
    finally:
        rollouts.activate(MODEL_NAME, 1, reason="throughput tests: back to v1", db_url=server.settings.db_url)
        with make_client(server.base_url) as c:
            wait_serving(c, 1)


def test_repeated_texts_are_answered_from_the_cache(server: ServerHandle) -> None:
    service = server.service
    text = "Cached: the Pats win again"
    with make_client(server.base_url) as c:
        first = c.post("/mlops/predict/sentiment", json={"text": text}).json()
        forwards = service.metrics.batch_size._sum.get()
        hits = service.metrics.cache_hits._value.get()
        again = [c.post("/mlops/predict/sentiment", json={"text": text}).json() for _ in range(5)]
    assert service.metrics.batch_size._sum.get() == forwards  # no text went through the model again
    assert service.metrics.cache_hits._value.get() == hits + 5
    assert {a["label"] for a in again} == {first["label"]}
    assert {a["confidence"] for a in again} == {first["confidence"]}
    assert (
        len({a["prediction_id"] for a in again} | {first["prediction_id"]}) == 6
    )  # each answer has its own row


def test_shadow_copies_are_bounded_and_dropped_first(server: ServerHandle) -> None:
    """A shadow copy runs only while waiting texts plus shadow texts in flight stay within half of
    MLOPS_MAX_QUEUED_TEXTS: over it the copy is dropped (counted as shed, reason shadow), the request is not."""
    from nfl_mlops.rollout import state as rollouts

    service, cfg = server.service, server.settings
    real_max = cfg.max_queued_texts
    with make_client(server.base_url) as c:
        body = {
            "model_id": MODEL_NAME,
            "model_version": 2,
            "strategy": "shadow",
            "shadow": {"min_requests": 100_000, "check_seconds": 3600},
        }
        r = c.post("/mlops/deployments", json=body)
        assert r.status_code == 201, r.text
        dep = r.json()["deployment_id"]
        try:
            wait_until_serving_shadow = 0
            while (
                "shadow" not in (service.rollout.arms if service.rollout else {})
                or 2 not in service.loaded_versions
            ):
                threading.Event().wait(0.1)
                wait_until_serving_shadow += 1
                assert wait_until_serving_shadow < 600, "the replica never served the shadow rollout"
            cfg.max_queued_texts = 2  # half: one shadow text at a time
            shadow_before = service.metrics.shadow_predictions.labels("2")._value.get()
            r = c.post("/mlops/predict/sentiment/batch", json={"texts": ["shadow bound a", "shadow bound b"]})
            assert r.status_code == 200 and r.json()["model_version"] == 1  # the request itself is answered
            metrics = c.get("/metrics").text
            assert (
                _metric(metrics, 'nfl_mlops_shed_total{reason="shadow"}') == 2.0
            )  # both shadow texts dropped
            r = c.post("/mlops/predict/sentiment", json={"text": "shadow bound c"})
            assert r.status_code == 200
            for _ in range(300):  # the admitted copy runs in the background
                if service.metrics.shadow_predictions.labels("2")._value.get() > shadow_before:
                    break
                threading.Event().wait(0.05)
            assert service.metrics.shadow_predictions.labels("2")._value.get() == shadow_before + 1
            assert _metric(c.get("/metrics").text, 'nfl_mlops_shed_total{reason="shadow"}') == 2.0
        finally:
            cfg.max_queued_texts = real_max
            c.post(f"/mlops/deployments/{dep}/rollback")
            rollouts.activate(MODEL_NAME, 1, reason="throughput tests: after shadow", db_url=cfg.db_url)
            wait_serving(c, 1)


def test_a_slow_remote_cache_never_stalls_the_event_loop(server: ServerHandle) -> None:
    """Redis calls run in a thread: while one hangs (up to the client's socket timeout; the real client's
    timeouts and back-off are tested in tests/unit/test_cache.py), the process answers other requests."""
    service = server.service
    entered, release = threading.Event(), threading.Event()

    class HangingRemoteCache:
        remote = True

        def get_many(self, version, hashes):
            entered.set()
            release.wait(30)
            return [None] * len(hashes)

        def put_many(self, version, items):
            return None

    real = service.cache
    service.cache = HangingRemoteCache()
    try:
        with make_client(server.base_url) as c, ThreadPoolExecutor(max_workers=1) as pool:
            stuck = pool.submit(c.post, "/mlops/predict/sentiment", json={"text": "slow cache test"})
            assert entered.wait(30), "the request never reached the cache"
            with make_client(server.base_url) as other:
                assert other.get("/mlops/health/live", timeout=5).status_code == 200
            assert not stuck.done()
            release.set()
            assert stuck.result(timeout=30).status_code == 200
    finally:
        release.set()
        service.cache = real
