"""The operator in namespaced mode (``OPERATOR_NAMESPACES``, what the chart runs) under enforced RBAC:
the emulator answers 403 to any request of the operator that the rules do not allow, as a real
API server would, and each test also checks afterwards that none was refused.

- exact names (the chart: its own namespace): the chart's Role and nothing cluster-wide;
- a glob: kopf lists and watches namespaces, so it also needs those rights cluster-wide.
"""

from __future__ import annotations

import base64
from typing import Any

import kmock

# The fixtures live in kube_harness (see test_scaling_loop.py for why there is no conftest.py here).
from kube_harness import (
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
NATS_SECRET = {"data": {"token": base64.b64encode(TOKEN.encode()).decode()}}  # for token_nats


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
        metrics_port=0,
    )


def refused(cluster: Cluster, rbac: Rbac) -> list[str]:
    return [str(a) for a in cluster.operator_requests() if not rbac.allows(a)]


def scaled_down(cluster: Cluster, ns: str) -> bool:
    """The Deployment went from 3 replicas to 1 and the status says why (written after scaling)."""
    decision = cluster.status(ns=ns).get("lastDecision") or {}
    return cluster.replicas(ns) == 1 and decision.get("reason") == "ScaleDown"


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
    for ns in (RELEASE, "other"):
        await cluster.create("v1/secrets", "nats-auth", NATS_SECRET, ns=ns)
        await cluster.create_pipeline(spec_for(token_nats, credentialsSecret="nats-auth"), ns=ns)

    async with running(settings_for(cluster, RELEASE, standalone=False)):
        await eventually(lambda: scaled_down(cluster, RELEASE), what="scaled 3 -> 1, in the status")
        await eventually(lambda: cluster.has_event("Normal", "ScaleDown"), what="a ScaleDown event")
        heartbeat = cluster.api.objects[PEERINGS, RELEASE, PEERING].get("status")
        assert heartbeat, "no peering heartbeat"

    status = cluster.status(ns=RELEASE)
    assert status["partitions"] == 4 and status["lag"] == 0 and status["observedGeneration"] == 1
    assert cluster.condition("Ready", ns=RELEASE)["status"] == "True"
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


async def test_a_glob_serves_matching_namespaces_also_created_later(
    cluster: Cluster, nats_server: EmbeddedNats, token_nats: str
) -> None:
    """OPERATOR_NAMESPACES=med-*: the chart's Role in med-a and med-b, list/watch of namespaces and
    CRDs cluster-wide. med-b appears while the operator runs; its pipeline uses another NATS (one
    pipeline per NATS: the stream's name is fixed) with credentials from a Secret."""
    rbac = Rbac.for_patterns({"med-a", "med-b"}, secrets=("nats-auth",))
    cluster.api.rbac = rbac
    add_namespace(cluster.api, "med-a", replicas=3)
    add_namespace(cluster.api, "other", replicas=3)
    await cluster.create_pipeline(spec_for(nats_server.url), ns="med-a")
    await cluster.create_pipeline(spec_for(nats_server.url), ns="other")

    async with running(settings_for(cluster, "med-*", standalone=True)):
        await eventually(lambda: scaled_down(cluster, "med-a"), what="med-a scaled 3 -> 1")
        # A namespace that appears later is served too: kopf watches namespaces.
        add_namespace(cluster.api, "med-b", replicas=3, namespace_object=False)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "med-b"}}
        async with cluster.session.post("/api/v1/namespaces", json=namespace) as r:
            assert r.status < 300, await r.text()
        await cluster.create("v1/secrets", "nats-auth", NATS_SECRET, ns="med-b")
        await cluster.create_pipeline(spec_for(token_nats, credentialsSecret="nats-auth"), ns="med-b")
        await eventually(lambda: scaled_down(cluster, "med-b"), what="med-b scaled 3 -> 1")

    for ns in ("med-a", "med-b"):
        assert cluster.condition("Ready", ns=ns)["status"] == "True"
    untouched(cluster, "other")
    assert refused(cluster, rbac) == []
    served = {a for a in cluster.operator_requests() if a.resource == "eventpipelines"}
    assert {a.namespace for a in served} == {"med-a", "med-b"}, "a cluster-wide or foreign watch"
    made = {(a.group, a.resource, a.verb, a.namespace) for a in cluster.operator_requests()}
    assert {("", "namespaces", "list", None), ("", "namespaces", "watch", None)} <= made
