"""Checking a run against what MongoDB holds: every accepted event stored exactly once, nothing
stored that was not sent, and each patient's events applied in the order they were sent.

Pure: the caller reads the documents; :func:`verify` only compares.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import msgspec

__all__ = ["SentEvent", "StoredEvent", "Verification", "verify"]

_SAMPLE = 10  # ids or patients quoted per kind of failure


class SentEvent(msgspec.Struct, frozen=True):
    """What the generator knows about one event it sent."""

    patient_id: str
    seq: int  # the patient's event number, in sending order
    sent_at: float  # wall clock (seconds since the epoch) of the first attempt
    accepted: bool  # True: answered 202; False: no clear answer (it may or may not be stored)


class StoredEvent(msgspec.Struct, frozen=True):
    """The fields of one processed_events document that verification needs."""

    event_id: str
    patient_id: str
    seq: int | None  # data.seq, as sent
    stream_seq: int | None  # stream sequence the processor stored (None: not stored)
    processed_at: float | None  # wall clock of processing (the handler finished)
    failed: bool = False  # result.status == "failed" (dead-lettered)
    started_at: float | None = None  # wall clock the handler started, when stored


class Verification(msgspec.Struct):
    """The outcome; ``ok`` only when nothing is missing, doubled, unexpected or out of order."""

    expected: int  # accepted (202) events
    stored: int  # documents found for the run's patients
    missing: int
    stored_twice: int
    unexpected: int
    out_of_order: int  # patients whose documents break sending or stream order
    failed: int  # stored as failed (dead letters): stored once, but not processed successfully
    uncertain_stored: int  # events without a clear answer that were stored (allowed, once)
    order_checked: bool  # False when the documents carry no stream sequence to check against
    samples: dict[str, list[str]]
    ok: bool


def verify(sent: Mapping[str, SentEvent], docs: Iterable[StoredEvent]) -> tuple[Verification, list[float]]:
    """Compare ``sent`` with ``docs``; also return the end-to-end latencies (seconds from sending
    to processing) of the accepted events that were stored."""
    docs = list(docs)
    counts = Counter(d.event_id for d in docs)
    stored_ids = set(counts)
    accepted = {i for i, e in sent.items() if e.accepted}
    missing = sorted(accepted - stored_ids)
    twice = sorted(i for i, n in counts.items() if n > 1)
    unexpected = sorted(stored_ids - set(sent))
    uncertain_stored = sum(1 for i in stored_ids if i in sent and not sent[i].accepted)

    by_patient: dict[str, list[StoredEvent]] = defaultdict(list)
    for d in docs:
        by_patient[d.patient_id].append(d)
    order_checked = all(d.stream_seq is not None for d in docs)
    bad_patients = sorted(p for p, ds in by_patient.items() if order_checked and not _in_order(ds))

    latencies = [
        d.processed_at - sent[d.event_id].sent_at
        for d in docs
        if d.processed_at is not None and d.event_id in accepted and not d.failed
    ]
    result = Verification(
        expected=len(accepted),
        stored=len(docs),
        missing=len(missing),
        stored_twice=len(twice),
        unexpected=len(unexpected),
        out_of_order=len(bad_patients),
        failed=sum(d.failed for d in docs),
        uncertain_stored=uncertain_stored,
        order_checked=order_checked,
        samples={
            "missing": missing[:_SAMPLE],
            "stored_twice": twice[:_SAMPLE],
            "unexpected": unexpected[:_SAMPLE],
            "out_of_order_patients": bad_patients[:_SAMPLE],
        },
        ok=not (missing or twice or unexpected or bad_patients),
    )
    return result, latencies


def _in_order(docs: list[StoredEvent]) -> bool:
    """A patient's documents, in stream order, must carry strictly increasing sending numbers
    (ingest kept the order) and non-decreasing processing times (the processor applied them in
    that order; equal times are possible at millisecond resolution), and no event's handler may
    have started before the previous event's finished (one after another, never overlapping)."""
    ordered = sorted(docs, key=lambda d: d.stream_seq or 0)
    streams = [d.stream_seq for d in ordered]
    if len(set(streams)) != len(streams):
        return False
    seqs = [d.seq for d in ordered if d.seq is not None]
    if len(seqs) != len(ordered) or any(a >= b for a, b in itertools.pairwise(seqs)):
        return False
    times = [d.processed_at for d in ordered if d.processed_at is not None]
    if not all(a <= b for a, b in itertools.pairwise(times)):
        return False
    return all(
        b.started_at >= a.processed_at
        for a, b in itertools.pairwise(ordered)
        if a.processed_at is not None and b.started_at is not None
    )
