"""The operator for real (kopf in this event loop) against kmock's Kubernetes emulator and a real
nats-server. Only the Kubernetes API is emulated."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from medevents.config import NatsSettings, OperatorSettings, StreamSettings
from medevents.local import free_port, spawn
from medevents.natsconn import ensure_stream
from medevents.operator.main import operate

NS = "default"
EP = "medevents.io/v1alpha1/eventpipelines"
DEPLOYMENTS = "apps/v1/deployments"
PODS = "v1/pods"
EVENTS = "v1/events"
TOKEN = "s3cret"  # noqa: S105 - a throw-away test server's token
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _rv() -> str:
    return str(time.monotonic_ns())


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus ``metadata.generateName`` (kopf names its Events that way; kmock 0.8
    would store only the first and answer 409 to the rest)."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
        return await super()._handle(request)


@pytest.fixture
async def k8s() -> AsyncIterator[kmock.KubernetesEmulator]:
    """The emulated API with the resources the operator touches and a processor Deployment."""
    async with Emulator() as api, kmock.Server(api):
        api.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
        api.resources[EP] = kmock.ResourceInfo(
            kind="EventPipeline", namespaced=True, shortnames={"ep"}, subresources={"status"}, verbs=VERBS
        )
        api.resources[DEPLOYMENTS] = kmock.ResourceInfo(
            kind="Deployment", namespaced=True, subresources={"scale", "status"}
        )
        api.resources[PODS] = kmock.ResourceInfo(kind="Pod", namespaced=True)
        api.resources[EVENTS] = kmock.ResourceInfo(kind="Event", namespaced=True)
        api.resources["v1/secrets"] = kmock.ResourceInfo(kind="Secret", namespaced=True)
        api.objects["v1/namespaces", None, NS] = {"metadata": {"name": NS, "resourceVersion": _rv()}}
        api.objects[DEPLOYMENTS, NS, "processor"] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "processor", "namespace": NS, "resourceVersion": _rv()},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "processor"}}},
        }
        for pod in ("processor-a", "processor-b", "processor-c"):
            api.objects[PODS, NS, pod] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod,
                    "namespace": NS,
                    "labels": {"app": "processor"},
                    "resourceVersion": _rv(),
                },
            }
        yield api


@dataclass
class Cluster:
    """Test-side access to the emulated API."""

    api: kmock.KubernetesEmulator
    session: aiohttp.ClientSession

    def replicas(self) -> int:
        return int(self.api.objects[DEPLOYMENTS, NS, "processor"]["spec"]["replicas"])

    def pipeline(self, name: str = "pipe") -> dict[str, Any]:
        return dict(self.api.objects[EP, NS, name])

    def status(self, name: str = "pipe") -> dict[str, Any]:
        return dict(self.pipeline(name).get("status") or {})

    def condition(self, type_: str, name: str = "pipe") -> dict[str, Any]:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def events(self) -> list[dict[str, Any]]:
        """The Kubernetes Events posted (by kopf, for the operator)."""
        return [dict(obj) for (res, _, _), obj in self.api.objects.items() if res.plural == "events"]

    def has_event(self, type_: str, reason: str) -> bool:
        return any(e.get("type") == type_ and e.get("reason") == reason for e in self.events())

    def annotations(self, pod: str) -> dict[str, str]:
        return dict(self.api.objects[PODS, NS, pod]["metadata"].get("annotations") or {})

    async def create(self, resource: str, name: str, body: dict[str, Any]) -> None:
        """Create any namespaced object (a Secret, ...) through the API."""
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        full = {**body, "metadata": {"name": name, "namespace": NS, "resourceVersion": _rv()}}
        async with self.session.post(f"{prefix}/namespaces/{NS}/{plural}", json=full) as r:
            assert r.status < 300, await r.text()

    async def create_pipeline(self, spec: dict[str, Any], name: str = "pipe") -> None:
        body = {
            "apiVersion": "medevents.io/v1alpha1",
            "kind": "EventPipeline",
            "metadata": {
                "name": name,
                "namespace": NS,
                "generation": 1,
                "resourceVersion": _rv(),
                "uid": name,
            },
            "spec": spec,
        }
        path = f"/apis/medevents.io/v1alpha1/namespaces/{NS}/eventpipelines"
        async with self.session.post(path, json=body) as r:
            assert r.status < 300, await r.text()

    async def delete_pipeline(self, name: str = "pipe") -> None:
        async with self.session.delete(
            f"/apis/medevents.io/v1alpha1/namespaces/{NS}/eventpipelines/{name}"
        ) as r:
            assert r.status < 300, await r.text()

    def exists(self, name: str = "pipe") -> bool:
        key = (EP, NS, name)
        return key in self.api.objects and not self.api.objects[key].deleted

    async def patch_pipeline(self, patch: dict[str, Any], name: str = "pipe") -> None:
        generation = int(self.pipeline(name)["metadata"].get("generation", 1)) + 1
        body = {**patch, "metadata": {"generation": generation, "resourceVersion": _rv()}}
        async with self.session.patch(
            f"/apis/medevents.io/v1alpha1/namespaces/{NS}/eventpipelines/{name}",
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        ) as r:
            assert r.status < 300, await r.text()


@pytest.fixture
async def cluster(k8s: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=str(k8s.url)) as session:
        yield Cluster(k8s, session)


@pytest.fixture
async def operator(k8s: kmock.KubernetesEmulator) -> AsyncIterator[None]:
    """kopf running the operator's registry against the emulator until the test ends."""
    settings = OperatorSettings(
        kube_api_url=str(k8s.url).rstrip("/"),
        namespaces="",  # cluster-wide: kmock 0.8 cannot parse a list of namespaces (GET /api/v1/namespaces)
        standalone=True,
        liveness_port=0,
        metrics_port=0,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operate(settings, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 30)
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def nc(nats_settings: NatsSettings) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_settings.url)
    yield conn
    await conn.close()


@pytest.fixture
async def js(nc: NATS) -> JetStreamContext:
    return nc.jetstream()


async def make_stream(js: JetStreamContext, partitions: int) -> None:
    await ensure_stream(js, StreamSettings(partitions=partitions))


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> None:
    """Wait until ``check()`` is truthy (or an awaitable of it)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last {last!r}")


@pytest.fixture
def token_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream that demands the token ``s3cret``; yields its URL."""
    port = free_port()
    binary = Path(sys.executable).parent / "nats-server"
    argv = [str(binary), "--jetstream", "--store_dir", str(tmp_path / "js"), "--addr", "127.0.0.1"]
    argv += ["--port", str(port), "--auth", TOKEN]
    log = tmp_path / "nats.log"
    child = spawn("nats-token", argv, log_path=log)
    deadline = time.monotonic() + 20
    while b"Server is ready" not in (log.read_bytes() if log.exists() else b""):
        assert child.alive() and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    yield f"nats://127.0.0.1:{port}"
    child.stop()
