"""``medevents status [--json]``: lag, rates, processors and the last scaling decision.

Reads NATS (``NATS_URL``, else the URL ``medevents up`` wrote to ``<data dir>/endpoints.json``):
the backlog twice, one second apart, for the rates; the processors' membership heartbeats; and
from the data directory of ``medevents up`` its children and their restarts (``children.json``,
shown even when NATS is down) and the local autoscaler's last decision (``autoscaler.json``; on
Kubernetes, ``kubectl get eventpipelines`` shows the operator's).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import nats.errors

from medevents.backlog import StreamMissingError, rates, read_backlog, read_members
from medevents.config import NatsSettings, load
from medevents.local.autoscaler import AUTOSCALER_FILE
from medevents.local.endpoints import read_endpoints
from medevents.local.runner import CHILDREN_FILE
from medevents.natsconn import connect

__all__ = ["collect", "local_children", "print_status", "render"]


def _nats_settings(data_dir: Path) -> NatsSettings:
    settings = load(NatsSettings)
    url = read_endpoints(data_dir).get("nats")
    if "NATS_URL" not in os.environ and url:
        settings = NatsSettings(**{**_fields(settings), "url": url})
    return settings


def local_children(data_dir: Path) -> dict[str, Any] | None:
    """What ``medevents up`` last wrote about its children, and whether that runner still runs."""
    path = data_dir / CHILDREN_FILE
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    try:
        os.kill(int(state["runnerPid"]), 0)
        state["runnerAlive"] = True
    except (ProcessLookupError, PermissionError, KeyError, ValueError):
        state["runnerAlive"] = False
    return state


def _fields(settings: NatsSettings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in settings.__struct_fields__}


async def collect(settings: NatsSettings, data_dir: Path, interval_s: float = 1.0) -> dict[str, Any]:
    """Everything ``medevents status`` shows, as one JSON-ready dict."""
    nc = await connect(settings, "medevents-status", allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=settings.request_timeout_s)
        first = await read_backlog(js)
        await asyncio.sleep(interval_s)
        second = await read_backlog(js)
        members = await read_members(js)
    finally:
        await nc.close()
    flow = rates(first, second)
    decision_path = data_dir / AUTOSCALER_FILE
    autoscaler = json.loads(decision_path.read_text()) if decision_path.exists() else None
    return {
        "nats": settings.url,
        "partitions": second.partitions,
        "lag": second.lag,
        "pending": second.pending,
        "ackPending": second.ack_pending,
        "missingConsumers": list(second.missing),
        "arrivalRate": round(flow.arrival, 2),
        "processingRate": round(flow.processing, 2),
        "processors": [
            {
                "id": m.id,
                "inFlight": m.in_flight,
                "capacity": m.capacity,
                "partitions": len(m.partitions),
                "processedPerS": round(m.processed_per_s, 2),
                "draining": m.draining,
            }
            for m in sorted(members, key=lambda m: m.id)
        ],
        "autoscaler": autoscaler,
        "local": local_children(data_dir),
    }


def _render_local(local: dict[str, Any] | None) -> list[str]:
    if local is None:
        return []
    runner = f"medevents up (pid {local.get('runnerPid')})"
    lines = [f"local       {runner}{'' if local['runnerAlive'] else ' NOT RUNNING; as it last wrote'}"]
    for child in local.get("children", []):
        state = f"pid {child['pid']}" if child["running"] else "DOWN, restarting"
        restarts = child["restarts"]
        note = ""
        if restarts or child.get("lastExit") is not None:
            note = f"  restarts {restarts}, last exit {child.get('lastExit')}"
            if child.get("lastRestart"):
                note += f", last restart {child['lastRestart']}"
        lines.append(f"  {child['name']:<14} :{child['port']:<6} {state}{note}")
    return lines


def render(status: dict[str, Any]) -> str:
    """The human-readable form."""
    lines = [
        f"NATS        {status['nats']}",
        f"lag         {status['lag']} (pending {status['pending']}, ack-pending {status['ackPending']}) "
        f"over {status['partitions']} partitions",
        f"rates       in {status['arrivalRate']}/s, out {status['processingRate']}/s",
    ]
    if status["missingConsumers"]:
        lines.append(f"MISSING     consumers {', '.join(status['missingConsumers'])}")
    procs = status["processors"]
    lines.append(f"processors  {len(procs)} running")
    lines += [
        f"  {p['id']:<36} in-flight {p['inFlight']}/{p['capacity']}  {p['processedPerS']}/s  "
        f"{p['partitions']} partitions{'  DRAINING' if p['draining'] else ''}"
        for p in procs
    ]
    auto = status["autoscaler"]
    if auto:
        bounds = f", always {auto['min']}, at most {auto['max']}" if "min" in auto else ""
        lines.append(f"desired     {auto.get('desired')} (running {auto.get('current')}{bounds})")
        decision = auto.get("decision") or {}
        if decision:
            lines.append(
                f"decision    {decision.get('reason')} {decision.get('fromReplicas')} -> "
                f"{decision.get('toReplicas')} at {decision.get('time')}: {decision.get('message')}"
            )
    else:
        lines.append("desired     (no local autoscaler decision yet)")
    lines += _render_local(status.get("local"))
    return "\n".join(lines)


def print_status(data_dir: Path, *, as_json: bool = False) -> int:
    """The command: 0 when NATS answered, 1 when it did not or the stream is missing."""
    settings = _nats_settings(data_dir)
    try:
        status = asyncio.run(collect(settings, data_dir))
    except StreamMissingError as exc:
        problem = str(exc)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        problem = f"cannot read NATS at {settings.url}: {type(exc).__name__}"
    else:
        print(json.dumps(status, indent=2) if as_json else render(status))
        return 0
    local = local_children(data_dir)  # what the local runner knows, e.g. NATS being restarted
    if as_json:
        print(json.dumps({"error": problem, "local": local}, indent=2))
    elif local is not None:
        print("\n".join(_render_local(local)))
    print(f"medevents: {problem}", file=sys.stderr)
    return 1
