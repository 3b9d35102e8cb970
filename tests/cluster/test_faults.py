"""Faults of the production topology: 3 nats-server nodes, stream EVENTS with 3 replicas, ingest
and two processors as real processes, a client retrying every 503 with the same event.

Each fault runs once (a module fixture) and the tests below check one property of the run each,
so a failure names what broke. `make test` runs the stream leader SIGKILL; `make soak` runs every
fault. The run's measurements are printed and kept in ``<tmp>/summary.json``.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from medevents.backlog import Backlog
from medevents.config import MongoSettings
from medevents.local import EmbeddedNatsCluster

from .harness import (
    PARTITIONS,
    PROBE_TIMEOUT_S,
    ClusterSystem,
    Fault,
    FaultRun,
    cluster_system,
    run_fault,
)


async def _kill_stream_leader(system: ClusterSystem) -> list[str]:
    leader = await system.stream_leader()
    system.cluster.kill(leader)
    return [leader]


async def _term_stream_leader(system: ClusterSystem) -> list[str]:
    leader = await system.stream_leader()
    await asyncio.to_thread(system.cluster.terminate, leader)
    return [leader]


async def _followers(system: ClusterSystem) -> list[str]:
    """The nodes that do not lead the stream, the one leading the most consumers first."""
    stream_leader = await system.stream_leader()
    leads = list((await system.consumer_leaders()).values())
    others = [n.server_name for n in system.cluster.nodes if n.server_name != stream_leader]
    return sorted(others, key=lambda n: -leads.count(n))


async def _kill_consumer_leader(system: ClusterSystem) -> list[str]:
    node = (await _followers(system))[0]
    system.cluster.kill(node)
    return [node]


async def _kill_follower(system: ClusterSystem) -> list[str]:
    node = (await _followers(system))[-1]
    system.cluster.kill(node)
    return [node]


async def _kill_two(system: ClusterSystem) -> list[str]:
    nodes = [await system.stream_leader(), (await _followers(system))[0]]
    for node in nodes:
        system.cluster.kill(node)
    return nodes


async def _rolling_restart(system: ClusterSystem) -> list[str]:
    for node in system.cluster.nodes:
        await asyncio.to_thread(system.cluster.terminate, node.server_name)
        await asyncio.to_thread(system.cluster.restart, node.server_name)
        await asyncio.to_thread(system.cluster.wait_healthy, 60.0, [node])
        await system.wait_all_led()
    return []


FAULTS = [
    pytest.param(Fault("stream leader SIGKILL", _kill_stream_leader), id="stream-leader-sigkill"),
    pytest.param(
        Fault("stream leader SIGKILL", _kill_stream_leader),
        id="stream-leader-sigkill-again",
        marks=pytest.mark.soak,
    ),
    pytest.param(
        Fault("stream leader SIGTERM", _term_stream_leader),
        id="stream-leader-sigterm",
        marks=pytest.mark.soak,
    ),
    pytest.param(
        Fault("consumer leader SIGKILL", _kill_consumer_leader),
        id="consumer-leader-sigkill",
        marks=pytest.mark.soak,
    ),
    pytest.param(Fault("follower SIGKILL", _kill_follower), id="follower-sigkill", marks=pytest.mark.soak),
    pytest.param(
        Fault("2 of 3 nodes SIGKILL for 10 s", _kill_two, restart_after_s=10.0, single_handover=False),
        id="two-of-three-down",
        marks=pytest.mark.soak,
    ),
    pytest.param(
        Fault("rolling SIGTERM restart", _rolling_restart, single_handover=False),
        id="rolling-restart",
        marks=pytest.mark.soak,
    ),
]


@pytest.fixture(scope="module", params=FAULTS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mongo_uri: str) -> FaultRun:
    fault: Fault = request.param
    tmp = tmp_path_factory.mktemp("cluster")
    mongo = MongoSettings(uri=mongo_uri, db=f"t_{uuid.uuid4().hex[:12]}")

    async def go() -> FaultRun:
        cluster = EmbeddedNatsCluster(tmp / "nats")
        await asyncio.to_thread(cluster.start)
        try:
            async with cluster_system(tmp, cluster, mongo) as system:
                return await run_fault(system, fault)
        finally:
            await asyncio.to_thread(cluster.stop)

    result = asyncio.run(go())
    summary = json.dumps(result.summary(), indent=2)
    (tmp / "summary.json").write_text(summary)
    print(f"\n{summary}\n(logs under {tmp})")
    return result


def test_every_accepted_event_is_stored_once_in_order(run: FaultRun) -> None:
    v = run.verification
    assert v.ok, v.samples
    assert (v.missing, v.stored_twice, v.out_of_order, v.failed) == (0, 0, 0, 0)
    assert v.expected == run.load.accepted > 0


def test_no_component_exits(run: FaultRun) -> None:
    assert all(run.alive.values()), run.alive
    crashes = {
        name: line for name, text in run.logs.items() for line in text.splitlines() if "Traceback" in line
    }
    assert not crashes, crashes


def test_backlog_reader_and_status_keep_answering(run: FaultRun) -> None:
    """Weakness 5: while a consumer (or the stream) has no leader, the backlog reader and
    `medevents status` report what they could read, marked partial, instead of failing."""
    failed = [(round(t - run.fault_at, 1), r) for t, _, r in run.watch.backlog if isinstance(r, str)]
    assert not failed, f"backlog reads failed (seconds after the fault): {failed}"
    failed = [(round(t - run.fault_at, 1), r) for t, _, r in run.watch.status if isinstance(r, str)]
    assert not failed, f"status failed: {failed}"
    slow = [round(took, 1) for _, took, _ in run.watch.backlog if took > 6.0]
    assert not slow, f"backlog reads took {slow} s (each request waits at most 2 s)"
    for _, _, result in run.watch.status:
        assert isinstance(result, dict)
        assert result["complete"] == (not result["partial"])
    partial = [b for _, _, b in run.watch.backlog if isinstance(b, Backlog) and not b.complete]
    if run.election_s > 2.0:  # an election long enough for the 0.5 s samples to catch it
        assert partial, "no read was marked partial while the stream elected a leader"


def test_readiness_follows_whether_publishing_can_succeed(run: FaultRun) -> None:
    """Weakness 3: ingest /readyz answers within the probe timeout, is false while publishing
    fails (stream without a leader) and true again once it works."""
    slow = [
        (round(t - run.fault_at, 1), round(took, 1)) for t, status, took in run.watch.readyz if status == 0
    ]
    assert not slow, f"/readyz gave no answer within the {PROBE_TIMEOUT_S:g} s probe timeout: {slow}"
    windows = run.load.unavailable_windows(run.fault_at - 1)
    for start, end in windows:
        if end - start < 2.5:
            continue  # too short for 0.25 s samples behind a 2 s check to catch for sure
        inside = [status for t, status, _ in run.watch.readyz if start <= t <= end]
        assert 503 in inside, f"ready all through {end - start:.1f} s of failing publishes: {inside}"
    last_end = max((end for _, end in windows), default=run.fault_at)
    after = [status for t, status, _ in run.watch.readyz if last_end + 3.0 <= t]
    why = {round(t - run.fault_at, 1): body for t, body in run.watch.not_ready.items() if last_end + 3.0 <= t}
    assert after and all(status == 200 for status in after), f"not ready while publishing works: {why}"


def test_lag_is_true_soon_after_the_handover(run: FaultRun) -> None:
    """Weakness 1: once every accepted event is stored, the lag reads zero within seconds, not
    after the ack wait (30 s) that acks lost in the handover would leave it up for. (While load
    runs, a lag read is too noisy to tell a few lost acks from events in flight; the load stops
    2 s after the new leaders are in, so this bounds the phantom lag to seconds after them.)"""
    assert run.all_stored_at is not None, "not every accepted event was stored"
    assert run.true_lag_at is not None, "the lag never read zero within 40 s of everything stored"
    assert run.true_lag_at - run.all_stored_at < 5.0


def test_partitions_stall_no_longer_than_the_election(run: FaultRun) -> None:
    """Weakness 2: a partition whose consumer leader stayed put resumes within about a second
    of the stream's new leader (the fence's lookups retry fast), however long the election."""
    if not run.fault.single_handover:
        pytest.skip("several handovers: no single election to compare with")
    unmoved = [p for p in run.unmoved() if p in run.stalls]
    if not unmoved:  # rare: each processor pins a node, and owns about half the partitions
        pytest.skip(f"no partition kept its consumer leader and its processor's connection: {run.summary()}")
    bound = run.election_s + 1.0 + max(0.5, run.baseline_stall)  # + what this machine adds anyway
    late = {p: round(run.stalls[p], 2) for p in unmoved if run.stalls[p] > bound}
    details = {p: run.stalled[p] for p in late}
    assert not late, (
        f"stalls beyond the election ({run.election_s:.2f} s) + 1 s: {late}; {details}; {run.summary()}"
    )


def test_no_partition_waits_for_the_ack_wait(run: FaultRun) -> None:
    """Every partition, its consumer leader moved or not, resumes well before the ack wait (30 s)
    would redeliver what a leader change lost (nats-py's fetch dropped such deliveries). Left out:
    partitions of a processor whose own connection went with the node (see FaultRun.cut_off)."""
    checked = {p: s for p, s in run.stalls.items() if p not in run.cut_off()}
    if not checked:
        pytest.skip("every processor lost its connection: in-flight deliveries wait the ack wait")
    bound = run.election_s + 15.0
    late = {p: round(s, 2) for p, s in checked.items() if s > bound}
    details = {p: run.stalled[p] for p in late}
    assert not late, f"partitions stalled beyond the election + 15 s: {late}; {details}; {run.summary()}"


def test_one_warning_per_partition_not_per_event(run: FaultRun) -> None:
    """Weakness 2: a leader change logs one line per partition, not one per held event per retry."""
    for name, text in run.logs.items():
        warnings = [line for line in text.splitlines() if '"level":"WARNING"' in line]
        fence = [line for line in warnings if "fence" in line]
        fetch = [line for line in warnings if "fetch failed" in line]
        outages = 3 if run.fault.name.startswith("rolling") else 1
        assert len(fence) <= PARTITIONS * outages, f"{name}: {len(fence)} fence warnings"
        assert len(fetch) <= PARTITIONS * outages, f"{name}: {len(fetch)} fetch warnings"
