"""``medevents up``: the whole system on one machine, with no Docker and no cluster.

Starts an embedded nats-server, an embedded MongoDB-wire server (unless ``MONGO_URI`` is set), the
ingest service and the processors as child processes, restarts any that dies (the servers on the
same port and data directory), writes ``<data dir>/endpoints.json`` and ``children.json`` (what
runs, restarts; ``medevents status`` shows it) and stops everything on Ctrl-C or SIGTERM. Children
die with the runner even when it is SIGKILLed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from medevents import logs
from medevents.config import (
    AutoscaleSettings,
    LocalSettings,
    LogSettings,
    NatsSettings,
    ProcessorSettings,
    StreamSettings,
    load,
    redact_url,
)
from medevents.local.autoscaler import LocalAutoscaler, with_floor
from medevents.local.endpoints import ENDPOINTS_FILE
from medevents.local.procs import Child, spawn
from medevents.local.servers import EmbeddedMongo, EmbeddedNats, ServerStartError, free_port
from medevents.natsconn import connect, ensure_stream

__all__ = ["CHILDREN_FILE", "LocalSystem", "run_up"]

log = logging.getLogger("medevents.local")

NATS_PORT = 4222
MONGO_PORT = 27017
PROCESSOR_PORT = 3001
NATS_SYNC_WARNING = (
    "MEDEVENTS_NATS_SYNC=interval: NATS acknowledges events before they are on disk; a power "
    "failure loses events accepted (202) in the last two minutes"
)
CHILDREN_FILE = "children.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Restarts:
    """When a supervised child that died starts again: after 0.5 s, doubling up to 30 s."""

    count: int = 0
    next_start: float = 0.0  # monotonic time of the next start; 0 while none is planned
    last_exit: int | None = None  # exit code of the last death (negative: killed by that signal)
    last_restart: str = ""  # when it was last started again (UTC)

    def due(self, name: str, code: int | None, now: float) -> bool:
        """Called while the child is dead: plans the next start, True once it is time for it."""
        if self.next_start == 0.0:
            delay = min(30.0, 0.5 * 2**self.count)
            self.next_start, self.last_exit = now + delay, code
            log.warning("child exited; restarting", extra={"child": name, "code": code, "in_s": delay})
            return False
        if now < self.next_start:
            return False
        self.count += 1
        self.next_start, self.last_restart = 0.0, _now()
        return True


class EmbeddedServer(Protocol):
    """What the runner supervises of an embedded server (servers.py): started again in place."""

    name: str
    port: int
    child: Child | None

    def start(self) -> str: ...


@dataclass
class Service:
    """A child the runner keeps running: started again (with back-off) whenever it dies."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    health_url: str
    child: Child | None = None
    restarts: Restarts = field(default_factory=Restarts)
    stopping: bool = field(default=False)

    @property
    def port(self) -> int:
        return int(self.health_url.rsplit(":", 1)[1].split("/")[0])

    def start(self) -> None:
        self.child = spawn(self.name, self.argv, env=self.env, log_path=self.log_path)

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping = True
        if self.child is not None:
            self.child.stop(timeout)


def medevents_command() -> list[str]:
    """How to start a ``medevents`` child: the console script of this interpreter's environment
    (``python -m medevents`` would import the source tree when run from the repository root)."""
    script = Path(sys.executable).parent / "medevents"
    return [str(script)] if script.exists() else [sys.executable, "-m", "medevents"]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own local URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalSystem:
    """Everything ``medevents up`` runs, started and stopped in order."""

    def __init__(self, data_dir: Path, processors: int = 1, settings: LocalSettings | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.initial_processors = processors
        self.settings = settings if settings is not None else load(LocalSettings)
        self.nats = EmbeddedNats(self.data_dir / "nats", NATS_PORT, sync=self.settings.nats_sync)
        self.mongo: EmbeddedMongo | None = None
        self.mongo_uri = os.environ.get("MONGO_URI", "")
        self.services: dict[str, Service] = {}
        self.server_restarts: dict[int, Restarts] = {}  # by id() of the server: names may repeat
        self.ingest_port = int(os.environ.get("PORT", "3000"))

    def _hash_key(self) -> str:
        """One patient-hash key for all local processes, kept with the data, so log lines of
        ingest and processors correlate across restarts."""
        path = self.data_dir / "patient-hash.key"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            "NATS_URL": self.nats.url,
            "MONGO_URI": self.mongo_uri,
            "MEDEVENTS_PATIENT_HASH_KEY": self.key,
            **extra,
        }

    def add_service(self, name: str, argv: list[str], port: int, **env: str) -> Service:
        service = Service(
            name,
            argv,
            self._env(PORT=str(port), **env),
            self.logs_dir / f"{name}.log",
            f"http://127.0.0.1:{port}/readyz",
        )
        self.services[name] = service
        service.start()
        return service

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        (self.data_dir / ENDPOINTS_FILE).unlink(missing_ok=True)  # a last run's is not this one's
        self.key = self._hash_key()
        if free_port(self.ingest_port) != self.ingest_port:
            raise SystemExit(f"medevents: port {self.ingest_port} is in use; set PORT to another port")
        if self.settings.nats_sync != "always":
            log.warning(NATS_SYNC_WARNING, extra={"nats_sync": self.settings.nats_sync})
            print(f"medevents: WARNING: {NATS_SYNC_WARNING}", file=sys.stderr, flush=True)
        self.nats.start()
        if not self.mongo_uri:
            self.mongo = EmbeddedMongo(self.data_dir / "mongo", MONGO_PORT)
            self.mongo_uri = self.mongo.start()
        nc = await connect(NatsSettings(url=self.nats.url), "medevents-local")
        try:
            await ensure_stream(nc.jetstream(), load(StreamSettings))
        finally:
            await nc.close()
        self.add_service("ingest", [*medevents_command(), "ingest"], self.ingest_port, HOST="127.0.0.1")
        await self.wait_ready(self.services["ingest"])
        for _ in range(self.initial_processors):
            self.add_processor()
        for service in self.processors():
            await self.wait_ready(service)
        self.write_endpoints()  # only now: endpoints.json says the system is up

    # -- processors (the local autoscaler adds and removes them through these) ------------------

    def processors(self) -> list[Service]:
        """The processor children now running, oldest first."""
        return [s for name, s in self.services.items() if name.startswith("processor-") and not s.stopping]

    def add_processor(self) -> Service:
        """Start one more processor process on the next free port from 3001."""
        index = 1
        while f"processor-{index}" in self.services:
            index += 1
        service = self.add_service(
            f"processor-{index}",
            [*medevents_command(), "processor"],
            self._processor_port(PROCESSOR_PORT + index - 1),
            HOST="127.0.0.1",
            PROCESSOR_MEMBER_ID=f"local-processor-{index}",
        )
        return service

    def _processor_port(self, first: int) -> int:
        taken = {s.port for s in self.services.values()}
        port = first
        while port in taken or free_port(port) != port:
            port += 1
        return port

    def _restart(self, service: Service) -> None:
        """Start a dead service again. A processor whose port another program took meanwhile
        (it could only check the port was free before it bound it) moves to the next free one."""
        if service.name.startswith("processor-") and free_port(service.port) != service.port:
            port = self._processor_port(service.port + 1)
            service.env["PORT"] = str(port)
            service.health_url = f"http://127.0.0.1:{port}/readyz"
        service.start()

    def count(self) -> int:
        """Processors running now (the local autoscaler's ``ProcessorPool``)."""
        return len(self.processors())

    async def scale_to(self, n: int) -> None:
        """Start processors, or stop the newest ones gracefully, until ``n`` run."""
        while self.count() < n:
            self.add_processor()
            self.write_endpoints()
        while self.count() > n and await self.remove_processor():
            pass  # one at a time: each drains its held events on SIGTERM first

    async def remove_processor(self) -> bool:
        """Stop the newest processor gracefully (SIGTERM: it drains its held events within
        ``PROCESSOR_SHUTDOWN_GRACE_S``); False when none runs."""
        running = self.processors()
        if not running:
            return False
        service = running[-1]
        service.stopping = True  # the supervisor must not restart it
        await asyncio.to_thread(service.stop)
        del self.services[service.name]
        self.write_endpoints()
        return True

    async def wait_ready(self, service: Service, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(_http_ok, service.health_url):
                return
            if service.child is not None and not service.child.alive():
                break
            await asyncio.sleep(0.2)
        raise SystemExit(f"medevents: {service.name} did not become ready; see {service.log_path}")

    def endpoints(self) -> dict[str, str]:
        return {
            "ingest": f"http://127.0.0.1:{self.ingest_port}",
            "nats": self.nats.url,
            "mongo": self.mongo_uri,
            **{
                name: s.health_url.removesuffix("/readyz")
                for name, s in self.services.items()
                if name != "ingest"
            },
        }

    def embedded(self) -> list[EmbeddedServer]:
        """The embedded servers this runner started (none for MongoDB when ``MONGO_URI`` is set)."""
        return [self.nats, *([self.mongo] if self.mongo is not None else [])]

    def children(self) -> list[dict[str, Any]]:
        """Every supervised child and its restarts, as ``children.json`` records them."""
        rows: list[tuple[str, str, int, Child | None, Restarts]] = [
            (s.name, "server", s.port, s.child, self.server_restarts.get(id(s), Restarts()))
            for s in self.embedded()
        ]
        rows += [
            (name, "service", s.port, s.child, s.restarts)
            for name, s in self.services.items()
            if not s.stopping
        ]
        return [
            {
                "name": name,
                "kind": kind,
                "port": port,
                "pid": child.pid if child is not None and child.alive() else None,
                "running": child is not None and child.alive(),
                "restarts": restarts.count,
                "lastExit": restarts.last_exit,
                "lastRestart": restarts.last_restart or None,
            }
            for name, kind, port, child, restarts in rows
        ]

    def write_endpoints(self) -> None:
        """Write ``endpoints.json`` and ``children.json`` (atomically, each)."""
        state = {"runnerPid": os.getpid(), "children": self.children(), "time": _now()}
        for name, body in ((ENDPOINTS_FILE, self.endpoints()), (CHILDREN_FILE, state)):
            path = self.data_dir / name
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(body, indent=2) + "\n")
            tmp.replace(path)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart children that die, with exponential back-off, until ``stop`` is set: the
        embedded servers first (on the same port and data directory), then the services."""
        while not stop.is_set():
            changed = False
            for server in self.embedded():
                child = server.child
                if child is None or child.alive():
                    continue
                changed = True
                restarts = self.server_restarts.setdefault(id(server), Restarts())
                if restarts.due(server.name, child.popen.returncode, time.monotonic()):
                    try:
                        await asyncio.to_thread(server.start)
                    except ServerStartError:  # its log says why; the next round backs off further
                        log.warning("embedded server did not start", extra={"child": server.name})
                    else:
                        log.info(
                            "embedded server restarted", extra={"child": server.name, "port": server.port}
                        )
            for service in list(self.services.values()):
                child = service.child
                if service.stopping or child is None or child.alive():
                    continue
                changed = True
                if service.restarts.due(service.name, child.popen.returncode, time.monotonic()):
                    self._restart(service)
            if changed:
                self.write_endpoints()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def stop(self) -> None:
        """Stop in reverse order: processors and ingest first (they drain), the servers last."""
        for service in reversed(list(self.services.values())):
            service.stop()
        if self.mongo is not None:
            self.mongo.stop()
        self.nats.stop()

    def banner(self) -> str:
        endpoints = self.endpoints().items()
        lines = ["medevents is up:"] + [f"  {name:<12} {redact_url(url)}" for name, url in endpoints]
        lines += [
            f"  data         {self.data_dir}",
            f"  logs         {self.logs_dir}",
            "",
            f"  curl {self.endpoints()['ingest']}/health",
            "Press Ctrl-C to stop.",
        ]
        return "\n".join(lines)


async def _main(data_dir: Path, processors: int | None) -> int:
    # Bad settings stop us before anything starts. `--processors N` is the floor: N always run.
    autoscale = with_floor(load(AutoscaleSettings), processors)
    processor_settings = load(ProcessorSettings)
    system = LocalSystem(data_dir, autoscale.min_processors, load(LocalSettings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scaler: asyncio.Task[None] | None = None
    try:
        await system.start()
        if autoscale.enabled:
            autoscaler = LocalAutoscaler(
                NatsSettings(url=system.nats.url),
                system,
                autoscale,
                processor_settings,
                system.data_dir,
            )
            scaler = asyncio.create_task(autoscaler.run(stop))
        print(system.banner(), flush=True)
        await system.supervise(stop)
    finally:
        print("medevents: stopping ...", file=sys.stderr, flush=True)
        stop.set()
        if scaler is not None:
            await scaler
        system.stop()
    return 0


def run_up(data_dir: Path, processors: int | None = None) -> int:
    """``medevents up``: ``processors`` always run (default ``MEDEVENTS_AUTOSCALE_MIN_PROCESSORS``)."""
    logs.configure(load(LogSettings), "local")
    return asyncio.run(_main(data_dir, processors))
