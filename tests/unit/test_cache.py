"""The prediction cache: the in-process LRU, and RedisCache against a real Redis.

The Redis tests use `MLOPS_TEST_REDIS_URL`, or the Redis on 127.0.0.1:6379 when one listens
there; otherwise they are skipped with the reason. Each test writes under its own prefix and
deletes its keys afterwards. Outages are real too: a port where nothing listens, and a socket
that accepts connections but never answers.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest

from nfl_mlops.serving.cache import LRUCache, RedisCache, make_cache

A = {"label": "positive", "confidence": 0.9, "scores": {"negative": 0.05, "neutral": 0.05, "positive": 0.9}}
B = {"label": "negative", "confidence": 0.7, "scores": {"negative": 0.7, "neutral": 0.2, "positive": 0.1}}


# LRU
def test_lru_get_put_and_counts() -> None:
    c = LRUCache(max_items=10)
    assert c.get_many(1, ["a", "b"]) == [None, None]
    c.put_many(1, [("a", A), ("b", B)])
    assert c.get_many(1, ["b", "x", "a"]) == [B, None, A]
    assert (c.hits, c.misses) == (2, 3)
    assert c.get_many(1, []) == []


def test_lru_keys_by_version() -> None:
    c = LRUCache()
    c.put_many(1, [("a", A)])
    assert c.get_many(2, ["a"]) == [None]
    c.put_many(2, [("a", B)])
    assert c.get_many(1, ["a"]) == [A] and c.get_many(2, ["a"]) == [B]


def test_lru_evicts_the_least_recently_used() -> None:
    c = LRUCache(max_items=3)
    c.put_many(1, [("a", A), ("b", A), ("c", A)])
    c.get_many(1, ["a"])  # "a" is now the most recent; "b" the least
    c.put_many(1, [("d", A)])
    assert len(c) == 3
    assert c.get_many(1, ["a", "b", "c", "d"]) == [A, None, A, A]
    c.put_many(1, [("c", B)])  # overwriting refreshes, does not grow
    assert len(c) == 3 and c.get_many(1, ["c"]) == [B]


def test_lru_with_zero_items_is_disabled() -> None:
    c = LRUCache(max_items=0)
    c.put_many(1, [("a", A)])
    assert c.get_many(1, ["a"]) == [None] and len(c) == 0


def test_lru_is_safe_under_threads() -> None:
    c = LRUCache(max_items=500)

    def work(t: int) -> None:
        for i in range(2000):
            c.put_many(t, [(f"k{i % 700}", A)])
            c.get_many(t, [f"k{(i * 7) % 700}"])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(c) == 500
    assert c.hits + c.misses == 4 * 2000


def test_make_cache_picks_the_backend() -> None:
    assert isinstance(make_cache(None), LRUCache)
    r = make_cache("redis://127.0.0.1:1/0", namespace="m")
    assert isinstance(r, RedisCache) and r.prefix.endswith(":m")


# Redis: outages (no Redis needed)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_refused_connection_is_a_miss_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache(f"redis://127.0.0.1:{_free_port()}/0", retry_seconds=60)
    with caplog.at_level(logging.WARNING, logger="nfl_mlops.serving.cache"):
        assert cache.get_many(1, ["a", "b"]) == [None, None]
        cache.put_many(1, [("a", A)])
        for _ in range(20):
            assert cache.get_many(1, ["a"]) == [None]
    assert cache.failures == 1, "after a failure the cache must stay away from Redis"
    assert not cache.available
    assert cache.misses == 22 and cache.hits == 0
    assert len([r for r in caplog.records if "redis cache" in r.getMessage()]) == 1


class SilentServer:
    """Accepts TCP connections and never answers: a hung Redis (the worst kind of outage)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_redis_that_hangs_times_out_once_then_is_skipped() -> None:
    server = SilentServer()
    try:
        cache = RedisCache(f"redis://127.0.0.1:{server.port}/0", timeout_seconds=0.2, retry_seconds=60)
        assert cache.get_many(1, ["a"]) == [None]  # one socket timeout
        for _ in range(50):  # skipped: no new connection, no new timeout
            assert cache.get_many(1, ["a"]) == [None]
            cache.put_many(1, [("a", A)])
        assert cache.failures == 1
        assert len(server.accepted) == 1
    finally:
        server.close()


def test_redis_is_tried_again_after_the_back_off() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{_free_port()}/0", retry_seconds=0)
    for _ in range(3):
        assert cache.get_many(1, ["a"]) == [None]
    assert cache.failures == 3


# Redis: the real server
def _redis_url() -> str | None:
    url = os.environ.get("MLOPS_TEST_REDIS_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return "redis://127.0.0.1:6379/0"
    except OSError:
        return None


@pytest.fixture()
def redis_cache() -> Iterator[RedisCache]:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis: MLOPS_TEST_REDIS_URL is unset and nothing listens on 127.0.0.1:6379")
    cache = RedisCache(
        url, namespace=f"test-{uuid.uuid4().hex[:8]}", prefix="nfl-mlops-test:pred", ttl_seconds=300
    )
    try:
        cache.client.ping()
    except Exception as exc:
        pytest.skip(f"Redis at {url} does not answer PING: {exc}")
    yield cache
    keys = list(cache.client.scan_iter(match=f"{cache.prefix}:*"))
    if keys:
        cache.client.delete(*keys)
    cache.close()


@pytest.mark.redis
def test_redis_round_trip(redis_cache: RedisCache) -> None:
    assert redis_cache.get_many(3, ["a", "b"]) == [None, None]
    redis_cache.put_many(3, [("a", A), ("b", B)])
    assert redis_cache.get_many(3, ["b", "a", "c"]) == [B, A, None]
    assert redis_cache.get_many(4, ["a"]) == [None]
    assert (redis_cache.hits, redis_cache.misses) == (2, 4)
    assert redis_cache.failures == 0
    ttl = redis_cache.client.ttl(redis_cache._key(3, "a"))
    assert 0 < ttl <= 300


@pytest.mark.redis
def test_redis_namespaces_keep_models_apart(redis_cache: RedisCache) -> None:
    other = RedisCache(
        _redis_url() or "",
        namespace=redis_cache.prefix.rsplit(":", 1)[1] + "-other",
        prefix="nfl-mlops-test:pred",
        ttl_seconds=300,
    )
    try:
        redis_cache.put_many(1, [("a", A)])
        assert other.get_many(1, ["a"]) == [None]
        # two replicas of the same model share the answers
        twin = RedisCache(
            _redis_url() or "", namespace=redis_cache.prefix.rsplit(":", 1)[1], prefix="nfl-mlops-test:pred"
        )
        assert twin.get_many(1, ["a"]) == [A]
        twin.close()
    finally:
        other.close()


@pytest.mark.redis
def test_redis_corrupt_entry_is_a_miss(redis_cache: RedisCache) -> None:
    redis_cache.client.set(redis_cache._key(1, "bad"), b"{not json", ex=60)
    redis_cache.client.set(redis_cache._key(1, "list"), b"[1, 2]", ex=60)
    assert redis_cache.get_many(1, ["bad", "list"]) == [None, None]
    redis_cache.put_many(1, [("bad", A)])
    assert redis_cache.get_many(1, ["bad"]) == [A]


@pytest.mark.redis
def test_redis_outage_then_recovery(redis_cache: RedisCache) -> None:
    """A working cache loses its server (connection refused), degrades to misses, then recovers."""
    redis_cache.put_many(1, [("a", A)])
    assert redis_cache.get_many(1, ["a"]) == [A]
    real_pool = redis_cache.client.connection_pool
    import redis

    redis_cache.client.connection_pool = redis.ConnectionPool.from_url(
        f"redis://127.0.0.1:{_free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    redis_cache.retry_seconds = 0.0
    assert redis_cache.get_many(1, ["a"]) == [None]
    redis_cache.put_many(1, [("b", B)])  # skipped or failed, never raised
    assert redis_cache.failures >= 1
    redis_cache.client.connection_pool = real_pool  # the server is back
    assert redis_cache.get_many(1, ["a"]) == [A]
