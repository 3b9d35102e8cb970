"""The operator end to end: kopf against the kmock Kubernetes emulator, lag from a real nats-server.

Sizing in these specs: concurrency 10 and a 1 s delay give 10 events/s per pod (no processor runs,
so there is no measured rate); a backlog of 300 to drain within 10 s needs 30 events/s: 3 pods.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The fixtures live in kube_harness: a conftest.py here would clash with tests/conftest.py for mypy
# (this folder cannot be a package: it would be named `operator`, the standard library's name).
from kube_harness import Cluster, cluster, eventually, js, k8s, make_stream, nc, operator
from nats.js import JetStreamContext

from medevents import topology
from medevents.cluster import Member, decode_tuning, encode
from medevents.operator.scale import DELETION_COST

PARTITIONS = 4
SPEC: dict[str, Any] = {
    "nats": {},  # filled per test
    "stream": {"partitions": PARTITIONS},
    "processor": {"kind": "Deployment", "name": "processor"},
    "scaling": {
        "minReplicas": 1,
        "maxReplicas": 8,
        "targetDrainSeconds": 10,
        "pollIntervalSeconds": 0.5,
        "scaleDownStabilizationSeconds": 2,
        "maxScaleDownStep": 4,
    },
    "processing": {"concurrency": 10, "delayMinMs": 1000, "delayMaxMs": 1000, "ackWaitSeconds": 20},
}


def spec_for(url: str) -> dict[str, Any]:
    return {**SPEC, "nats": {"url": url}}


async def publish_backlog(js: JetStreamContext, n: int) -> None:
    for i in range(n):
        await js.publish(f"events.patient-{i % 40}", b"{}", headers={"Nats-Msg-Id": f"e{i}"})


async def ack_everything(js: JetStreamContext) -> int:
    """Drain every partition consumer the way a processor would (fetch and ack)."""
    acked = 0
    for p in range(PARTITIONS):
        sub = await js.pull_subscribe_bind(topology.consumer_name(p), topology.STREAM)
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for m in msgs:
                await m.ack_sync()
                acked += 1
        await sub.unsubscribe()
    return acked


async def test_backlog_scales_up_then_down_after_stabilization(
    cluster: Cluster, operator: None, js: JetStreamContext, nats_server: Any
) -> None:
    spec = spec_for(nats_server.url)
    spec["scaling"] = {**spec["scaling"], "scaleDownStabilizationSeconds": 3}
    await make_stream(js, PARTITIONS)
    for p in range(PARTITIONS):
        config = topology.consumer_config(p, ack_wait_s=20, max_ack_pending=1000)
        await js.add_consumer(topology.STREAM, config)
    await publish_backlog(js, 300)
    members = await js.create_key_value(topology.members_bucket_config(ttl_s=60, replicas=1))
    busy = Member(id="b-1", pod="processor-b", in_flight=7, capacity=10, partitions=[0], processed_per_s=0.0)
    await members.put(busy.id, encode(busy))

    await cluster.create_pipeline(spec)

    await eventually(lambda: cluster.replicas() == 3, what="3 replicas")
    await eventually(lambda: cluster.condition("Ready").get("status") == "True", what="Ready")
    status = cluster.status()
    assert status["lag"] == 300 and status["pending"] == 300 and status["ackPending"] == 0
    assert status["desiredReplicas"] == 3 and status["partitions"] == PARTITIONS
    assert status["lastDecision"]["reason"] == "ScaleUp"
    assert status["lastDecision"]["fromReplicas"] == 1 and status["lastDecision"]["toReplicas"] == 3
    assert "lag=300" in status["lastDecision"]["message"]
    assert status["observedGeneration"] == 1
    assert cluster.condition("StreamReady")["status"] == "True"
    assert cluster.condition("Degraded")["status"] == "False"
    assert cluster.condition("Scaling")["reason"] in ("ScaleUp", "Hold")
    await eventually(lambda: cluster.has_event("Normal", "ScaleUp"), what="event ScaleUp")
    # Tuning was published for the processors to apply live.
    entry = await (await js.key_value(topology.TUNING_BUCKET)).get(topology.TUNING_KEY)
    tuning = decode_tuning(entry.value or b"")
    assert (tuning.concurrency, tuning.delay_min_ms, tuning.ack_wait_s) == (10, 1000, 20.0)
    assert tuning.generation == 1
    # It holds while the backlog stays.
    await asyncio.sleep(1.5)
    assert cluster.replicas() == 3

    # The last poll before the acks wanted 3 pods; the 3 s down window keeps that target for 3 s,
    # so one pod cannot be reached sooner than 2.5 s after the acks begin (polls are 0.5 s apart).
    acks_began = asyncio.get_running_loop().time()
    assert await ack_everything(js) == 300
    await eventually(lambda: cluster.status().get("lag") == 0, what="lag 0")
    await eventually(lambda: cluster.replicas() == 1, what="scale-down to 1")
    assert asyncio.get_running_loop().time() - acks_began >= 2.5
    assert cluster.status()["lastDecision"]["reason"] == "ScaleDown"
    # The busy pod was marked expensive to delete before replicas went down.
    assert cluster.annotations("processor-b")[DELETION_COST] == "7"
    assert cluster.annotations("processor-a")[DELETION_COST] == "0"


async def test_missing_consumer_degrades_and_freezes_scaling(
    cluster: Cluster, operator: None, js: JetStreamContext, nats_server: Any
) -> None:
    await make_stream(js, PARTITIONS)
    await publish_backlog(js, 300)
    await cluster.create_pipeline(spec_for(nats_server.url))  # the operator creates the consumers
    await eventually(lambda: cluster.replicas() == 3, what="3 replicas")

    await js.delete_consumer(topology.STREAM, topology.consumer_name(2))
    await eventually(lambda: cluster.condition("Degraded").get("status") == "True", what="Degraded")
    degraded = cluster.condition("Degraded")
    assert degraded["reason"] == "ConsumerMissing" and "processor-2" in degraded["message"]
    assert cluster.condition("Ready")["status"] == "False"
    await eventually(lambda: cluster.has_event("Warning", "ConsumerMissing"), what="event ConsumerMissing")

    await ack_everything_but(js, missing=2)
    await asyncio.sleep(4)  # twice the down window: a healthy pipeline would have scaled down
    assert cluster.replicas() == 3
    assert cluster.condition("Degraded")["status"] == "True"


async def ack_everything_but(js: JetStreamContext, missing: int) -> None:
    for p in range(PARTITIONS):
        if p == missing:
            continue
        sub = await js.pull_subscribe_bind(topology.consumer_name(p), topology.STREAM)
        while True:
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except TimeoutError:
                break
            for m in msgs:
                await m.ack_sync()
        await sub.unsubscribe()


async def test_unreachable_nats_degrades_without_scaling(cluster: Cluster, operator: None) -> None:
    await cluster.create_pipeline(spec_for("nats://127.0.0.1:1"))
    await eventually(lambda: cluster.condition("Degraded").get("status") == "True", what="Degraded")
    assert cluster.condition("Degraded")["reason"] == "NatsUnreachable"
    await asyncio.sleep(1)
    assert cluster.replicas() == 1


async def test_partition_change_is_refused(
    cluster: Cluster, operator: None, js: JetStreamContext, nats_server: Any
) -> None:
    await cluster.create_pipeline(spec_for(nats_server.url))
    await eventually(lambda: cluster.condition("StreamReady").get("status") == "True", what="StreamReady")
    assert topology.partitions_of((await js.stream_info(topology.STREAM)).config) == PARTITIONS

    change = {"stream": {"partitions": 8}, "processing": {"ackWaitSeconds": 25}}
    await cluster.patch_pipeline({"spec": change})
    await eventually(
        lambda: cluster.condition("StreamReady").get("reason") == "PartitionChangeRefused", what="refusal"
    )
    assert cluster.condition("StreamReady")["status"] == "False"
    assert "8" in cluster.condition("StreamReady")["message"]
    assert cluster.condition("Ready")["status"] == "False"
    await eventually(
        lambda: cluster.has_event("Warning", "PartitionChangeRefused"), what="event PartitionChangeRefused"
    )
    assert topology.partitions_of((await js.stream_info(topology.STREAM)).config) == PARTITIONS
    # What can change live did change: the consumers' ack wait.
    info = await js.consumer_info(topology.STREAM, topology.consumer_name(0))
    assert info.config.ack_wait == 25
    assert cluster.status()["observedGeneration"] == 2
