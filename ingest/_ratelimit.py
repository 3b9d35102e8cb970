"""Per-client rate limit: a token bucket per bearer token (or per client address when auth is off).

The decision is a pure function over a small state (:func:`take`); :class:`RateLimiter` only keeps
the buckets and the clock. Limits are per process: with W workers and N pods a client may send
up to W x N times the configured rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Bucket", "RateLimiter", "take"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tokens left (fractional) at monotonic time ``at``."""

    tokens: float
    at: float


def take(bucket: Bucket | None, now: float, rate: float, burst: int) -> tuple[Bucket, float]:
    """Spend one token. Returns the new bucket and 0.0 when allowed, else the bucket unchanged
    (refilled to ``now``) and the seconds until one token is back.

    A new client starts with a full bucket; tokens refill at ``rate`` per second up to ``burst``.
    A clock that goes backwards refills nothing.
    """
    tokens = float(burst) if bucket is None else min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= 1.0 - _EPSILON:  # waiting exactly the announced time must be enough
        return Bucket(max(0.0, tokens - 1.0), now), 0.0
    return Bucket(tokens, now), (1.0 - tokens) / rate


class RateLimiter:
    """Buckets by client key; ``rate`` 0 turns the limit off."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str) -> int:
        """0 when ``key`` may proceed, else the whole seconds to wait (for ``Retry-After``)."""
        if not self.enabled:
            return 0
        now = self._clock()
        bucket, wait = take(self._buckets.get(key), now, self.rate, self.burst)
        if key not in self._buckets and len(self._buckets) >= self._max_clients:
            self._forget_full(now)
        self._buckets[key] = bucket
        return 0 if wait == 0.0 else max(1, math.ceil(wait))

    def _forget_full(self, now: float) -> None:
        """Drop clients whose bucket has refilled: they are indistinguishable from new ones. If
        every client is still limited (a flood of distinct keys), drop the oldest half."""
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < refill}
        if len(self._buckets) >= self._max_clients:
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1].at)[len(self._buckets) // 2 :]
            self._buckets = dict(keep)

    def __len__(self) -> int:
        return len(self._buckets)
