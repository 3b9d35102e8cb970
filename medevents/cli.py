"""The ``medevents`` command line: its help texts, and which component each command starts.

This is the composition root, the only kernel module that imports components (lazily, so that
``medevents --help`` starts fast). The help texts are for users: what a command does and examples.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medevents.config import SettingsError

__all__ = ["main"]

_DESCRIPTION = """\
medevents accepts medical events over HTTP, keeps each one durably in NATS JetStream before it
answers 202, and processes every patient's events in arrival order, exactly once, into MongoDB."""

_EPILOG = """\
Try it on this machine (nothing else to install, no Docker):
  medevents up                                  # API on http://localhost:3000; Ctrl-C stops it
  curl -X POST http://localhost:3000/events -H 'Content-Type: application/json' \\
    -d '{"patientId":"patient-123","type":"vitals","data":{"heartRate":72},"ts":"2025-10-01T10:30:00Z"}'
  medevents status                              # backlog, rates, processors

`medevents COMMAND --help` shows a command's options and examples. Settings are environment
variables (NATS_URL, MONGO_URI, PORT, ...); the README lists them all."""


def _data_dir(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDEVENTS_HOME", ".medevents")),
        metavar="DIR",
        help=f"{what} (default: $MEDEVENTS_HOME, else ./.medevents)",
    )


def _processor_count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 0 and 64")
    return value


def _command(commands: Any, name: str, summary: str, description: str, examples: str) -> Any:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medevents",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _command(
        commands,
        "up",
        "run the whole system on this machine",
        "Start everything on this machine: a NATS server with JetStream, a MongoDB-compatible\n"
        "store (SecantusDB; or your MongoDB when MONGO_URI is set), the ingest API on port 3000\n"
        "(PORT) and the processors. Whatever dies is started again, the servers on the same port\n"
        "and data. Data and logs stay in the data directory across runs; Ctrl-C stops everything.\n"
        "Under a backlog the local autoscaler adds processors, up to\n"
        "MEDEVENTS_AUTOSCALE_MAX_PROCESSORS (4), and removes them when the work is done.",
        "  medevents up                          # API on http://localhost:3000\n"
        "  medevents up --processors 3           # 3 processors always run, more under load\n"
        "  PORT=8080 medevents up --data-dir /tmp/medevents\n"
        "  MONGO_URI=mongodb://localhost:27017/medical_events medevents up   # your MongoDB",
    )
    _data_dir(up, "where data and logs live")
    up.add_argument(
        "--processors",
        type=_processor_count,
        metavar="N",
        help="processors that always run, 0-64 (default: MEDEVENTS_AUTOSCALE_MIN_PROCESSORS, 1)",
    )

    _command(
        commands,
        "ingest",
        "run the ingest API alone (containers)",
        "Run the HTTP API alone: POST /events and /events/batch answer 202 once the event is\n"
        "stored in JetStream, GET /events/ID tells whether it was processed. Needs NATS with\n"
        "JetStream (NATS_URL); configured by environment variables (PORT, INGEST_*).",
        "  NATS_URL=nats://nats:4222 PORT=3000 medevents ingest\n"
        "  INGEST_AUTH_TOKENS=$TOKEN INGEST_RATE_LIMIT_PER_S=100 medevents ingest",
    )
    _command(
        commands,
        "processor",
        "run one processor alone (containers)",
        "Run one processor: it takes events from JetStream, runs the handler for each patient's\n"
        "events in order and stores each result once in MongoDB. Start several for more\n"
        "throughput. Configured by environment variables (NATS_URL, MONGO_URI, PROCESSOR_*).",
        "  NATS_URL=nats://nats:4222 MONGO_URI=mongodb://mongo:27017/medical_events medevents processor\n"
        "  PROCESSOR_DELAY_MIN_MS=0 PROCESSOR_DELAY_MAX_MS=0 PORT=3002 medevents processor",
    )

    dlq = _command(
        commands,
        "dlq",
        "list or replay events whose processing failed",
        "Dead letters are events whose handler failed for good (a permanent error, or the same\n"
        "error PROCESSOR_MAX_ATTEMPTS times). They are kept in the stream EVENTS_DLQ until\n"
        "replayed. Uses NATS_URL and MONGO_URI, like the processor.",
        "  medevents dlq list\n"
        "  medevents dlq list --show-patient\n"
        "  medevents dlq replay --event 8d06ea05-895a-553f-8b53-16e0c2e7f474\n"
        "  medevents dlq replay --patient patient-123",
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = _command(
        dlq_commands,
        "list",
        "print every dead letter, one JSON object per line",
        "Print every dead letter as one JSON object per line: event id, error, attempts, its\n"
        "place in the stream, and the patient as `patient`, the keyed hash the logs carry (set\n"
        "MEDEVENTS_PATIENT_HASH_KEY as the services have it to match their log lines). The\n"
        "patient id itself is shown only with --show-patient.",
        "  medevents dlq list\n  medevents dlq list --show-patient | jq .patient_id",
    )
    listing.add_argument(
        "--show-patient", action="store_true", help="also print each patient id (patient data)"
    )
    replay = _command(
        dlq_commands,
        "replay",
        "process dead letters again",
        "Publish dead letters again, with their event ids, after the patient's newer events, and\n"
        "remove them from the dead-letter stream: all of them, or one patient's or one event's.",
        "  medevents dlq replay\n"
        "  medevents dlq replay --patient patient-123\n"
        "  medevents dlq replay --event ID",
    )
    replay.add_argument("--patient", metavar="ID", help="only this patient's dead letters")
    replay.add_argument("--event", metavar="ID", help="only the dead letter of this event id")

    _command(
        commands,
        "operator",
        "run the Kubernetes operator",
        "Run the Kubernetes operator: it reconciles EventPipeline resources (stream, consumers,\n"
        "processor tuning) and scales the processor workload from the backlog. The Helm chart\n"
        "runs it; configured by OPERATOR_* variables and NATS_URL.",
        "  medevents operator                              # in the cluster (service account)\n"
        "  OPERATOR_NAMESPACES=medevents OPERATOR_STANDALONE=true medevents operator",
    )
    status = _command(
        commands,
        "status",
        "show the backlog, rates, processors and scaling",
        "Show the backlog (lag) over the partitions, arrival and processing rates, the\n"
        "processors and what they hold, and, for `medevents up`, its children (servers,\n"
        "ingest, processors and their restarts) and the local autoscaler's last decision.\n"
        "Reads NATS_URL, else the URL `medevents up` wrote to the data directory.",
        "  medevents status\n  medevents status --json | jq .lag",
    )
    status.add_argument("--json", action="store_true", help="print one JSON object instead")
    _data_dir(status, "data directory of `medevents up`")

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
                    show_patient=getattr(args, "show_patient", False),
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
