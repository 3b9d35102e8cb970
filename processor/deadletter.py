"""Dead letters: events that failed permanently, kept in stream ``EVENTS_DLQ`` as
``deadletter.<patient token>`` with the original payload, the error and the original sequence,
for inspection (``medevents dlq list``) and re-processing (``medevents dlq replay``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pymongo.asynchronous.database import AsyncDatabase

from medevents import store, topology
from medevents.store import Document
from medevents.subjects import ingest_subject, patient_id, patient_token

__all__ = [
    "EVENT_ID_HEADER",
    "DeadLetter",
    "dead_letter_headers",
    "event_id_of",
    "list_dead_letters",
    "replay_dead_letters",
]

EVENT_ID_HEADER = "Medevents-Event-Id"  # the event id when Nats-Msg-Id cannot be it (replays)
_ERROR = "Medevents-Error"
_SEQUENCE = "Medevents-Sequence"
_PARTITION = "Medevents-Partition"
_ATTEMPTS = "Medevents-Attempts"
_FAILED_AT = "Medevents-Failed-At"
_MAX_HEADER = 1000  # characters of an error message kept in a header


class DeadLetter(msgspec.Struct, frozen=True):
    """One dead letter as ``medevents dlq list`` shows it."""

    dlq_sequence: int  # sequence in EVENTS_DLQ (what replay removes)
    event_id: str
    patient_id: str
    sequence: int  # the event's original sequence in EVENTS
    partition: int
    attempts: int
    error: str
    failed_at: str


def event_id_of(headers: Mapping[str, str] | None, sequence: int) -> str:
    """The event id a delivered message carries (a replay's in its own header)."""
    headers = headers or {}
    return headers.get(EVENT_ID_HEADER) or headers.get("Nats-Msg-Id") or f"seq-{sequence}"


def _header_safe(text: str) -> str:
    return " ".join(text.split())[:_MAX_HEADER]


def dead_letter_headers(
    event_id: str, *, error: str, sequence: int, partition: int, attempts: int
) -> dict[str, str]:
    """Headers of a dead letter. Its ``Nats-Msg-Id`` is derived from the original sequence, so a
    retried publish (a crash after publishing, before acknowledging) is stored once."""
    return {
        "Nats-Msg-Id": f"dlq-{sequence}",
        EVENT_ID_HEADER: event_id,
        _ERROR: _header_safe(error),
        _SEQUENCE: str(sequence),
        _PARTITION: str(partition),
        _ATTEMPTS: str(attempts),
        _FAILED_AT: dt.datetime.now(dt.UTC).isoformat(),
    }


def _letter(dlq_sequence: int, subject: str, headers: Mapping[str, str]) -> DeadLetter:
    return DeadLetter(
        dlq_sequence=dlq_sequence,
        event_id=headers.get(EVENT_ID_HEADER, ""),
        patient_id=patient_id(subject.split(".", 1)[1]),
        sequence=int(headers.get(_SEQUENCE, "0")),
        partition=int(headers.get(_PARTITION, "0")),
        attempts=int(headers.get(_ATTEMPTS, "0")),
        error=headers.get(_ERROR, ""),
        failed_at=headers.get(_FAILED_AT, ""),
    )


async def _letters(js: JetStreamContext) -> list[tuple[DeadLetter, bytes]]:
    info = await js.stream_info(topology.DLQ_STREAM)
    out: list[tuple[DeadLetter, bytes]] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(topology.DLQ_STREAM, seq)
        except NotFoundError:  # deleted (replayed)
            continue
        out.append((_letter(seq, msg.subject or "", msg.headers or {}), msg.data or b""))
    return out


async def list_dead_letters(js: JetStreamContext) -> list[DeadLetter]:
    """Every dead letter still in the stream, oldest first."""
    return [letter for letter, _ in await _letters(js)]


async def replay_dead_letters(
    js: JetStreamContext,
    db: AsyncDatabase[Document],
    *,
    patient: str | None = None,
    event_id: str | None = None,
) -> list[DeadLetter]:
    """Process dead letters again: for each (matching) one, remove its ``failed`` document, publish
    the original payload to ``events.<token>`` as a new event with the same id (appended: it runs
    after the patient's newer events), then delete the dead letter. A crash in between leaves
    the dead letter in place; running replay again finishes the job."""
    replayed = []
    events = store.processed_events(db)
    for letter, payload in await _letters(js):
        if patient is not None and letter.patient_id != patient:
            continue
        if event_id is not None and letter.event_id != event_id:
            continue
        await events.delete_one({"eventId": letter.event_id, "result.status": "failed"})
        headers = {"Nats-Msg-Id": f"replay-{letter.dlq_sequence}", EVENT_ID_HEADER: letter.event_id}
        await js.publish(ingest_subject(patient_token(letter.patient_id)), payload, headers=headers)
        await js.delete_msg(topology.DLQ_STREAM, letter.dlq_sequence)
        replayed.append(letter)
    return replayed
