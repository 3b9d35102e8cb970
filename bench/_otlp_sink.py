"""An OTLP/HTTP receiver that accepts trace exports and throws them away: where benchmark 1's
"tracing on" ingest exports its spans, so the export's cost is in the measurement and a
collector's is not. Run as ``python -m bench._otlp_sink PORT``."""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["main"]


class _Discard(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")  # an empty ExportTraceServiceResponse
        self.end_headers()

    def do_GET(self) -> None:  # readiness for the benchmark
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


def main(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Discard).serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]))
