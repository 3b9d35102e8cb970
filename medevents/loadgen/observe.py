"""Watching the system while load runs: processed documents (MongoDB), stream lag and processor
count (NATS), and reading back a run's documents for verification."""

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

    @property
    def can_verify(self) -> bool:
        return self._mongo is not None

    async def start(self) -> None:
        if self._nats_url:
            self._nc = await connect(NatsSettings(url=self._nats_url), "medevents-loadgen")
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

    async def processed(self) -> int | None:
        """Documents stored since :meth:`start` (the run's, when nothing else writes)."""
        if self._mongo is None:
            return None
        try:
            return int(await self._collection().estimated_document_count()) - self._baseline
        except pymongo.errors.PyMongoError:
            return None

    async def lag(self) -> int | None:
        if self._nc is None:
            return None
        try:
            info = await self._nc.jetstream().stream_info(topology.STREAM)
        except (nats.errors.Error, TimeoutError):
            return None
        return int(info.state.messages)

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
        return Sample(t, sent, accepted, await self.processed(), await self.lag(), await self.processors())

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
