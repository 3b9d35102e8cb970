"""One test per cluster weakness that a fault run cannot pin down on its own (the others are
checked on every run in test_faults.py): lost acks, PubAcks on a dropped connection, start-up
while new assets have no leader."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import nats
from integration.processor_support import (
    Published,
    Recorder,
    check_exactly_once_in_order,
    fast_settings,
    publish,
    wait_for_documents,
)
from nats.aio.client import Client as NATS

from medevents import topology
from medevents.backlog import read_backlog
from medevents.config import MongoSettings, NatsSettings, StreamSettings
from medevents.local import EmbeddedNatsCluster
from medevents.natsconn import ensure_stream
from medevents.processor import Processor
from medevents.processor.consumers import ensure_consumer

from .harness import PARTITIONS, REPLICAS, IngestProcess, system_env

STREAM = StreamSettings(partitions=PARTITIONS, replicas=REPLICAS)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        await nc.close()


async def stream_leader(nc: NATS) -> str:
    info = await nc.jetstream(timeout=2).stream_info(topology.STREAM)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def test_acks_lost_in_a_consumer_leader_change_are_sent_again(
    nats_cluster: EmbeddedNatsCluster, mongo_settings: MongoSettings
) -> None:
    """Weakness 1: acks sent while a consumer has no leader are lost; sent again until confirmed,
    the lag reads zero seconds after the new leaders are elected, not after the ack wait (30 s)."""
    async with connected(nats_cluster.url) as nc:
        js = nc.jetstream(timeout=5)
        await ensure_stream(js, STREAM)
        settings = fast_settings(ack_wait_s=30.0)
        leaders = {}
        for p in range(PARTITIONS):
            info, _ = await ensure_consumer(js, p, ack_wait_s=30.0, max_ack_pending=settings.max_ack_pending)
            assert info.cluster is not None
            leaders[p] = info.cluster.leader
        led = [n.server_name for n in nats_cluster.nodes if n.server_name != await stream_leader(nc)]
        victim = max(led, key=lambda n: list(leaders.values()).count(n))
        assert victim in leaders.values()
        # The processor talks to another node: its acks reach the victim's consumers through it
        # (connected to the victim, nats-py would hold them back while reconnecting instead).
        entry = next(n for n in nats_cluster.nodes if n.server_name != victim)
        recorder = Recorder(delay_ms=(100, 200))  # each patient's 8 events take about a second
        processor = Processor(settings, NatsSettings(url=entry.url), STREAM, mongo_settings, handler=recorder)
        await processor.start()
        try:
            published = await publish(js, [f"ack-{i}" for i in range(50)], 8, Published())
            # Kill once processing is under way: the processor holds the rest, and the acks of
            # about a third of them go to consumers the victim leads.
            await wait_for_documents(mongo_settings, 50, timeout=30)
            nats_cluster.kill(victim)
            docs = await wait_for_documents(mongo_settings, len(published.events), timeout=60)
            check_exactly_once_in_order(published, docs)
            led_again = time.monotonic()
            while True:  # the moved consumers' new leaders
                backlog = await read_backlog(js, partitions=PARTITIONS)
                if not backlog.leaderless:
                    break
                assert time.monotonic() - led_again < 60, backlog
                await asyncio.sleep(0.2)
            led_again = time.monotonic()
            lags = []
            while time.monotonic() - led_again < 6.0:
                backlog = await read_backlog(js, partitions=PARTITIONS)
                lags.append(backlog.lag)
                if backlog.complete and backlog.lag == 0:
                    break
                await asyncio.sleep(0.25)
            assert lags[-1] == 0, f"phantom lag after the handover: {lags}"
            print(f"lag true {time.monotonic() - led_again:.2f} s after the new consumer leaders: {lags}")
            resent = processor.metrics.registry.get_sample_value("medevents_processor_acks_resent_total")
            assert resent, "no ack was sent again: the fault did not hit any ack"
        finally:
            await processor.drain(2.0)
            await processor.close()
            await asyncio.to_thread(nats_cluster.restart, victim)


async def test_pubacks_awaited_on_a_dropped_connection_fail_at_once(
    tmp_path: Path, nats_cluster: EmbeddedNatsCluster, mongo_settings: MongoSettings
) -> None:
    """Weakness 4: publishes awaiting a PubAck are answered 503 as soon as ingest's connection
    drops, not when the publish timeout runs out; the 503 says the event may have been stored,
    and a retry with the same body is de-duplicated."""
    async with connected(nats_cluster.url) as nc:
        await ensure_stream(nc.jetstream(timeout=5), STREAM)
        leader = await stream_leader(nc)
    frozen = nats_cluster.node(leader)
    entry = next(n for n in nats_cluster.nodes if n.server_name != leader)
    env = system_env(nats_cluster, mongo_settings) | {"NATS_URL": entry.url, "INGEST_PUBLISH_TIMEOUT_S": "10"}
    ingest = IngestProcess(tmp_path, env)
    try:
        await ingest.wait_ready()
        bodies = [
            {"patientId": f"puback-{i}", "type": "vitals", "data": {"n": i}, "ts": "2025-10-01T10:30:00Z"}
            for i in range(10)
        ]
        async with httpx.AsyncClient(base_url=ingest.url, timeout=30) as client:
            assert frozen.child is not None
            frozen.child.signal(signal.SIGSTOP)  # the stream leader takes the publishes, answers none
            try:
                posts = [asyncio.create_task(client.post("/events", json=b)) for b in bodies]
                await asyncio.sleep(1.5)
                assert not any(p.done() for p in posts)
                killed_at = time.monotonic()
                entry.kill()  # ingest's own server: the PubAcks can no longer come back
                answers = await asyncio.gather(*posts)
                answered_after = time.monotonic() - killed_at
            finally:
                frozen.child.signal(signal.SIGCONT)
            assert [a.status_code for a in answers] == [503] * len(bodies)
            assert answered_after < 3.0, f"answered {answered_after:.1f} s after the drop (timeout 10 s)"
            # Sent ones may have been stored; ones still queued behind them (group commit) were
            # never sent, and say so.
            details = [a.json()["detail"] for a in answers]
            sent = [d for d in details if "not known to be accepted" in d]
            assert sent and all("retry with the same event id" in d for d in sent)
            assert all(d in sent or d.endswith("the event was not accepted") for d in details)
            await asyncio.to_thread(entry.start)
            await ingest.wait_ready()
            retried = [await client.post("/events", json=b) for b in bodies]
        assert [r.status_code for r in retried] == [202] * len(bodies)
        ids = {r.json()["eventId"] for r in retried}
        async with connected(nats_cluster.url) as nc:
            js = nc.jetstream(timeout=5)
            info = await js.stream_info(topology.STREAM)
            stored = [await js.get_msg(topology.STREAM, s) for s in range(1, info.state.last_seq + 1)]
        stored_ids = [m.headers["Nats-Msg-Id"] for m in stored if m.headers]
        assert sorted(stored_ids) == sorted(ids), "each event is in the stream once, retried or not"
        print(
            "stored before the retry (answered as duplicates):", sum(r.json()["duplicate"] for r in retried)
        )
    finally:
        ingest.child.stop(20)


async def test_processors_starting_together_wait_for_leaders(
    nats_cluster: EmbeddedNatsCluster, mongo_settings: MongoSettings
) -> None:
    """Weakness 6: processors that start while new assets (stream, consumers, KV buckets) cannot
    get a leader wait for one instead of dying; here two start together on a fresh cluster whose
    other two nodes are frozen, and come up once those are back."""
    live, *others = nats_cluster.nodes
    settings = NatsSettings(url=live.url)
    for node in others:
        assert node.child is not None
        node.child.signal(signal.SIGSTOP)
    processors = [Processor(fast_settings(), settings, STREAM, mongo_settings) for _ in range(2)]
    starts = [asyncio.create_task(p.start()) for p in processors]
    try:
        try:
            await asyncio.sleep(7.0)  # longer than one JetStream request's timeout (5 s)
            dead = [t.exception() for t in starts if t.done()]
            assert not dead, f"a processor died while the cluster had no quorum: {dead!r}"
        finally:
            for node in others:
                assert node.child is not None
                node.child.signal(signal.SIGCONT)
        await asyncio.wait_for(asyncio.gather(*starts), 90)
        async with connected(nats_cluster.url) as nc:
            published = await publish(nc.jetstream(timeout=5), ["start-a", "start-b"], 5, Published())
        docs = await wait_for_documents(mongo_settings, len(published.events), timeout=60)
        check_exactly_once_in_order(published, docs)
    finally:
        for task, processor in zip(starts, processors, strict=True):
            if not task.done():
                task.cancel()
            if processor.lanes is not None:
                await processor.drain(1.0)
            await processor.close()


async def test_start_up_waits_until_a_replicated_stream_can_be_placed(tmp_path: Path) -> None:
    """Weakness 6, found by the soak: ingest or a processor that starts on a fresh cluster whose
    nodes have not all met yet is refused placement of the R3 stream ("no suitable peers", 10005);
    start-up waits for them instead of exiting. Here the third node starts 4 s late."""
    cluster = EmbeddedNatsCluster(tmp_path / "nats")
    first, second, third = cluster.nodes
    try:
        for node in (first, second):
            node.spawn()
        await asyncio.to_thread(cluster.wait_healthy, 30.0, [first, second])
        async with connected(first.url) as nc:
            creating = asyncio.create_task(ensure_stream(nc.jetstream(timeout=5), STREAM))
            try:
                await asyncio.sleep(4.0)
                if creating.done():
                    raise AssertionError(
                        f"start-up did not wait for the third node: {creating.exception()!r}"
                    )
                await asyncio.to_thread(third.start)
                info = await asyncio.wait_for(creating, 60)
            finally:
                creating.cancel()
        assert info.config.num_replicas == REPLICAS and info.cluster is not None and info.cluster.leader
    finally:
        await asyncio.to_thread(cluster.stop)
