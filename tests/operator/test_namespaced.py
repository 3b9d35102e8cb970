"""The operator in namespaced mode (``OPERATOR_NAMESPACES``, what the chart runs) under enforced RBAC:
the emulator answers 403 to any request of the operator that the rules do not allow, as a real
API server would, and each test also checks afterwards that none was refused.

- exact names (the chart: its own namespace): the chart's Role and nothing cluster-wide;
- a glob: kopf lists and watches namespaces, so it also needs those rights cluster-wide.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

# The fixtures live in kube_harness (see test_scaling_loop.py for why there is no conftest.py here).
from kube_harness import (
    NAMESPACES,
    PEERINGS,
    TOKEN,
    Cluster,
    Rbac,
    add_namespace,
    cluster,
    eventually,
    k8s,
    running,
    token_nats,
)

from medevents.config import OperatorSettings
from medevents.local import EmbeddedNats
from medevents.operator.handlers import FINALIZER
from medevents.operator.scale import DELETION_COST

RELEASE = "medevents"  # the chart's release namespace
PEERING = "medevents-operator"


def spec_for(url: str, **nats: Any) -> dict[str, Any]:
    """A pipeline that scales its Deployment (3 replicas in these tests) down to 1: no lag."""
    return {
        "nats": {"url": url, **nats},
        "stream": {"partitions": 4},
        "processor": {"kind": "Deployment", "name": "processor"},
        "scaling": {"minReplicas": 1, "pollIntervalSeconds": 0.5, "scaleDownStabilizationSeconds": 1},
    }


def settings_for(cluster: Cluster, namespaces: str, standalone: bool) -> OperatorSettings:
    return OperatorSettings(
        kube_api_url=str(cluster.api.url).rstrip("/"),
        namespaces=namespaces,
        peering=PEERING,
        standalone=standalone,
        liveness_port=0,
    )


def refused(cluster: Cluster, rbac: Rbac) -> list[str]:
    return [str(a) for a in cluster.operator_requests() if not rbac.allows(a)]


def untouched(cluster: Cluster, ns: str) -> None:
    """The pipeline in ``ns`` was never served: no status, no finalizer, no scaling, no request."""
    assert not cluster.status(ns=ns)
    assert FINALIZER not in (cluster.pipeline(ns=ns)["metadata"].get("finalizers") or [])
    assert cluster.replicas(ns) == 3
    assert not [str(a) for a in cluster.operator_requests() if a.namespace == ns]


def add_peering(cluster: Cluster, ns: str) -> None:
    """The chart's KopfPeering object (its CRD is in charts/medevents/crds/)."""
    cluster.api.resources[PEERINGS] = kmock.ResourceInfo(
        kind="KopfPeering", namespaced=True, verbs={"get", "list", "watch", "patch"}
    )
    cluster.api.objects[PEERINGS, ns, PEERING] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": PEERING, "namespace": ns, "resourceVersion": "1"},
    }


async def test_the_charts_namespaced_role_suffices(cluster: Cluster, token_nats: str) -> None:
    """As the chart deploys it: OPERATOR_NAMESPACES = its namespace, peering through the chart's
    KopfPeering, NATS credentials from a Secret the Role names; only the chart's Role granted."""
    rbac = Rbac.of_chart(RELEASE, secrets=("nats-auth",))
    cluster.api.rbac = rbac
    add_namespace(cluster.api, RELEASE, replicas=3)
    add_namespace(cluster.api, "other", replicas=3)
    add_peering(cluster, RELEASE)
    secret = {"data": {"token": base64.b64encode(TOKEN.encode()).decode()}}
    for ns in (RELEASE, "other"):
        await cluster.create("v1/secrets", "nats-auth", secret, ns=ns)
        await cluster.create_pipeline(spec_for(token_nats, credentialsSecret="nats-auth"), ns=ns)

    async with running(settings_for(cluster, RELEASE, standalone=False)):
        ready = lambda: cluster.condition("Ready", ns=RELEASE).get("status") == "True"  # noqa: E731
        await eventually(ready, what="Ready in the release namespace")
        await eventually(lambda: cluster.replicas(RELEASE) == 1, what="scaled 3 -> 1")
        await eventually(lambda: cluster.has_event("Normal", "ScaleDown"), what="a ScaleDown event")
        heartbeat = cluster.api.objects[PEERINGS, RELEASE, PEERING].get("status")
        assert heartbeat, "no peering heartbeat"

    status = cluster.status(ns=RELEASE)
    assert status["partitions"] == 4 and status["lag"] == 0 and status["observedGeneration"] == 1
    assert status["lastDecision"]["reason"] == "ScaleDown"
    assert cluster.annotations("processor-a", ns=RELEASE)[DELETION_COST] == "0"
    untouched(cluster, "other")
    # Not one request was refused: kopf observed no namespaces and no CRDs.
    assert refused(cluster, rbac) == []
    made = {(a.group, a.resource, a.verb) for a in cluster.operator_requests()}
    assert {a.namespace for a in cluster.operator_requests()} == {RELEASE}
    # And the test exercised the Role: every kind of call the operator makes appears.
    assert {
        ("medevents.io", "eventpipelines", "list"),
        ("medevents.io", "eventpipelines", "watch"),
        ("medevents.io", "eventpipelines", "patch"),
        ("medevents.io", "eventpipelines/status", "patch"),
        ("kopf.dev", "kopfpeerings", "patch"),
        ("", "events", "create"),
        ("", "secrets", "get"),
        ("apps", "deployments", "get"),
        ("apps", "deployments/scale", "get"),
        ("apps", "deployments/scale", "patch"),
        ("", "pods", "list"),
        ("", "pods", "patch"),
    } <= made, sorted(made)


@pytest.fixture
def second_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """Another nats-server: one EventPipeline per NATS (their stream names are fixed)."""
    server = EmbeddedNats(tmp_path / "nats-b")
    server.start()
    yield server
    server.stop()


async def test_a_glob_serves_matching_namespaces_also_created_later(
    cluster: Cluster, nats_server: EmbeddedNats, second_nats: EmbeddedNats
) -> None:
    rbac = Rbac.for_patterns({"med-a", "med-b"})
    cluster.api.rbac = rbac
    add_namespace(cluster.api, "med-a", replicas=3)
    add_namespace(cluster.api, "other", replicas=3)
    await cluster.create_pipeline(spec_for(nats_server.url), ns="med-a")
    await cluster.create_pipeline(spec_for(nats_server.url), ns="other")

    async with running(settings_for(cluster, "med-*", standalone=True)):
        await eventually(lambda: cluster.replicas("med-a") == 1, what="med-a scaled 3 -> 1")
        # A namespace that appears later is served too: kopf watches namespaces.
        add_namespace(cluster.api, "med-b", replicas=3)
        del cluster.api.objects[NAMESPACES, None, "med-b"]  # created through the API instead
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "med-b"}}
        async with cluster.session.post("/api/v1/namespaces", json=namespace) as r:
            assert r.status < 300, await r.text()
        await cluster.create_pipeline(spec_for(second_nats.url), ns="med-b")
        await eventually(lambda: cluster.replicas("med-b") == 1, what="med-b scaled 3 -> 1")
        assert cluster.condition("Ready", ns="med-b")["status"] == "True"

    assert cluster.condition("Ready", ns="med-a")["status"] == "True"
    untouched(cluster, "other")
    assert refused(cluster, rbac) == []
    served = {a for a in cluster.operator_requests() if a.resource == "eventpipelines"}
    assert {a.namespace for a in served} == {"med-a", "med-b"}, "a cluster-wide or foreign watch"
    made = {(a.group, a.resource, a.verb, a.namespace) for a in cluster.operator_requests()}
    assert {("", "namespaces", "list", None), ("", "namespaces", "watch", None)} <= made
