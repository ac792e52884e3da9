"""Prediction cache keyed by (model version, text hash): in-process LRU, or Redis when configured.

Both keep their answers under a namespace (the model name), so two models that share a Redis
never read each other's version 1. A cache is an optimisation only: every failure is a miss.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PredictionCache(Protocol):
    hits: int
    misses: int

    def get_many(self, version: int, hashes: list[str]) -> list[dict[str, Any] | None]: ...
    def put_many(self, version: int, items: list[tuple[str, dict[str, Any]]]) -> None: ...


class LRUCache:
    """Thread-safe in-process LRU (the embedded default); `max_items=0` disables it."""

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get_many(self, version: int, hashes: list[str]) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        with self._lock:
            for h in hashes:
                value = self._data.get((version, h))
                if value is None:
                    self.misses += 1
                else:
                    self._data.move_to_end((version, h))
                    self.hits += 1
                out.append(value)
        return out

    def put_many(self, version: int, items: list[tuple[str, dict[str, Any]]]) -> None:
        if self.max_items <= 0:
            return
        with self._lock:
            for h, value in items:
                self._data[(version, h)] = value
                self._data.move_to_end((version, h))
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class RedisCache:
    """Shared cache for several API replicas; a Redis outage degrades to cache misses, never errors.

    Calls are synchronous with short socket timeouts (the service runs them in a thread, off the event loop). After a failure the cache stays away from
    Redis for `retry_seconds` (every lookup is a miss, every write is skipped), so an outage costs
    the event loop at most one timeout per `retry_seconds`, not one per request, and logs at most
    once per `retry_seconds`.
    """

    remote = True
    """Calls go over the network: the service makes them from a worker thread, off the event loop."""

    def __init__(
        self,
        url: str,
        namespace: str = "default",
        prefix: str = "nfl-mlops:pred",
        ttl_seconds: int = 86_400,
        timeout_seconds: float = 0.25,
        retry_seconds: float = 5.0,
    ) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self.prefix = f"{prefix}:{namespace}"
        self.ttl = ttl_seconds
        self.retry_seconds = retry_seconds
        self.hits = 0
        self.misses = 0
        self.failures = 0
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        """False while the cache is backing off after a failure."""
        return time.monotonic() >= self._down_until

    def _key(self, version: int, h: str) -> str:
        return f"{self.prefix}:{version}:{h}"

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        log.warning(
            "redis cache %s failed (%s: %s); treating it as empty for %.0fs",
            what,
            type(exc).__name__,
            exc,
            self.retry_seconds,
        )
        self._down_until = time.monotonic() + self.retry_seconds

    def get_many(self, version: int, hashes: list[str]) -> list[dict[str, Any] | None]:
        if not hashes:
            return []
        if not self.available:
            self.misses += len(hashes)
            return [None] * len(hashes)
        try:
            raw = self.client.mget([self._key(version, h) for h in hashes])
        except Exception as exc:
            self._failed("read", exc)
            self.misses += len(hashes)
            return [None] * len(hashes)
        out: list[dict[str, Any] | None] = []
        for r in raw:
            try:
                value = json.loads(r) if r is not None else None
            except ValueError:  # a corrupt entry is a miss (and is overwritten on the way out)
                value = None
            out.append(value if isinstance(value, dict) else None)
        hits = sum(v is not None for v in out)
        self.hits += hits
        self.misses += len(out) - hits
        return out

    def put_many(self, version: int, items: list[tuple[str, dict[str, Any]]]) -> None:
        if not items or not self.available:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for h, value in items:
                pipe.set(self._key(version, h), json.dumps(value), ex=self.ttl)
            pipe.execute()
        except Exception as exc:
            self._failed("write", exc)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def make_cache(
    redis_url: str | None, max_items: int = 50_000, namespace: str = "default"
) -> LRUCache | RedisCache:
    """Redis when `redis_url` is set, else the in-process LRU."""
    return RedisCache(redis_url, namespace=namespace) if redis_url else LRUCache(max_items)
