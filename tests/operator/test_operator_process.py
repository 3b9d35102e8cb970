"""`medevents operator` as a process, as a container runs it: kopf with peering (leader election
through a ClusterKopfPeering object) and the liveness endpoint, against the kmock emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kube_harness import NS, Cluster, cluster, eventually, js, k8s, make_stream, nc
from nats.js import JetStreamContext

from medevents.local import free_port

MEDEVENTS = str(Path(sys.executable).parent / "medevents")
PEERINGS = "kopf.dev/v1/clusterkopfpeerings"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local test URL
        return str(response.read().decode())


def _healthz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - a local test URL
            return bool(response.status == 200)
    except OSError:
        return False


async def test_the_command_runs_kopf_with_peering_and_liveness(
    cluster: Cluster, js: JetStreamContext, nats_server: Any, tmp_path: Path
) -> None:
    import kmock

    cluster.api.resources[PEERINGS] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs={"get", "list", "watch", "patch"}
    )
    cluster.api.objects[PEERINGS, None, "medevents-operator"] = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "medevents-operator", "resourceVersion": "1"},
    }
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "OPERATOR_KUBE_API_URL": str(cluster.api.url).rstrip("/"),
        "OPERATOR_LIVENESS_PORT": str(port),
        "OPERATOR_METRICS_PORT": str(metrics_port),
        "OPERATOR_PEERING": "medevents-operator",
        "LOG_LEVEL": "INFO",
    }
    log = (tmp_path / "operator.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        MEDEVENTS, "operator", env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        await eventually(lambda: asyncio.to_thread(_healthz, url), timeout=30, what="liveness")
        await eventually(
            lambda: bool(cluster.api.objects[PEERINGS, None, "medevents-operator"].get("status")),
            what="a peering heartbeat",
        )
        spec = {
            "nats": {"url": nats_server.url},
            "stream": {"partitions": 4},
            "processor": {"name": "processor"},
        }
        await cluster.create_pipeline(spec)
        await eventually(lambda: cluster.condition("Ready").get("status") == "True", timeout=30, what="Ready")
        # What the poll saw, for Prometheus (the alert rules and the dashboard read these).
        metrics = await asyncio.to_thread(_get, f"http://127.0.0.1:{metrics_port}/metrics")
        labels = f'pipeline="pipe",pipeline_namespace="{NS}"'
        for line in (
            f"medevents_pipeline_lag{{{labels}}} 0.0",
            f"medevents_pipeline_target_drain_seconds{{{labels}}} 60.0",
            f'medevents_pipeline_degraded{{{labels},reason=""}} 0.0',
        ):
            assert line in metrics, metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)  # the loop keeps serving the API meanwhile
        log.close()
    assert code == 0, (tmp_path / "operator.log").read_text()[-3000:]
    lines = (tmp_path / "operator.log").read_text().splitlines()
    assert any('"component":"operator"' in line and '"msg":"stream created"' in line for line in lines), lines
    assert (await js.stream_info("EVENTS")).config.name == "EVENTS"
