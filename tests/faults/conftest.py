"""The fault tier: programs on the power-loss layer (tests/faults/powerfs.py), killed and cut."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .powerloss import PowerLossDisk, fuse_missing


@pytest.fixture
def power_disk(tmp_path: Path) -> Iterator[PowerLossDisk]:
    """A mounted power-loss layer over ``tmp_path/disk``; unmounted however the test ends."""
    if (reason := fuse_missing()) is not None:
        pytest.skip(reason)
    disk = PowerLossDisk(tmp_path)
    with disk:
        yield disk
