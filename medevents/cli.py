"""The ``medevents`` command: the composition root, the only kernel module that starts components."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from medevents.config import SettingsError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medevents", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run everything on this machine (embedded NATS and MongoDB-wire server)"
    )
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDEVENTS_HOME", ".medevents")),
        help="where data and logs live (MEDEVENTS_HOME, default ./.medevents)",
    )
    up.add_argument("--processors", type=int, default=2, help="processor processes to start with (default 2)")

    commands.add_parser("ingest", help="run the ingest service (configured by environment variables)")
    commands.add_parser("processor", help="run one processor (configured by environment variables)")

    dlq = commands.add_parser("dlq", help="dead letters: events whose processing failed permanently")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_commands.add_parser("list", help="print every dead letter as one JSON object per line")
    replay = dlq_commands.add_parser("replay", help="process dead letters again (all, or the matching ones)")
    replay.add_argument("--patient", help="only this patient's dead letters")
    replay.add_argument("--event", help="only the dead letter of this event id")
    commands.add_parser(
        "operator", help="run the Kubernetes operator (kopf; configured by OPERATOR_* variables)"
    )
    status = commands.add_parser("status", help="show lag, rates, processors and the last scaling decision")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDEVENTS_HOME", ".medevents")),
        help="data directory of `medevents up` (for its last decision; MEDEVENTS_HOME)",
    )

    from medevents.loadgen.cli import add_parser as add_loadgen
    from medevents.timeline import add_parser as add_events

    add_events(commands)
    add_loadgen(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "up":
                from medevents.local.runner import run_up

                return run_up(args.data_dir, processors=args.processors)
            case "ingest":
                from medevents.ingest import serve

                serve()
                return 0
            case "processor":
                from medevents.processor import serve as serve_processor

                return serve_processor()
            case "dlq":
                from medevents.processor.cli import dlq_command

                return dlq_command(
                    args.dlq_command,
                    patient=getattr(args, "patient", None),
                    event_id=getattr(args, "event", None),
                )
            case "operator":
                from medevents.operator.main import run

                run()
                return 0
            case "status":
                from medevents.status import print_status

                return print_status(args.data_dir, as_json=args.json)
            case "events":
                from medevents.timeline import run as run_events

                return run_events(args)
            case "loadgen":
                from medevents.loadgen.cli import run as run_loadgen

                return run_loadgen(args)
    except SettingsError as exc:
        print(f"medevents: configuration error: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)  # argparse allows only the commands above
