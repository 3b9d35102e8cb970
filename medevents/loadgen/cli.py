"""``medevents loadgen``: arguments, where the system is (``endpoints.json`` or flags), and output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import uvloop

from medevents.local.endpoints import read_endpoints

from .plot import PlotUnavailable, plot
from .report import report, text
from .runner import LoadSpec, run_load, tty_progress

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Register ``loadgen`` on the ``medevents`` sub-command parser."""
    p = commands.add_parser(
        "loadgen",
        help="send test events, verify their processing, report",
        description="Send test events to a running medevents system (the URLs `medevents up` wrote\n"
        "to the data directory, or --url/--nats/--mongo), wait until they are processed, check in\n"
        "MongoDB that each was stored once and every patient's in order, and report throughput,\n"
        "latency and errors. Exit code 1 when the check fails.",
        epilog="examples:\n"
        "  medevents loadgen --rate 300 --duration 60 --patients 2000 --duplicates 0.05\n"
        "  medevents loadgen --max-rate --count 50000 --concurrency 64 --no-verify\n"
        "  medevents loadgen --rate 300 --duration 60 --json run.json --plot run.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_argument_group("where")
    where.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDEVENTS_HOME", ".medevents")),
        help="data directory of `medevents up`, read for endpoints.json (default ./.medevents)",
    )
    where.add_argument("--url", help="ingest base URL (overrides endpoints.json)")
    where.add_argument("--nats", help="NATS URL for lag and processor count (overrides endpoints.json)")
    where.add_argument("--mongo", help="MongoDB URI for verification (overrides endpoints.json)")
    where.add_argument(
        "--token", default=os.environ.get("LOADGEN_TOKEN", ""), help="bearer token (LOADGEN_TOKEN)"
    )
    load = p.add_argument_group("load")
    rate = load.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="target requests per second")
    rate.add_argument("--max-rate", action="store_true", help="as fast as the server answers (the default)")
    load.add_argument("--duration", type=float, help="seconds to send for")
    load.add_argument("--count", type=int, help="requests to send (default 1000 when no --duration)")
    load.add_argument("--patients", type=int, default=1000, help="distinct patients (default 1000)")
    load.add_argument("--duplicates", type=float, default=0.0, help="share of resent events, 0-1 (default 0)")
    load.add_argument("--payload-bytes", type=int, default=256, help="approximate body size (default 256)")
    load.add_argument("--concurrency", type=int, default=32, help="connections (default 32)")
    load.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    out = p.add_argument_group("after sending")
    out.add_argument("--wait", type=float, default=120.0, help="seconds to wait for processing (default 120)")
    out.add_argument("--no-verify", action="store_true", help="do not wait for processing or verify")
    out.add_argument("--json", type=Path, help="write the report as JSON to this file")
    out.add_argument(
        "--plot", type=Path, help="draw rates, lag and processors into this PNG (needs matplotlib)"
    )
    out.add_argument("--run-id", default="", help="names the run's patients lg-<id>-<n> (default random)")


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    known = read_endpoints(args.data_dir)
    url = args.url or known.get("ingest")
    if not url:
        raise ValueError(
            f"no ingest URL: pass --url or start `medevents up` ({args.data_dir}/endpoints.json)"
        )
    count = args.count if args.count is not None or args.duration is not None else 1000
    return LoadSpec(
        url=url,
        rate=args.rate,
        duration_s=args.duration,
        count=count,
        patients=args.patients,
        duplicates=args.duplicates,
        payload_bytes=args.payload_bytes,
        concurrency=args.concurrency,
        timeout_s=args.timeout,
        run_id=args.run_id,
        auth_token=args.token,
        nats_url=args.nats or known.get("nats"),
        mongo_uri=args.mongo or known.get("mongo"),
        wait_s=args.wait,
        verify=not args.no_verify,
    )


def run(args: argparse.Namespace) -> int:
    """Run the load; exit 1 when verification failed or processing did not finish in time."""
    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        print(f"medevents loadgen: {exc}", file=sys.stderr)
        return 2
    progress = tty_progress()
    result = uvloop.run(run_load(spec, progress))
    if progress is not None:
        sys.stderr.write("\n")
    data = report(result)
    print(text(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        try:
            plot(data, args.plot)
        except PlotUnavailable as exc:
            print(f"medevents loadgen: {exc}", file=sys.stderr)
            return 2
    failed = result.verification is not None and not result.verification.ok
    return 1 if failed or result.processing_done is False else 0
