"""Shared fixtures: real servers on free ports with throw-away storage, and test hygiene.

nats-server starts in ~50 ms, so each test gets its own; the Mongo-wire server (SecantusDB, or a
real mongod when ``MONGO_URI`` is set) is one per session, with a fresh database per test.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medevents.config import MongoSettings, NatsSettings
from medevents.local import EmbeddedMongo, EmbeddedNats, free_port
from medevents.local.procs import Child, spawn

_TIERS = ("unit", "integration", "operator", "deploy", "e2e", "faults")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-soak", action="store_true", help="also run the long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_soak = pytest.mark.skip(reason="soak test: run with `make soak`")
    for item in items:
        tier = Path(str(item.path)).relative_to(Path(__file__).parent).parts[0]
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if "soak" in item.keywords and not config.getoption("--run-soak"):
            item.add_marker(skip_soak)


@pytest.fixture(autouse=True)
async def _no_leftover_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running: they are shutdown bugs waiting for users."""
    yield
    current = asyncio.current_task()
    for _ in range(20):  # let tasks that are being cancelled finish
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.05)
    names = sorted(t.get_coro().__qualname__ for t in left)  # type: ignore[union-attr]
    pytest.fail(f"test left {len(left)} asyncio task(s) running: {names}")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nats_settings(nats_server: EmbeddedNats) -> NatsSettings:
    return NatsSettings(url=nats_server.url)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    server = EmbeddedMongo(tmp_path_factory.mktemp("mongo"))
    yield server.start()
    server.stop()


@pytest.fixture
def mongo_settings(mongo_uri: str) -> MongoSettings:
    return MongoSettings(uri=mongo_uri, db=f"t_{uuid.uuid4().hex[:12]}")


@dataclass
class MonitoredNats:
    url: str  # client URL
    monitor_url: str  # http://127.0.0.1:<port>, serving /varz


@pytest.fixture
def monitored_nats(tmp_path: Path) -> Iterator[Callable[[bool], MonitoredNats]]:
    """Start nats-servers with JetStream and a monitoring port, configured by hand (not through
    EmbeddedNats): ``start(True)`` fsyncs before it acknowledges, ``start(False)`` has the
    server's default (fsync every 2 minutes)."""
    children: list[Child] = []

    def start(sync_always: bool) -> MonitoredNats:
        name = f"monitored-{len(children)}"
        port, http_port = free_port(), free_port()
        store = tmp_path / name
        sync = "sync_interval: always" if sync_always else ""
        config = tmp_path / f"{name}.conf"
        config.write_text(
            f"host: 127.0.0.1\nport: {port}\nhttp: 127.0.0.1:{http_port}\n"
            f'jetstream {{ store_dir: "{store}"\n {sync} }}\n'
        )
        log = tmp_path / f"{name}.log"
        child = spawn(
            name, [str(Path(sys.executable).parent / "nats-server"), "-c", str(config)], log_path=log
        )
        children.append(child)
        deadline = time.monotonic() + 20
        while b"Server is ready" not in (log.read_bytes() if log.exists() else b""):
            assert child.alive() and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        return MonitoredNats(f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{http_port}")

    yield start
    for child in children:
        child.stop()
