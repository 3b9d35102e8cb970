"""The run's report: one JSON-ready dict, and the same as text for a terminal."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from .runner import LoadResult
from .stats import summarize

__all__ = ["report", "text"]


def report(result: LoadResult) -> dict[str, Any]:
    """Throughput, latency percentiles (accept, from the planned send time, end to end), errors by
    kind, processing and verification, and the samples taken during the run."""
    spec = result.spec
    send_s = max(result.send_s, 1e-9)
    verification = result.verification
    processed_per_s = None
    if verification is not None and result.last_processed_at is not None:
        stored = verification.stored - verification.failed
        span = result.last_processed_at - result.started_at
        processed_per_s = round(stored / span, 1) if span > 0 else None
    return {
        "run_id": result.run_id,
        "started_at": dt.datetime.fromtimestamp(result.started_at, dt.UTC).isoformat(),
        "spec": msgspec.to_builtins(spec),
        "sent": result.sent,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "errors": dict(sorted(result.errors.items())),
        "error_total": sum(result.errors.values()),
        "send_s": round(result.send_s, 3),
        "sent_per_s": round(result.sent / send_s, 1),
        "answered_202_per_s": round((result.accepted + result.duplicates) / send_s, 1),
        "client_cpu_percent": round(100 * result.client_cpu_s / send_s, 1),
        "accept_latency": summarize(result.accept_latency_s),
        "scheduled_latency": summarize(result.scheduled_latency_s) if spec.rate is not None else None,
        "processing": {
            "observed": result.processing_done is not None,
            "done": result.processing_done,
            "wait_s": round(result.wait_s, 3),
            "processed_per_s": processed_per_s,
            "e2e_latency": summarize(result.e2e_latency_s),
        },
        "verification": msgspec.to_builtins(verification) if verification is not None else None,
        "samples": msgspec.to_builtins(result.samples),
    }


def _ms(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("count"):
        return "-"
    return (
        f"p50 {summary['p50_ms']:.2f} ms  p90 {summary['p90_ms']:.2f} ms  p99 {summary['p99_ms']:.2f} ms  "
        f"p99.9 {summary['p99_9_ms']:.2f} ms  max {summary['max_ms']:.2f} ms  (n={summary['count']:,})"
    )


def text(data: dict[str, Any]) -> str:
    """The report for people: a few aligned lines."""
    spec = data["spec"]
    rate = "max" if spec["rate"] is None else f"{spec['rate']:g}/s"
    lines = [
        f"run {data['run_id']}  rate {rate}  concurrency {spec['concurrency']}  patients {spec['patients']:,}"
        f"  payload ~{spec['payload_bytes']} B  duplicates {spec['duplicates']:.0%}",
        f"sent        {data['sent']:,} in {data['send_s']:.1f} s = {data['sent_per_s']:,.0f}/s"
        f"  (client CPU {data['client_cpu_percent']:.0f}% of one core)",
        f"accepted    {data['accepted']:,} new, {data['duplicates']:,} duplicates"
        f"  ({data['answered_202_per_s']:,.0f} 202/s)",
        "errors      "
        + (", ".join(f"{k} {v:,}" for k, v in data["errors"].items()) if data["errors"] else "none"),
        f"accept      {_ms(data['accept_latency'])}",
    ]
    if data["scheduled_latency"] is not None:
        lines.append(f"  from plan {_ms(data['scheduled_latency'])}")
    processing = data["processing"]
    if not processing["observed"]:
        lines.append("processing  not observed (--no-verify, or no MongoDB: --data-dir or --mongo)")
    else:
        state = "done" if processing["done"] else "NOT DONE (timed out)"
        rate_out = processing["processed_per_s"]
        lines.append(
            f"processing  {state} after {processing['wait_s']:.1f} s of waiting"
            + (f", {rate_out:,.0f} events/s from first send to last processed" if rate_out else "")
        )
        lines.append(f"end to end  {_ms(processing['e2e_latency'])}")
    v = data["verification"]
    if v is not None:
        verdict = "OK" if v["ok"] else "FAILED"
        order = (
            "per-patient order checked" if v["order_checked"] else "order NOT checked (no stream sequence)"
        )
        lines.append(
            f"verified    {verdict}: {v['expected']:,} accepted, {v['stored']:,} stored,"
            f" missing {v['missing']}, stored twice {v['stored_twice']}, unexpected {v['unexpected']},"
            f" out of order {v['out_of_order']}, failed {v['failed']}; {order}"
        )
        for kind, sample in v["samples"].items():
            if sample:
                lines.append(f"  {kind}: {', '.join(sample)}")
    return "\n".join(lines)
