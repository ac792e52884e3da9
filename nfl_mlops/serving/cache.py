"""Prediction cache keyed by (model version, text hash): in-process LRU, or Redis when configured."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any, Protocol

log = logging.getLogger(__name__)


class PredictionCache(Protocol):
    def get_many(self, version: int, hashes: list[str]) -> list[dict[str, Any] | None]: ...
    def put_many(self, version: int, items: list[tuple[str, dict[str, Any]]]) -> None: ...


class LRUCache:
    """Thread-safe in-process LRU (the embedded default)."""

    def __init__(self, max_items: int = 50_000) -> None:
        self.max_items = max_items
        self._data: OrderedDict[tuple[int, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

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
        with self._lock:
            for h, value in items:
                self._data[(version, h)] = value
                self._data.move_to_end((version, h))
            while len(self._data) > self.max_items:
                self._data.popitem(last=False)


class RedisCache:
    """Shared cache for several API replicas; a Redis outage degrades to cache misses, never errors."""

    def __init__(self, url: str, prefix: str = "nfl-mlops:pred", ttl_seconds: int = 86_400) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix
        self.ttl = ttl_seconds
        self.hits = 0
        self.misses = 0

    def _key(self, version: int, h: str) -> str:
        return f"{self.prefix}:{version}:{h}"

    def get_many(self, version: int, hashes: list[str]) -> list[dict[str, Any] | None]:
        try:
            raw = self.client.mget([self._key(version, h) for h in hashes])
        except Exception as exc:
            log.warning("redis cache unavailable: %s", exc)
            self.misses += len(hashes)
            return [None] * len(hashes)
        out = [json.loads(r) if r is not None else None for r in raw]
        self.hits += sum(v is not None for v in out)
        self.misses += sum(v is None for v in out)
        return out

    def put_many(self, version: int, items: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for h, value in items:
                pipe.set(self._key(version, h), json.dumps(value), ex=self.ttl)
            pipe.execute()
        except Exception as exc:
            log.warning("redis cache write failed: %s", exc)


def make_cache(redis_url: str | None, max_items: int = 50_000) -> LRUCache | RedisCache:
    return RedisCache(redis_url) if redis_url else LRUCache(max_items)
