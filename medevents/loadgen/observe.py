"""Watching the system while load runs: processed events, stream lag and processor count (NATS),
and reading back a run's documents for verification (MongoDB).

Processed events are counted from the stream when NATS is known: with work-queue retention an event
leaves stream EVENTS only when a processor acknowledges it, after its document is durably stored,
so the events gone from the stream since the start are the events stored since the start. Counting
documents in MongoDB instead is a full scan on the embedded store (``estimated_document_count``
took 161 ms at 20,000 documents, measured), which a sample every second turned into a good part of
a core taken from the store being measured. Without NATS, MongoDB's count is used."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import pymongo.errors
from nats.aio.client import Client as NATS

from medevents import store, topology
from medevents.config import MongoSettings, NatsSettings
from medevents.natsconn import connect

from .verify import StoredEvent

__all__ = ["FIELDS", "Observer", "Sample"]

# Field names of a processed_events document that verification reads (the processor's schema).
FIELDS = {
    "event_id": "eventId",
    "patient_id": "patientId",
    "seq": "data.seq",
    "stream_seq": "sequence",
    "started_at": "startedAt",
    "processed_at": "processedAt",
    "status": "result.status",
}
_PATIENTS_PER_QUERY = 200


class Sample(msgspec.Struct):
    """One observation: seconds since the run started and what the system showed then."""

    t: float
    sent: int
    accepted: int
    processed: int | None  # documents stored since the run started
    lag: int | None  # events in the stream not yet processed (work-queue retention)
    processors: int | None  # processor pods holding a membership key


class Observer:
    """Optional connections to MongoDB and NATS; each part is ``None`` when not configured."""

    def __init__(self, nats_url: str | None, mongo_uri: str | None, mongo_db: str = "") -> None:
        self._nats_url = nats_url
        self._mongo_settings = MongoSettings(uri=mongo_uri, db=mongo_db) if mongo_uri else None
        self._nc: NATS | None = None
        self._mongo: Any = None
        self._baseline = 0
        self._stream0: tuple[int, int] | None = None  # (last sequence, messages) at the start

    @property
    def can_verify(self) -> bool:
        return self._mongo is not None

    async def start(self) -> None:
        if self._nats_url:
            self._nc = await connect(NatsSettings(url=self._nats_url), "medevents-loadgen")
            self._stream0 = await self._stream_state() or (0, 0)
        if self._mongo_settings is not None:
            self._mongo = store.mongo_client(self._mongo_settings, "medevents-loadgen")
            self._baseline = await self._collection().estimated_document_count()

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        if self._mongo is not None:
            await self._mongo.close()

    def _collection(self) -> Any:
        assert self._mongo_settings is not None
        return store.processed_events(store.database(self._mongo, self._mongo_settings))

    async def _stream_state(self) -> tuple[int, int] | None:
        """Stream EVENTS' last sequence and message count; None when it cannot be read."""
        if self._nc is None:
            return None
        try:
            info = await self._nc.jetstream().stream_info(topology.STREAM)
        except nats.js.errors.NotFoundError:
            return (0, 0)
        except (nats.errors.Error, TimeoutError):
            return None
        return int(info.state.last_seq), int(info.state.messages)

    def _gone(self, state: tuple[int, int] | None) -> int | None:
        """Events that left the stream since the start: stored (see the module docstring)."""
        if state is None or self._stream0 is None:
            return None
        (last0, messages0), (last, messages) = self._stream0, state
        return (last - last0) - (messages - messages0)

    async def processed(self) -> int | None:
        """Events stored since :meth:`start` (the run's, when nothing else publishes or writes):
        from the stream when NATS is known, else MongoDB's document count."""
        if self._nc is not None:
            return self._gone(await self._stream_state())
        return await self.stored()

    async def stored(self) -> int | None:
        """Documents stored since :meth:`start`, counted by MongoDB (a scan on the embedded store:
        for the end of a run, not for every sample)."""
        if self._mongo is None:
            return None
        try:
            return int(await self._collection().estimated_document_count()) - self._baseline
        except pymongo.errors.PyMongoError:
            return None

    async def lag(self) -> int | None:
        state = await self._stream_state()
        return None if state is None else state[1]

    async def processors(self) -> int | None:
        if self._nc is None:
            return None
        try:
            kv = await self._nc.jetstream().key_value(topology.MEMBERS_BUCKET)
        except (nats.js.errors.BucketNotFoundError, nats.errors.Error, TimeoutError):
            return None
        try:
            return len(await kv.keys())
        except nats.js.errors.NoKeysError:
            return 0
        except (nats.errors.Error, TimeoutError):
            return None

    async def sample(self, t: float, sent: int, accepted: int) -> Sample:
        if self._nc is None:
            return Sample(t, sent, accepted, await self.processed(), None, None)
        state = await self._stream_state()
        lag = None if state is None else state[1]
        return Sample(t, sent, accepted, self._gone(state), lag, await self.processors())

    async def documents(self, patient_ids: list[str]) -> list[StoredEvent]:
        """Every processed_events document of these patients."""
        projection = dict.fromkeys(FIELDS.values(), 1) | {"_id": 0}
        out: list[StoredEvent] = []
        for start in range(0, len(patient_ids), _PATIENTS_PER_QUERY):
            chunk = patient_ids[start : start + _PATIENTS_PER_QUERY]
            cursor = self._collection().find({FIELDS["patient_id"]: {"$in": chunk}}, projection)
            async for doc in cursor:
                out.append(_stored(doc))
        return out


def _get(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _stored(doc: dict[str, Any]) -> StoredEvent:
    processed_at, started_at = _get(doc, FIELDS["processed_at"]), _get(doc, FIELDS["started_at"])
    seq, stream_seq = _get(doc, FIELDS["seq"]), _get(doc, FIELDS["stream_seq"])
    return StoredEvent(
        event_id=str(_get(doc, FIELDS["event_id"])),
        patient_id=str(_get(doc, FIELDS["patient_id"])),
        seq=seq if isinstance(seq, int) else None,
        stream_seq=stream_seq if isinstance(stream_seq, int) else None,
        processed_at=processed_at.timestamp() if isinstance(processed_at, dt.datetime) else None,
        started_at=started_at.timestamp() if isinstance(started_at, dt.datetime) else None,
        failed=_get(doc, FIELDS["status"]) == "failed",
    )
