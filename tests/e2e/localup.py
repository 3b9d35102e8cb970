"""Driving ``medevents up`` as a user does: the real command in its own process, its files, its
process tree, and every log line it and its children write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx

from medevents.local import free_port

MEDEVENTS = str(Path(sys.executable).parent / "medevents")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie waiting for a parent that may never reap it."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[0] not in ("Z", "X"):
            parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """The pids still alive after ``timeout``."""
    left = set(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = {p for p in left if alive(p)}
        time.sleep(0.1)
    return left


class LocalUp:
    """One ``medevents up --data-dir`` process; its output goes to ``runner-<n>.out`` beside the
    data directory, so restarts keep the earlier output for the log scan."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "PORT": str(self.port), **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.outputs: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> dict[str, str]:
        """Start and wait until ``endpoints.json`` is written and ``/health`` answers."""
        endpoints = self.data_dir / "endpoints.json"
        endpoints.unlink(missing_ok=True)
        out = self.data_dir.parent / f"runner-{len(self.outputs)}.out"
        self.outputs.append(out)
        with open(out, "wb") as sink:
            self.process = subprocess.Popen(
                [MEDEVENTS, "up", "--data-dir", str(self.data_dir)],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, out.read_text()[-3000:]
            if endpoints.exists():
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        loaded: dict[str, str] = json.loads(endpoints.read_text())
                        return loaded
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        raise AssertionError(f"medevents up did not come up:\n{out.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def child_pid(self, argv_part: str) -> int:
        """The pid of the runner's child whose command line holds ``argv_part``."""
        for pid in descendants(self.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                continue
            if argv_part in cmdline:
                return pid
        raise AssertionError(f"no child running {argv_part!r}")

    def ingest_pid_or_none(self) -> int | None:
        try:
            return self.child_pid("medevents ingest")
        except AssertionError:
            return None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Tear-down: SIGTERM, then SIGKILL the runner and anything left below it."""
        if self.process is None or self.process.poll() is not None:
            return
        below = descendants(self.pid)
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in wait_gone(below, 10):
            os.kill(pid, signal.SIGKILL)

    def processors(self, timeout: float = 60) -> list[str]:
        """URLs of this run's processors that answer ready: a processor that could not bind its
        port (another program took it first; the tests of other trees run beside ours) is left
        out, or whatever holds that port would pass for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            endpoints: dict[str, str] = json.loads((self.data_dir / "endpoints.json").read_text())
            ready = []
            for name, url in endpoints.items():
                log = self.data_dir / "logs" / f"{name}.log"
                if not name.startswith("processor") or not log.exists():
                    continue
                text = log.read_text(errors="replace")
                port = url.rsplit(":", 1)[1]
                if f"Uvicorn running on {url}" not in text or f"', {port}): address already in use" in text:
                    continue
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        ready.append(url)
                except httpx.TransportError:
                    continue
            if ready:
                return ready
            time.sleep(0.5)
        raise AssertionError("no processor of this run became ready")

    def log_files(self) -> Iterator[Path]:
        """Every log the run wrote: the runner's output and every file under the data directory
        that is a log (children's logs, the embedded servers' logs), whoever adds them later."""
        yield from self.outputs
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file() and (path.suffix in (".log", ".out", ".err") or path.parent.name == "logs"):
                yield path
