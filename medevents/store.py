"""MongoDB: the client, the collections and their indexes (the old demo's, created at start-up)."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from medevents.config import MongoSettings

__all__ = [
    "PROCESSED_EVENTS",
    "WATERMARKS",
    "Document",
    "ensure_indexes",
    "mongo_client",
    "processed_events",
    "watermarks",
]

PROCESSED_EVENTS = "processed_events"  # one document per event, the old demo's shape
WATERMARKS = "patient_watermarks"  # per patient: stream sequence of the last applied event

Document = dict[str, Any]

PROCESSED_EVENTS_INDEXES = [
    IndexModel([("eventId", ASCENDING)], unique=True, name="eventId_unique"),
    IndexModel([("patientId", ASCENDING)], name="patientId"),
    IndexModel([("patientId", ASCENDING), ("ts", ASCENDING)], name="patientId_ts"),
]


def mongo_client(settings: MongoSettings, name: str) -> AsyncMongoClient[Document]:
    return AsyncMongoClient(
        settings.uri,
        appname=name,
        tz_aware=True,
        serverSelectionTimeoutMS=settings.timeout_ms,
        connectTimeoutMS=settings.timeout_ms,
        socketTimeoutMS=max(settings.timeout_ms, 30_000),
    )


def database(client: AsyncMongoClient[Document], settings: MongoSettings) -> AsyncDatabase[Document]:
    return client[settings.database]


def processed_events(db: AsyncDatabase[Document]) -> AsyncCollection[Document]:
    return db[PROCESSED_EVENTS]


def watermarks(db: AsyncDatabase[Document]) -> AsyncCollection[Document]:
    return db[WATERMARKS]


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Idempotent: creating an index that exists with the same definition is a no-op."""
    await processed_events(db).create_indexes(PROCESSED_EVENTS_INDEXES)
