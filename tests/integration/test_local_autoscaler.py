"""The local autoscaler and ``medevents status`` against a real nats-server.

The processes are replaced by a counting pool (the runner's processor processes are started and
stopped through the same two calls); lag, rates and heartbeats are real JetStream numbers.
Sizing: concurrency 10 and a 1 s delay are 10 events/s per processor; 300 queued events to drain
within 10 s need 30 events/s: 3 processors.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from nats.js import JetStreamContext

from medevents import topology
from medevents.config import AutoscaleSettings, NatsSettings, ProcessorSettings, StreamSettings
from medevents.local.autoscaler import AUTOSCALER_FILE, LocalAutoscaler
from medevents.natsconn import ensure_stream
from medevents.status import collect, render

PARTITIONS = 4


class CountingPool:
    """Processor processes reduced to their count."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[int] = []

    def count(self) -> int:
        return self.n

    async def scale_to(self, n: int) -> None:
        self.calls.append(n)
        self.n = n


async def prepare(js: JetStreamContext, backlog: int) -> None:
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    for p in range(PARTITIONS):
        config = topology.consumer_config(p, ack_wait_s=30, max_ack_pending=1000)
        await js.add_consumer(topology.STREAM, config)
    for i in range(backlog):
        await js.publish(f"events.patient-{i % 25}", b"{}", headers={"Nats-Msg-Id": f"e{i}"})


async def drain(js: JetStreamContext) -> None:
    for p in range(PARTITIONS):
        sub = await js.pull_subscribe_bind(topology.consumer_name(p), topology.STREAM)
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.3)
            except TimeoutError:
                break
            for m in msgs:
                await m.ack_sync()
        await sub.unsubscribe()


def autoscaler(nats_settings: NatsSettings, pool: CountingPool, data_dir: Path) -> LocalAutoscaler:
    settings = AutoscaleSettings(
        min_processors=1, max_processors=4, target_drain_s=10, poll_s=0.1, scale_down_window_s=0.5
    )
    processor = ProcessorSettings(concurrency=10, delay_min_ms=1000, delay_max_ms=1000)
    return LocalAutoscaler(nats_settings, pool, settings, processor, data_dir)


async def test_a_backlog_adds_processors_and_they_go_after_it(
    js: JetStreamContext, nats_settings: NatsSettings, tmp_path: Path
) -> None:
    await prepare(js, 300)
    pool = CountingPool(1)
    scaler = autoscaler(nats_settings, pool, tmp_path)
    decision = await scaler.poll_once()
    assert decision is not None and decision.reason == "ScaleUp"
    assert pool.n == 3 and pool.calls == [3]
    written = json.loads((tmp_path / AUTOSCALER_FILE).read_text())
    assert written["desired"] == 3 and written["lag"] == 300 and written["decision"]["reason"] == "ScaleUp"

    status = await collect(nats_settings, tmp_path, interval_s=0.1)
    assert status["lag"] == 300 and status["partitions"] == PARTITIONS and not status["missingConsumers"]
    assert status["autoscaler"]["desired"] == 3
    assert "lag         300" in render(status)

    await drain(js)
    for _ in range(100):
        await scaler.poll_once()
        if pool.n == 1:
            break
        await asyncio.sleep(0.1)
    assert pool.n == 1
    assert pool.calls == [3, 2, 1]  # one processor at a time, after the down window
    status = await collect(nats_settings, tmp_path, interval_s=0.1)
    assert status["lag"] == 0 and status["autoscaler"]["decision"]["reason"] == "ScaleDown"
    await scaler.close()


async def test_a_missing_consumer_scales_nothing(
    js: JetStreamContext, nats_settings: NatsSettings, tmp_path: Path
) -> None:
    await prepare(js, 300)
    await js.delete_consumer(topology.STREAM, topology.consumer_name(1))
    pool = CountingPool(1)
    scaler = autoscaler(nats_settings, pool, tmp_path)
    assert await scaler.poll_once() is None
    assert pool.calls == []
    written = json.loads((tmp_path / AUTOSCALER_FILE).read_text())
    assert "processor-1" in written["degraded"]
    await scaler.close()
    status = await collect(nats_settings, tmp_path, interval_s=0.1)
    assert status["missingConsumers"] == ["processor-1"]
