"""The load tool of benchmarks 1 and 7: wrk when installed, else ``medevents loadgen`` in max-rate
mode; both send unique events of the same shape and size."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from medevents.loadgen import LoadSpec, report, run_load

__all__ = ["LoadStats", "has_wrk", "max_rate", "parse_wrk", "run_wrk", "wrk_batch_script", "wrk_script"]

PAYLOAD_BYTES = 256
PATIENTS = 1000


@dataclass
class LoadStats:
    """One closed-loop load run."""

    tool: str
    rps: float  # 2xx answers per second
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    non_2xx: int
    socket_errors: int


def has_wrk() -> bool:
    return shutil.which("wrk") is not None


def _wrk_pad(run_id: str, patients: int, payload_bytes: int) -> str:
    """The padding that brings a wrk event of the old demo's shape to about ``payload_bytes``."""
    sample = (
        f'{{"patientId":"wrk-{run_id}-{patients - 1}","type":"vitals",'
        f'"data":{{"seq":100000,"heartRate":72,"pad":""}},"ts":"2025-10-01T10:30:00Z"}}'
    )
    return "x" * max(0, payload_bytes - len(sample))


def wrk_script(run_id: str, patients: int = PATIENTS, payload_bytes: int = PAYLOAD_BYTES) -> str:
    """A wrk Lua script posting unique events in the old demo's shape (``data.seq`` counts up),
    padded to about ``payload_bytes`` like the load generator's."""
    pad = _wrk_pad(run_id, patients, payload_bytes)
    return f"""
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  local body = '{{"patientId":"wrk-{run_id}-' .. (n % {patients}) ..
    '","type":"vitals","data":{{"seq":' .. n ..
    ',"heartRate":72,"pad":"{pad}"}},"ts":"2025-10-01T10:30:00Z"}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def wrk_batch_script(
    run_id: str, items: int, patients: int = PATIENTS, payload_bytes: int = PAYLOAD_BYTES
) -> str:
    """A wrk Lua script posting ``POST /events/batch`` bodies: a JSON array of ``items`` unique
    events of the same shape and size as :func:`wrk_script`'s."""
    pad = _wrk_pad(run_id, patients, payload_bytes)
    return f"""
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local parts = {{}}
  for i = 1, {items} do
    n = n + 1
    parts[i] = '{{"patientId":"wrk-{run_id}-' .. (n % {patients}) ..
      '","type":"vitals","data":{{"seq":' .. n ..
      ',"heartRate":72,"pad":"{pad}"}},"ts":"2025-10-01T10:30:00Z"}}'
  end
  return wrk.format(nil, nil, nil, "[" .. table.concat(parts, ",") .. "]")
end
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadStats:
    """Requests/sec, the 50 % and 99 % latency, and failures from ``wrk --latency`` output."""
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps_all = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = sum(int(g) for g in errors.groups()) if errors else 0
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    ok_share = (total - non_2xx) / total if total else 0.0
    return LoadStats(
        tool="wrk",
        rps=rps_all * ok_share,
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        requests=total,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def run_wrk(url: str, seconds: float, connections: int, threads: int = 1, batch: int = 0) -> LoadStats:
    """``wrk -t<threads> -c<connections> -d<seconds>s --latency`` with the unique-event script;
    with ``batch`` > 0, ``POST /events/batch`` of ``batch`` events per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        run_id = uuid.uuid4().hex[:8]
        script.write(wrk_batch_script(run_id, batch) if batch else wrk_script(run_id))
    try:
        argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name]
        path = "/events/batch" if batch else "/events"
        out = subprocess.run([*argv, url + path], capture_output=True, text=True, check=True)
    finally:
        Path(script.name).unlink()
    return parse_wrk(out.stdout)


async def run_loadgen(url: str, seconds: float, connections: int) -> LoadStats:
    """The built-in load generator in max-rate mode, nothing verified."""
    spec = LoadSpec(
        url=url,
        duration_s=seconds,
        patients=max(PATIENTS, connections),
        payload_bytes=PAYLOAD_BYTES,
        concurrency=connections,
        verify=False,
    )
    data = report(await run_load(spec))
    return LoadStats(
        tool="loadgen",
        rps=data["answered_202_per_s"],
        p50_ms=data["accept_latency"]["p50_ms"],
        p99_ms=data["accept_latency"]["p99_ms"],
        requests=data["sent"],
        non_2xx=sum(v for k, v in data["errors"].items() if k.startswith("http_")),
        socket_errors=sum(v for k, v in data["errors"].items() if not k.startswith("http_")),
    )


async def max_rate(url: str, seconds: float, connections: int, tool: str = "auto") -> LoadStats:
    """Closed-loop maximum rate with wrk (``auto`` when installed) or the load generator."""
    if tool == "wrk" or (tool == "auto" and has_wrk()):
        await asyncio.to_thread(run_wrk, url, 1.0, connections)  # warm-up: connections, caches
        return await asyncio.to_thread(run_wrk, url, seconds, connections)
    await run_loadgen(url, 1.0, connections)
    return await run_loadgen(url, seconds, connections)
