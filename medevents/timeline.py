"""``medevents events PATIENT_ID [--follow] [--json]``: a patient's events in processing order.

Reads the ingest HTTP API (``GET /patients/{id}/events`` and ``GET /patients/{id}``), at ``--url``
(``MEDEVENTS_URL``) or the URL ``medevents up`` wrote to ``<data dir>/endpoints.json``. Through
the API rather than MongoDB: it needs no database credentials or network path to the database
(on Kubernetes only the ingest is exposed), it is subject to the same bearer tokens and rate limit
as every other client, the pending count needs NATS as well, and there is one implementation of
the ordering and paging, which the command exercises like any client.

``--follow`` polls with the cursor (``after=``) once per ``--interval``: MongoDB change streams are
not available on the embedded store. Ctrl-C stops it (exit status 130, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "add_parser", "patient_path", "render_event", "run"]

DEFAULT_LIMIT = 100  # events per page when the client does not say
MAX_LIMIT = 1000  # most events per page
_RETRYABLE = {0, 429, 502, 503, 504}  # 0: no HTTP answer at all


def patient_path(patient_id: str) -> str:
    """``/patients/<id>`` with the id as one percent-encoded path segment (``/`` as ``%2F``).
    ``.`` and ``..`` are encoded too: clients and proxies would remove them as dot segments."""
    segment = quote(patient_id, safe="")
    if segment in (".", ".."):
        segment = segment.replace(".", "%2E")
    return f"/patients/{segment}"


def add_parser(commands: Any) -> None:
    """Register ``events`` on the ``medevents`` sub-command parser."""
    p = commands.add_parser(
        "events",
        help="print a patient's events in processing order (through the HTTP API)",
        description="Print a patient's processed and failed events in processing order, then how\n"
        "many still wait in the stream. Asks the ingest API (the URL `medevents up` wrote, or --url).",
        epilog="examples:\n"
        "  medevents events patient-456\n"
        "  medevents events patient-456 --follow            # new events as they are processed\n"
        "  medevents events patient-456 --type vitals --since 2025-10-01T00:00:00Z --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("patient_id", metavar="PATIENT_ID", help="the patient id, as it was sent")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C stops)")
    p.add_argument("--json", action="store_true", help="one JSON object per event and line")
    p.add_argument("--type", help="only events of this type")
    p.add_argument("--since", help="only events whose ts is at or after this RFC 3339 time")
    p.add_argument("--until", help="only events whose ts is before this RFC 3339 time")
    p.add_argument(
        "--url",
        default=os.environ.get("MEDEVENTS_URL", ""),
        help="ingest base URL (MEDEVENTS_URL; default: the one in <data dir>/endpoints.json)",
    )
    p.add_argument(
        "--token", default=os.environ.get("MEDEVENTS_TOKEN", ""), help="bearer token (MEDEVENTS_TOKEN)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDEVENTS_HOME", ".medevents")),
        help="data directory of `medevents up`, read for endpoints.json (MEDEVENTS_HOME)",
    )
    p.add_argument("--interval", type=_seconds, default=1.0, help="seconds between polls with --follow (1)")


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text}")
    return value


class ApiError(Exception):
    """The API answered with an error, or did not answer (``status`` 0)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}" if status else detail)
        self.status = status


class _Client:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ApiError(0, f"expected an http:// or https:// URL, got {base_url!r}")
        self.base = base_url.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout_s

    def get(self, path: str) -> Any:
        # The scheme was checked to be http(s) above (S310: no file:// or custom schemes).
        request = urllib.request.Request(self.base + path, headers=self.headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                detail = json.loads(body).get("detail", "")
            except (ValueError, AttributeError):
                detail = body[:200].decode("utf-8", "replace")
            raise ApiError(exc.code, detail) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, f"cannot reach {self.base}: {reason}") from None


def _escape_invisible(text: str) -> str:
    """Control, format (bidirectional, zero-width) and separator characters as JSON escapes, so
    event data cannot move the cursor or recolour a terminal. Inside JSON text the value stays
    the same."""
    return "".join(
        json.dumps(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text
    )


def render_event(event: dict[str, Any], *, as_json: bool = False) -> str:
    """One line: sequence, ts, type, status, event id and data (or the event as JSON)."""
    if as_json:
        return _escape_invisible(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
    data = json.dumps(event.get("data"), ensure_ascii=False, separators=(",", ":"))
    line = (
        f"{event['sequence']:>8}  {event.get('ts') or '-'}  {event.get('type') or '-'}  "
        f"{event['status']}  {event['eventId']}  {data}"
    )
    if event["status"] == "failed":
        line += f"  ({event['result']['message']})"
    return _escape_invisible(line)


def _print_pages(client: _Client, path: str, *, as_json: bool) -> int:
    """Print every page from ``path`` on (following ``next``); the cursor to poll from."""
    while True:
        page = client.get(path)
        for event in page["events"]:
            print(render_event(event, as_json=as_json), flush=True)
        if page["next"] is None:
            return int(page["cursor"])
        path = page["next"]


def _events_path(args: argparse.Namespace, after: int) -> str:
    params: dict[str, Any] = {"after": after, "limit": MAX_LIMIT}
    for name in ("type", "since", "until"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    return f"{patient_path(args.patient_id)}/events?{urlencode(params, quote_via=quote)}"


def run(args: argparse.Namespace) -> int:
    """The command: 0 when done, 1 when the API refused or could not be reached, 2 without a URL,
    130 after Ctrl-C in ``--follow``."""
    from medevents.local.endpoints import read_endpoints  # not at import: ingest imports this module

    base = args.url or read_endpoints(args.data_dir).get("ingest")
    if not base:
        print(
            f"medevents events: no ingest URL: pass --url (MEDEVENTS_URL) or start `medevents up` "
            f"({args.data_dir}/endpoints.json)",
            file=sys.stderr,
        )
        return 2
    try:
        client = _Client(base, args.token)
        cursor = _print_pages(client, _events_path(args, 0), as_json=args.json)
        if not args.follow:
            if not args.json:
                s = client.get(patient_path(args.patient_id))
                print(f"{s['stored']} events ({s['failed']} failed); {s['pending']} waiting in the stream")
            return 0
        down = False
        while True:
            time.sleep(args.interval)
            try:
                cursor = _print_pages(client, _events_path(args, cursor), as_json=args.json)
            except ApiError as exc:
                if exc.status not in _RETRYABLE:
                    raise
                if not down:
                    print(f"medevents events: {exc}; still trying", file=sys.stderr, flush=True)
                down = True
                continue
            if down:
                print("medevents events: reading again", file=sys.stderr, flush=True)
                down = False
    except ApiError as exc:
        print(f"medevents events: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
