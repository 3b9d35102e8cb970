"""The operator for real (kopf in this event loop) against kmock's Kubernetes emulator and a real
nats-server. Only the Kubernetes API is emulated.

Two things kmock 0.8 lacks are added here: the core ``namespaces`` resource (its URL parser takes
``/api/v1/namespaces`` for the start of a namespaced path and fails with a 500; kopf lists and
watches it when OPERATOR_NAMESPACES holds globs) and RBAC: with :attr:`Emulator.rbac` set, the
operator's requests that the rules would not allow get a 403, as from a real API server.
"""

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
import aiohttp.web
import kmock
import kmock._internal.parsing as kmock_parsing
import nats
import pytest
import yaml
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
NAMESPACES = "v1/namespaces"
PEERINGS = "kopf.dev/v1/kopfpeerings"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
TOKEN = "s3cret"  # noqa: S105 - a throw-away test server's token
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _rv() -> str:
    return str(time.monotonic_ns())


# The test's own client marks its requests so that RBAC applies to the operator's only.
HARNESS_HEADER = "X-Medevents-Test-Harness"
RBAC_NEEDS = Path(__file__).parents[1] / "deploy" / "operator_rbac.yaml"

_kmock_parse_path = kmock_parsing.parse_path


def _parse_path(path: str) -> kmock_parsing.ParsedPath:
    """kmock's URL parser, plus the cluster-scoped core resource ``namespaces`` itself:
    ``/api/v1/namespaces`` (list, watch) and ``/api/v1/namespaces/<name>`` (one namespace)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return kmock_parsing.ParsedPath(group="", version="v1", plural="namespaces", name=name)
    return _kmock_parse_path(path)


@dataclass(frozen=True)
class Access:
    """One resource request as an RBAC authorizer sees it."""

    group: str
    resource: str  # plural, or plural/subresource
    verb: str
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else " cluster-wide"
        return (
            f"{self.verb} {self.group or 'core'}/{self.resource}{'/' + self.name if self.name else ''}{where}"
        )


def access_of(request: kmock.Request) -> Access | None:
    """The RBAC attributes of a request; None for discovery (``/api``, ``/apis/<group>/<version>``,
    ``/version``), which every authenticated client may read (``system:discovery``)."""
    resource = request.resource
    if resource is None or not resource.plural:
        return None
    method = request.method.value.upper()
    if method == "GET" and request.params.get("watch") in ("true", "1"):
        verb = "watch"
    elif method == "GET":
        verb = "get" if request.name else "list"
    elif method == "DELETE":
        verb = "delete" if request.name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    plural = f"{resource.plural}/{request.subresource}" if request.subresource else resource.plural
    return Access(resource.group or "", plural, verb, request.namespace, request.name)


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verbs: frozenset[str]
    names: frozenset[str] = frozenset()  # resourceNames; empty: any

    def allows(self, access: Access) -> bool:
        return (
            (self.group, self.resource) == (access.group, access.resource)
            and access.verb in self.verbs
            and (not self.names or access.name in self.names)
        )


@dataclass(frozen=True)
class Rbac:
    """An operator's rights as Kubernetes RBAC grants them: ``role`` bound in each of ``namespaces``
    (a Role and RoleBinding there), ``cluster_role`` everywhere (a ClusterRole and its binding).

    The rules come from tests/deploy/operator_rbac.yaml, which
    tests/deploy/test_chart.py::test_operator_rbac_is_exactly_what_it_needs proves equal to what
    charts/medevents/templates/operator-rbac.yaml renders."""

    namespaces: frozenset[str]
    role: tuple[Rule, ...]
    cluster_role: tuple[Rule, ...] = ()

    @staticmethod
    def _rules(scope: str, names: tuple[str, ...] = ()) -> tuple[Rule, ...]:
        needs = yaml.safe_load(RBAC_NEEDS.read_text())
        return tuple(
            Rule(n["apiGroup"], n["resource"], frozenset(n["verbs"]), frozenset(names)) for n in needs[scope]
        )

    @classmethod
    def _role(cls, secrets: tuple[str, ...]) -> tuple[Rule, ...]:
        return cls._rules("namespaced") + (cls._rules("whenNatsSecretsAreSet", secrets) if secrets else ())

    @classmethod
    def of_chart(cls, namespace: str, secrets: tuple[str, ...] = ()) -> Rbac:
        """The chart's: a Role in the release namespace (the NATS Secrets ``secrets`` by name), no
        ClusterRole."""
        return cls(frozenset({namespace}), cls._role(secrets))

    @classmethod
    def for_patterns(cls, namespaces: set[str], secrets: tuple[str, ...] = ()) -> Rbac:
        """What OPERATOR_NAMESPACES with globs needs: the chart's Role in each served namespace, and
        list/watch of namespaces and CRDs cluster-wide."""
        return cls(frozenset(namespaces), cls._role(secrets), cls._rules("whenNamespacesArePatterns"))

    def allows(self, access: Access) -> bool:
        if any(rule.allows(access) for rule in self.cluster_role):
            return True
        return access.namespace in self.namespaces and any(rule.allows(access) for rule in self.role)


def _forbidden(access: Access) -> aiohttp.web.Response:
    message = f"the operator's service account cannot {access} (RBAC)"
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure"}
    return aiohttp.web.json_response(
        {**body, "message": message, "reason": "Forbidden", "code": 403}, status=403
    )


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus ``metadata.generateName`` (kopf names its Events that way; kmock 0.8
    would store only the first and answer 409 to the rest) and, when ``rbac`` is set, a 403 for
    every request of the operator that its RBAC would not allow (the harness's own pass)."""

    rbac: Rbac | None = None

    async def _handle(self, request: kmock.Request) -> Any:
        access = access_of(request)
        operators = HARNESS_HEADER not in request.headers
        if self.rbac is not None and access is not None and operators and not self.rbac.allows(access):
            return _forbidden(access)
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
        return await super()._handle(request)


def add_namespace(
    api: kmock.KubernetesEmulator, ns: str, replicas: int = 1, *, namespace_object: bool = True
) -> None:
    """A namespace (unless the test creates it through the API) with a processor Deployment
    (``replicas``) and three of its pods."""
    if namespace_object:
        api.objects[NAMESPACES, None, ns] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "resourceVersion": _rv()},
        }
    api.objects[DEPLOYMENTS, ns, "processor"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "processor", "namespace": ns, "resourceVersion": _rv()},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "processor"}}},
    }
    for pod in ("processor-a", "processor-b", "processor-c"):
        api.objects[PODS, ns, pod] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": ns,
                "labels": {"app": "processor"},
                "resourceVersion": _rv(),
            },
        }


@pytest.fixture
async def k8s() -> AsyncIterator[Emulator]:
    """The emulated API with the resources the operator touches and a processor Deployment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kmock_parsing, "parse_path", _parse_path)
        async with Emulator() as api, kmock.Server(api):
            api.resources[NAMESPACES] = kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs=VERBS)
            api.resources[CRDS] = kmock.ResourceInfo(
                kind="CustomResourceDefinition", namespaced=False, verbs=VERBS
            )
            api.resources[EP] = kmock.ResourceInfo(
                kind="EventPipeline", namespaced=True, shortnames={"ep"}, subresources={"status"}, verbs=VERBS
            )
            api.resources[DEPLOYMENTS] = kmock.ResourceInfo(
                kind="Deployment", namespaced=True, subresources={"scale", "status"}
            )
            api.resources[PODS] = kmock.ResourceInfo(kind="Pod", namespaced=True)
            api.resources[EVENTS] = kmock.ResourceInfo(kind="Event", namespaced=True)
            api.resources["v1/secrets"] = kmock.ResourceInfo(kind="Secret", namespaced=True)
            add_namespace(api, NS)
            yield api


@dataclass
class Cluster:
    """Test-side access to the emulated API (in namespace ``NS`` unless told another)."""

    api: Emulator
    session: aiohttp.ClientSession

    def replicas(self, ns: str = NS) -> int:
        return int(self.api.objects[DEPLOYMENTS, ns, "processor"]["spec"]["replicas"])

    def pipeline(self, name: str = "pipe", ns: str = NS) -> dict[str, Any]:
        return dict(self.api.objects[EP, ns, name])

    def status(self, name: str = "pipe", ns: str = NS) -> dict[str, Any]:
        return dict(self.pipeline(name, ns).get("status") or {})

    def condition(self, type_: str, name: str = "pipe", ns: str = NS) -> dict[str, Any]:
        for c in self.status(name, ns).get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def events(self) -> list[dict[str, Any]]:
        """The Kubernetes Events posted (by kopf, for the operator)."""
        return [dict(obj) for (res, _, _), obj in self.api.objects.items() if res.plural == "events"]

    def has_event(self, type_: str, reason: str) -> bool:
        return any(e.get("type") == type_ and e.get("reason") == reason for e in self.events())

    def annotations(self, pod: str, ns: str = NS) -> dict[str, str]:
        return dict(self.api.objects[PODS, ns, pod]["metadata"].get("annotations") or {})

    def operator_requests(self) -> list[Access]:
        """What the operator (kopf and its own client) asked the API, discovery aside."""
        found = (access_of(r) for r in self.api if HARNESS_HEADER not in r.headers)
        return [a for a in found if a is not None]

    async def create(self, resource: str, name: str, body: dict[str, Any], ns: str = NS) -> None:
        """Create any namespaced object (a Secret, ...) through the API."""
        group_version, plural = resource.rsplit("/", 1)
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        full = {**body, "metadata": {"name": name, "namespace": ns, "resourceVersion": _rv()}}
        async with self.session.post(f"{prefix}/namespaces/{ns}/{plural}", json=full) as r:
            assert r.status < 300, await r.text()

    async def create_pipeline(self, spec: dict[str, Any], name: str = "pipe", ns: str = NS) -> None:
        body = {
            "apiVersion": "medevents.io/v1alpha1",
            "kind": "EventPipeline",
            "metadata": {
                "name": name,
                "namespace": ns,
                "generation": 1,
                "resourceVersion": _rv(),
                "uid": f"{ns}-{name}",
            },
            "spec": spec,
        }
        path = f"/apis/medevents.io/v1alpha1/namespaces/{ns}/eventpipelines"
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
async def cluster(k8s: Emulator) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession(base_url=str(k8s.url), headers={HARNESS_HEADER: "1"}) as session:
        yield Cluster(k8s, session)


@contextlib.asynccontextmanager
async def running(settings: OperatorSettings) -> AsyncIterator[None]:
    """kopf running the operator's registry in this event loop while the block runs."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(operate(settings, stop_flag=stop, ready_flag=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 60)


@pytest.fixture
async def operator(k8s: Emulator) -> AsyncIterator[None]:
    """The operator, cluster-wide and standalone, against the emulator until the test ends."""
    settings = OperatorSettings(
        kube_api_url=str(k8s.url).rstrip("/"), standalone=True, liveness_port=0, metrics_port=0
    )
    async with running(settings):
        yield


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
