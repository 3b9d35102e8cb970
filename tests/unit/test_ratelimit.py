"""The token bucket: never more than burst + rate x elapsed requests, and a truthful Retry-After."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from medevents.ingest._ratelimit import Bucket, RateLimiter, take

rates = st.floats(min_value=0.1, max_value=1000, allow_nan=False)
bursts = st.integers(min_value=1, max_value=500)
gaps = st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=300)


@given(rates, bursts, gaps)
def test_never_admits_more_than_burst_plus_refill(rate: float, burst: int, steps: list[float]) -> None:
    bucket: Bucket | None = None
    now, admitted = 0.0, 0
    for gap in steps:
        now += gap
        bucket, wait = take(bucket, now, rate, burst)
        admitted += wait == 0.0
        assert 0.0 <= bucket.tokens <= burst
    assert admitted <= burst + rate * now + 1e-6


@given(rates, bursts)
def test_waiting_the_announced_time_is_enough(rate: float, burst: int) -> None:
    bucket: Bucket | None = None
    for _ in range(burst):
        bucket, wait = take(bucket, 0.0, rate, burst)
        assert wait == 0.0, "a new client gets its whole burst"
    bucket, wait = take(bucket, 0.0, rate, burst)
    assert wait > 0.0
    _, again = take(bucket, wait, rate, burst)
    assert again == 0.0


@given(rates, bursts, st.floats(min_value=0, max_value=100, allow_nan=False))
def test_clock_going_back_refills_nothing(rate: float, burst: int, back: float) -> None:
    empty = Bucket(0.0, 100.0)
    bucket, wait = take(empty, 100.0 - back, rate, burst)
    assert wait > 0.0 and bucket.tokens == 0.0


def test_limiter_keys_are_independent_and_retry_after_is_whole_seconds() -> None:
    now = [0.0]
    limiter = RateLimiter(0.5, 2, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 2]
    assert limiter.check("b") == 0, "another client has its own bucket"
    now[0] = 2.0
    assert limiter.check("a") == 0
    assert limiter.check("a") == 2


def test_zero_rate_is_off() -> None:
    limiter = RateLimiter(0, 1)
    assert not limiter.enabled
    assert all(limiter.check("a") == 0 for _ in range(1000))
    assert len(limiter) == 0


def test_a_flood_of_clients_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(1, 5, clock=lambda: now[0], max_clients=100)
    for i in range(10_000):
        now[0] += 0.0001
        limiter.check(f"client-{i}")
        assert len(limiter) <= 100
    # Clients that refilled are forgotten first: after a quiet spell, room for everyone.
    now[0] += 10
    limiter.check("late")
    assert len(limiter) == 1
    assert math.isclose(limiter.rate, 1)
