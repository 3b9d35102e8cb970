"""The operator reports a NATS that acknowledges before it fsyncs (EventPipeline condition
``NatsDurable``, from ``spec.nats.monitorUrl``'s ``/varz``), without letting it stop scaling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kube_harness import Cluster, cluster, eventually, k8s, operator

SPEC: dict[str, Any] = {
    "stream": {"partitions": 2},
    "processor": {"kind": "Deployment", "name": "processor"},
    "scaling": {"pollIntervalSeconds": 0.5},
}


async def test_a_lazy_nats_is_reported_and_a_fsyncing_one_is_not(
    cluster: Cluster, operator: None, monitored_nats: Callable[[bool], Any]
) -> None:
    lazy = monitored_nats(False)
    await cluster.create_pipeline({**SPEC, "nats": {"url": lazy.url, "monitorUrl": lazy.monitor_url}})
    await eventually(lambda: cluster.condition("NatsDurable").get("status") == "False", what="NatsDurable")
    condition = cluster.condition("NatsDurable")
    assert condition["reason"] == "AckBeforeFsync"
    assert "sync_interval: always" in condition["message"]
    await eventually(lambda: cluster.has_event("Warning", "NatsNotDurable"), what="a Warning event")
    # The pipeline works all the same: durability is reported, not enforced.
    await eventually(lambda: cluster.condition("Ready").get("status") == "True", what="Ready")

    safe = monitored_nats(True)
    spec = {**SPEC, "nats": {"url": safe.url, "monitorUrl": safe.monitor_url}}
    await cluster.create_pipeline(spec, name="safe")
    await eventually(
        lambda: cluster.condition("NatsDurable", name="safe").get("status") == "True", what="NatsDurable"
    )
    assert cluster.condition("NatsDurable", name="safe")["reason"] == "FsyncBeforeAck"


async def test_without_a_monitor_url_durability_is_unknown(
    cluster: Cluster, operator: None, monitored_nats: Callable[[bool], Any]
) -> None:
    server = monitored_nats(True)
    await cluster.create_pipeline({**SPEC, "nats": {"url": server.url}})
    await eventually(lambda: cluster.condition("NatsDurable").get("status") == "Unknown", what="Unknown")
    assert cluster.condition("NatsDurable")["reason"] == "NotChecked"
