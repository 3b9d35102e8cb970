"""The cluster tier's fixture: three nats-servers clustered on loopback, thrown away per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from medevents.local import EmbeddedNatsCluster


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[EmbeddedNatsCluster]:
    cluster = EmbeddedNatsCluster(tmp_path / "nats")
    cluster.start()
    yield cluster
    cluster.stop()
