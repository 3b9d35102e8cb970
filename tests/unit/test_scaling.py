"""ScalePolicy: sizing examples and the properties the operator relies on (bounds, no flapping,
monotone in lag)."""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from medevents.cluster import Member
from medevents.config import AutoscaleSettings, ProcessorSettings
from medevents.local.autoscaler import scale_spec, with_floor
from medevents.scaling import Decision, Observation, ScaleSpec, ScaleState, desired_replicas, per_pod_capacity

SPEC = ScaleSpec(
    min_replicas=1,
    max_replicas=10,
    partitions=16,
    target_drain_s=10,
    scale_down_window_s=30,
    max_scale_down_step=2,
    concurrency=10,
    delay_s=1.0,  # fallback: 10 events/s per pod
)


def decide(spec: ScaleSpec, obs: Observation, state: ScaleState | None = None) -> Decision:
    return desired_replicas(spec, state or ScaleState(), obs)


def test_backlog_and_arrivals_size_the_pods() -> None:
    # 300 queued / 10 s + 20/s arriving = 50/s; 10/s per pod -> 5 pods
    d = decide(SPEC, Observation(now=0, lag=300, arrival_rate=20, current=1))
    assert (d.replicas, d.reason, d.per_pod_rate) == (5, "ScaleUp", 10.0)
    assert "fallback" in d.message


def test_measured_rate_wins_over_the_fallback() -> None:
    d = decide(SPEC, Observation(now=0, lag=300, arrival_rate=20, current=1, per_pod_rate=25))
    assert (d.replicas, d.per_pod_rate) == (2, 25)


def test_clamped_to_max_and_partitions() -> None:
    assert decide(SPEC, Observation(now=0, lag=10**6, arrival_rate=0, current=1)).replicas == 10
    few = msgspec_replace(SPEC, partitions=4)
    assert decide(few, Observation(now=0, lag=10**6, arrival_rate=0, current=1)).replicas == 4


def msgspec_replace(spec: ScaleSpec, **changes: object) -> ScaleSpec:
    return msgspec.structs.replace(spec, **changes)


def test_scale_down_waits_for_the_window_and_steps() -> None:
    state = ScaleState()
    d = desired_replicas(SPEC, state, Observation(now=0, lag=1000, arrival_rate=0, current=1))
    assert d.replicas == 10
    replicas, t, trace = d.replicas, 0.0, []
    state = d.state
    while t < 80:
        t += 2
        d = desired_replicas(SPEC, state, Observation(now=t, lag=0, arrival_rate=5, current=replicas))
        state, replicas = d.state, d.replicas
        trace.append((t, replicas, d.reason))
    # Nothing comes down within the 30 s window, then 2 at a time to the 1 pod 5/s needs.
    assert all(r == 10 for t, r, _ in trace if t < 30)
    downs = [r for _, r, reason in trace if reason == "ScaleDown"]
    assert downs == [8, 6, 4, 2, 1]
    assert trace[-1][1] == 1


def test_scale_to_zero_after_idle_and_back_on_arrival() -> None:
    spec = msgspec_replace(SPEC, min_replicas=0, idle_s=60, scale_down_window_s=10)
    state, replicas, t = ScaleState(), 1, 0.0
    d = desired_replicas(spec, state, Observation(now=t, lag=5, arrival_rate=1, current=replicas))
    state, replicas = d.state, d.replicas
    seen = []
    while t < 100:
        t += 2
        d = desired_replicas(spec, state, Observation(now=t, lag=0, arrival_rate=0, current=replicas))
        state, replicas = d.state, d.replicas
        seen.append((t, replicas, d.reason))
    zero_at = next(t for t, r, _ in seen if r == 0)
    assert 60 <= zero_at <= 72  # idle window, then the down window
    assert ("ScaleToZero" in [reason for _, _, reason in seen]) and replicas == 0
    d = desired_replicas(spec, state, Observation(now=t + 2, lag=1, arrival_rate=0, current=0))
    assert (d.replicas, d.reason) == (1, "Activate")


def test_zero_stays_zero_without_work() -> None:
    spec = msgspec_replace(SPEC, min_replicas=0)
    d = decide(spec, Observation(now=0, lag=0, arrival_rate=0, current=0))
    assert (d.replicas, d.reason) == (0, "Hold")


def test_a_replica_count_outside_the_bounds_is_brought_back() -> None:
    assert decide(SPEC, Observation(now=0, lag=0, arrival_rate=0, current=40)).replicas == 10
    spec = msgspec_replace(SPEC, min_replicas=3)
    assert decide(spec, Observation(now=0, lag=0, arrival_rate=0, current=0)).replicas == 3


def test_scale_up_window_takes_the_lowest_recent_target() -> None:
    spec = msgspec_replace(SPEC, scale_up_window_s=10)
    d1 = decide(spec, Observation(now=0, lag=20, arrival_rate=0, current=1))  # target 1
    d2 = desired_replicas(spec, d1.state, Observation(now=2, lag=1000, arrival_rate=0, current=1))
    assert d2.replicas == 1
    assert d2.reason == "Stabilizing"
    d3 = desired_replicas(spec, d2.state, Observation(now=12, lag=1000, arrival_rate=0, current=1))
    assert d3.replicas == 10


def test_per_pod_capacity_from_heartbeats() -> None:
    def member(in_flight: int, rate: float, draining: bool = False) -> Member:
        return Member(
            id="m",
            pod="p",
            in_flight=in_flight,
            capacity=100,
            partitions=[0],
            processed_per_s=rate,
            draining=draining,
        )

    assert per_pod_capacity([]) is None
    assert per_pod_capacity([member(0, 0.0)]) is None
    # half busy at 10/s -> could do 20/s; saturated at 30/s -> 30/s; a draining pod is ignored
    assert per_pod_capacity([member(50, 10.0), member(100, 30.0), member(1, 500.0, True)]) == 25.0


# --- properties -------------------------------------------------------------------------------

specs = st.builds(
    ScaleSpec,
    min_replicas=st.integers(0, 5),
    max_replicas=st.integers(1, 40),
    partitions=st.integers(1, 32),
    target_drain_s=st.floats(1, 600),
    scale_up_window_s=st.sampled_from([0.0, 5.0, 30.0]),
    scale_down_window_s=st.sampled_from([0.0, 10.0, 60.0, 300.0]),
    max_scale_down_step=st.integers(1, 8),
    idle_s=st.sampled_from([0.0, 30.0, 300.0]),
    concurrency=st.integers(1, 5000),
    delay_s=st.floats(0, 10),
)
lags = st.integers(0, 10**7)
rates = st.floats(0, 10**5)
pod_rates = st.none() | st.floats(0.01, 10**4)
steps = st.lists(st.tuples(st.floats(0.1, 60), lags, rates, pod_rates), min_size=1, max_size=30)


@given(specs, steps, st.integers(0, 100))
def test_bounds_always_hold(
    spec: ScaleSpec, trace: list[tuple[float, int, float, float | None]], start: int
) -> None:
    state, replicas, now = ScaleState(), start, 0.0
    for dt, lag, arrival, pod_rate in trace:
        now += dt
        d = desired_replicas(spec, state, Observation(now, lag, arrival, replicas, pod_rate))
        ceiling = max(spec.min_replicas, min(spec.max_replicas, spec.partitions))
        assert spec.min_replicas <= d.replicas <= ceiling
        if d.replicas < replicas and replicas <= spec.ceiling:
            assert replicas - d.replicas <= spec.max_scale_down_step
        state, replicas = d.state, d.replicas


@given(specs, lags, rates, pod_rates, st.integers(0, 40), st.floats(0.5, 30))
def test_constant_input_never_flaps(
    spec: ScaleSpec, lag: int, arrival: float, pod_rate: float | None, start: int, poll: float
) -> None:
    state, replicas, seen = ScaleState(), start, [start]
    for i in range(1, 200):
        d = desired_replicas(spec, state, Observation(i * poll, lag, arrival, replicas, pod_rate))
        state, replicas = d.state, d.replicas
        seen.append(replicas)
    changes = [b - a for a, b in itertools.pairwise(seen) if b != a]
    assert all(c > 0 for c in changes) or all(c < 0 for c in changes), seen
    assert seen[-1] == seen[-2]  # settled


@given(specs, steps, lags, lags, rates, pod_rates, st.integers(0, 40))
def test_more_lag_never_fewer_pods(
    spec: ScaleSpec,
    history: list[tuple[float, int, float, float | None]],
    lag_a: int,
    lag_b: int,
    arrival: float,
    pod_rate: float | None,
    start: int,
) -> None:
    state, replicas, now = ScaleState(), start, 0.0
    for dt, lag, rate, pr in history:  # any past
        now += dt
        d = desired_replicas(spec, state, Observation(now, lag, rate, replicas, pr))
        state, replicas = d.state, d.replicas
    low, high = sorted((lag_a, lag_b))
    now += 1
    fewer = desired_replicas(spec, state, Observation(now, low, arrival, replicas, pod_rate))
    more = desired_replicas(spec, state, Observation(now, high, arrival, replicas, pod_rate))
    assert more.replicas >= fewer.replicas
    assert more.target >= fewer.target


@given(specs, steps, st.integers(1, 10**7), rates, st.integers(0, 40))
def test_no_scale_down_on_a_guessed_rate_while_there_is_lag(
    spec: ScaleSpec,
    history: list[tuple[float, int, float, float | None]],
    lag: int,
    arrival: float,
    start: int,
) -> None:
    state, replicas, now = ScaleState(), start, 0.0
    for dt, past_lag, rate, pr in history:  # any past, measured or not
        now += dt
        d = desired_replicas(spec, state, Observation(now, past_lag, rate, replicas, pr))
        state, replicas = d.state, d.replicas
    d = desired_replicas(spec, state, Observation(now + 1, lag, arrival, replicas, None))
    assert d.replicas >= replicas or replicas > spec.ceiling  # only the bounds bring it down


def test_a_backlog_without_a_measured_rate_keeps_the_pods() -> None:
    """The case seen with `medevents up`: 257 queued right after start, no rate measured yet, a
    40 ms handler (fallback 50,000/s per pod) -> it went 2 -> 1. It holds until a rate is measured."""
    spec = msgspec_replace(SPEC, concurrency=2000, delay_s=0.04, scale_down_window_s=0)
    state, replicas = ScaleState(), 2
    for t in range(0, 60, 2):
        d = desired_replicas(spec, state, Observation(now=t, lag=257, arrival_rate=0, current=replicas))
        state, replicas = d.state, d.replicas
        assert (replicas, d.reason) == (2, "Hold"), d.message
        assert "no scale-down while lag" in d.message
    d = desired_replicas(
        spec, state, Observation(now=60, lag=257, arrival_rate=0, current=2, per_pod_rate=400)
    )
    assert d.replicas == 1  # measured: 257 / 10 s drain = 26/s is one pod's work
    d = desired_replicas(spec, ScaleState(), Observation(now=0, lag=0, arrival_rate=0, current=2))
    assert d.replicas == 1  # no lag, nothing to protect


@given(
    st.integers(0, 8),
    st.integers(1, 8),
    st.none() | st.integers(0, 64),
    st.integers(1, 32),
    steps,
)
def test_the_processors_asked_for_always_run(
    low: int,
    high: int,
    asked: int | None,
    partitions: int,
    trace: list[tuple[float, int, float, float | None]],
) -> None:
    """`medevents up --processors N`: the local autoscaler never runs fewer than N, whatever the
    backlog does; without the option the configured minimum holds as before."""
    settings = with_floor(AutoscaleSettings(min_processors=min(low, high), max_processors=high), asked)
    floor = min(low, high) if asked is None else asked
    assert settings.min_processors == floor and settings.max_processors >= floor
    spec = scale_spec(settings, ProcessorSettings(), partitions)
    state, replicas, now = ScaleState(), floor, 0.0
    for dt, lag, arrival, pod_rate in trace:
        now += dt
        d = desired_replicas(spec, state, Observation(now, lag, arrival, replicas, pod_rate))
        assert d.replicas >= floor, d.message
        state, replicas = d.state, d.replicas
