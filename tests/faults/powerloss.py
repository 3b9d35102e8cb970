"""The test side of the power-loss layer (:mod:`tests.faults.powerfs`, whose docstring states the
crash model): mount it over a directory, cut the power, mount it again.

A :class:`PowerLossDisk` owns a folder with ``disk/`` (what is durably there after a cut),
``mnt/`` (the layer, where the programs under test keep their data) and ``attic/`` (the layer's
undo space). The layer runs as a process of its own, so killing the programs never kills it, and
it is always unmounted, lazily if need be, even when a test fails.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.util
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["PowerLossDisk", "fuse_missing"]

POWERFS = Path(__file__).with_name("powerfs.py")


def fuse_missing() -> str | None:
    """Why this machine cannot run the layer, or None when it can."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse: the power-loss tests need FUSE (a machine or container with /dev/fuse)"
    if shutil.which("fusermount3") is None or ctypes.util.find_library("fuse3") is None:
        return "libfuse 3 is missing: install the Debian package fuse3 (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is missing: install the dev extra (pip install -e '.[dev]')"
    return None


class PowerLossDisk:
    """A directory behind the power-loss layer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.disk = root / "disk"
        self.mnt = root / "mnt"
        self.attic = root / "attic"
        self.log = root / "powerfs.log"
        self.mounts = 0
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None
        for path in (self.disk, self.mnt, self.attic):
            path.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> PowerLossDisk:
        self.mount()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.unmount()

    def mount(self, timeout: float = 15.0) -> Path:
        """Mount the layer over ``disk`` (with nothing pending: a fresh boot)."""
        assert self._process is None, "already mounted"
        self.mounts += 1
        self._log = open(self.log, "ab")  # noqa: SIM115 - closed in unmount
        self._process = subprocess.Popen(
            [sys.executable, str(POWERFS), str(self.disk), str(self.attic), str(self.mnt)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mnt):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"the power-loss layer did not mount:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        return self.mnt

    def _ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        process.stdin.write(command + "\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"the power-loss layer did not answer {command!r}:\n{self.log.read_text()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stats(self) -> dict[str, Any]:
        """The layer's counters: syncs, pending (not durable) files and bytes, entry changes."""
        return self._ask("stats")

    def cut(self) -> dict[str, Any]:
        """The power failure: everything not durable is taken back and the layer unmounted. The
        programs using it must be dead already (a stopped program would write after the cut).
        Returns the layer's counters as they were at the cut."""
        report = self._ask("cut")
        self.unmount()
        return report

    def unmount(self) -> None:
        """Unmount (lazily if busy) and stop the layer's process; safe to call twice."""
        process, self._process = self._process, None
        if os.path.ismount(self.mnt):
            done = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True, check=False)
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
