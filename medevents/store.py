"""MongoDB: the client, the collections and their indexes (the old demo's, created at start-up).

Every write waits for the journal: the processor acknowledges an event to JetStream, which then
deletes it (work-queue retention), only after MongoDB has stored it, so "stored" must survive a
crash or a power failure of the database node. The default write concern is therefore
``w: "majority", j: true``: on a replica set the write is on the journal of a majority of members,
on a standalone ``mongod`` or the embedded one-node SecantusDB it is on the node's journal (both
accept ``majority``). A ``w=`` or ``journal=`` option in ``MONGO_URI`` replaces this default whole.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from medevents.config import MongoSettings

__all__ = [
    "PROCESSED_EVENTS",
    "TIMELINE_INDEX",
    "WATERMARKS",
    "Document",
    "default_write_concern",
    "ensure_indexes",
    "mongo_client",
    "processed_events",
    "watermarks",
]

PROCESSED_EVENTS = "processed_events"  # one document per event, the old demo's shape
WATERMARKS = "patient_watermarks"  # per patient: stream sequence of the last applied event

Document = dict[str, Any]

TIMELINE_INDEX = "patientId_sequence"  # a patient's events in processing order (stream sequence)

# ``patientId_sequence`` answers every query on ``patientId`` alone too (its prefix): it replaced
# the old demo's single-field ``patientId`` index rather than joining it, because each index costs
# every insert (on the embedded store one more index cost 15% more CPU over 10,000 inserts).
PROCESSED_EVENTS_INDEXES = [
    IndexModel([("eventId", ASCENDING)], unique=True, name="eventId_unique"),
    IndexModel([("patientId", ASCENDING), ("sequence", ASCENDING)], name=TIMELINE_INDEX),
    IndexModel([("patientId", ASCENDING), ("ts", ASCENDING)], name="patientId_ts"),
]
SUPERSEDED_INDEXES = ("patientId",)  # created by earlier versions; dropped at start-up
_INDEX_NOT_FOUND = 27


_WRITE_CONCERN_OPTIONS = ("w", "journal")


def default_write_concern(uri: str) -> dict[str, Any]:
    """The write concern to add to ``uri``: journaled, majority; nothing when the URI sets its own
    (``w=`` or ``journal=``; URI options are case-insensitive). Keyword options would override the
    URI's, hence the check."""
    named = {key.lower() for key, _ in parse_qsl(urlsplit(uri).query, keep_blank_values=True)}
    if named & set(_WRITE_CONCERN_OPTIONS):
        return {}
    return {"w": "majority", "journal": True}


def mongo_client(settings: MongoSettings, name: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.uri,
        appname=name,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.timeout_ms,
        connectTimeoutMS=settings.timeout_ms,
        socketTimeoutMS=max(settings.timeout_ms, 30_000),
        **default_write_concern(settings.uri),
    )


def database(client: AsyncMongoClient[Document], settings: MongoSettings) -> AsyncDatabase[Document]:
    return client[settings.database]


def processed_events(db: AsyncDatabase[Document]) -> AsyncCollection[Document]:
    return db[PROCESSED_EVENTS]


def watermarks(db: AsyncDatabase[Document]) -> AsyncCollection[Document]:
    return db[WATERMARKS]


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Idempotent: creating an index that exists with the same definition is a no-op, and a
    superseded index is dropped once (processes starting together may race to drop it)."""
    collection = processed_events(db)
    await collection.create_indexes(PROCESSED_EVENTS_INDEXES)
    existing = await collection.index_information()
    for name in SUPERSEDED_INDEXES:
        if name in existing:
            try:
                await collection.drop_index(name)
            except OperationFailure as exc:
                if exc.code != _INDEX_NOT_FOUND:
                    raise
