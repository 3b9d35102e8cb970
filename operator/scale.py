"""Acting on a decision: the workload's scale subresource and the pods' deletion cost.

Before replicas go down, every pod of the workload gets the annotation
``controller.kubernetes.io/pod-deletion-cost`` = the events it holds (from its membership
heartbeat), so the ReplicaSet removes idle pods first and busy ones last. (StatefulSets ignore the
annotation and remove the highest ordinal; their pods drain on SIGTERM all the same.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from medevents.cluster import Member

from .kube import Kube, workload_path
from .spec import WorkloadRef

__all__ = ["DELETION_COST", "annotate_deletion_cost", "deletion_costs", "read_replicas", "scale_to"]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_INT32_MAX = 2**31 - 1


async def read_replicas(kube: Kube, namespace: str, workload: WorkloadRef) -> int:
    """The replicas the workload is set to (``spec.replicas`` of its scale subresource)."""
    scale = await kube.get(workload_path(namespace, workload.plural, workload.name) + "/scale")
    return int((scale.get("spec") or {}).get("replicas") or 0)


async def scale_to(kube: Kube, namespace: str, workload: WorkloadRef, replicas: int) -> None:
    """Set the workload's replicas through its scale subresource."""
    path = workload_path(namespace, workload.plural, workload.name) + "/scale"
    await kube.merge_patch(path, {"spec": {"replicas": replicas}})


def deletion_costs(pods: Iterable[str], members: Iterable[Member]) -> dict[str, int]:
    """Each pod's deletion cost: the events its processes hold; a draining pod or one without a
    heartbeat costs 0 (it holds nothing that a new owner would not redo)."""
    held: dict[str, int] = {}
    for m in members:
        if not m.draining:
            held[m.pod] = held.get(m.pod, 0) + max(0, m.in_flight)
    return {pod: min(_INT32_MAX, held.get(pod, 0)) for pod in pods}


def _selector(workload: dict[str, Any]) -> str:
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


async def annotate_deletion_cost(
    kube: Kube, namespace: str, workload: WorkloadRef, members: list[Member]
) -> dict[str, int]:
    """Annotate the workload's pods with their deletion cost; returns what was written."""
    body = await kube.get(workload_path(namespace, workload.plural, workload.name))
    selector = _selector(body)
    params = {"labelSelector": selector} if selector else {}
    pods = await kube.get(f"/api/v1/namespaces/{namespace}/pods", **params)
    names = [
        p["metadata"]["name"] for p in pods.get("items") or [] if not p["metadata"].get("deletionTimestamp")
    ]
    costs = deletion_costs(names, members)
    for pod, cost in costs.items():
        await kube.merge_patch(
            f"/api/v1/namespaces/{namespace}/pods/{pod}",
            {"metadata": {"annotations": {DELETION_COST: str(cost)}}},
        )
    return costs
