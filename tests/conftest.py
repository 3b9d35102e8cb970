"""Shared fixtures: real servers on free ports with throw-away storage, and test hygiene.

nats-server starts in ~50 ms, so each test gets its own; the Mongo-wire server (SecantusDB, or a
real mongod when ``MONGO_URI`` is set) is one per session, with a fresh database per test.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from medevents.config import MongoSettings, NatsSettings
from medevents.local import EmbeddedMongo, EmbeddedNats

_TIERS = ("unit", "integration", "operator", "deploy", "e2e", "cluster")


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
