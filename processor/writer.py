"""The fence's store side: batched watermark reads and batched apply (insert + compare-and-set).

Applying an event = insert its document (unique ``eventId``; a duplicate means it is already
stored) and then move the patient's watermark from the value the fence read to the event's
sequence with a compare-and-set. The insert comes first: a crash between the two leaves the event
stored and the watermark behind, and the redelivery finds the document, re-applies nothing and
only moves the watermark. Both steps are batched across patients (``insert_many`` unordered plus
one ``bulk_write`` of conditional updates), which the embedded store needs for throughput.

Durability: the event is acknowledged to JetStream, which deletes it, after :meth:`EventStore.apply`
returns, so the document insert uses the client's write concern, journaled by default
(``medevents/store.py``). The watermark compare-and-set keeps ``w`` but not ``j``: it need not be
durable before the ack. Lost in a crash of the database, it leaves the watermark behind events
whose documents are stored and which are gone from the stream; the fence looks for the first event
*still in the stream* after the watermark, which is then the right next one, and a redelivered
event finds its document and only moves the watermark. On MongoDB ``w: "majority"`` journals the
update anyway; SecantusDB syncs its log once per update *statement* when asked for ``j`` (one
fsync per event), and without it the update is made durable by the next batch's journaled insert.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from medevents import store
from medevents.store import Document

from ._batching import Batcher

__all__ = ["ApplyOutcome", "ApplyResult", "EventStore", "WriteRequest"]

DUPLICATE_KEY = 11000


class ApplyOutcome(enum.Enum):
    APPLIED = "applied"  # the watermark is now at the event (this write or a racing one)
    ALREADY = "already"  # the watermark is past the event: someone else applied it
    LOST = "lost"  # the watermark moved, but not to the event: fence again with ``watermark``
    REJECTED = "rejected"  # the store refused the document itself (not a duplicate)


@dataclass(frozen=True)
class ApplyResult:
    outcome: ApplyOutcome
    watermark: int  # the patient's watermark as last seen
    duplicate: bool = False  # the document was already stored (a redelivery or a repeated id)
    detail: str = ""  # why the store rejected the document


@dataclass(frozen=True)
class WriteRequest:
    document: dict[str, Any]
    token: str  # patient token: the watermark's _id
    expected: int  # watermark the fence decided on (0 = none yet)
    sequence: int  # the event's stream sequence: the new watermark


class EventStore:
    """Batched access to ``processed_events`` and ``patient_watermarks``."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        max_batch: int,
        write_window_s: float,
        read_window_s: float,
        on_write_batch: Any = None,
    ) -> None:
        self._events = store.processed_events(db)
        unjournaled = {k: v for k, v in db.write_concern.document.items() if k != "j"}
        self._watermarks = store.watermarks(db).with_options(write_concern=WriteConcern(**unjournaled))
        self._reads: Batcher[str, int] = Batcher(
            self._read_many, name="read watermarks", max_batch=max_batch, window_s=read_window_s, flushers=2
        )
        self._writes: Batcher[WriteRequest, ApplyResult] = Batcher(
            self._apply_many,
            name="write events",
            max_batch=max_batch,
            window_s=write_window_s,
            flushers=2,
            on_batch=on_write_batch,
        )

    async def watermark(self, token: str) -> int:
        """The patient's last applied sequence, 0 when none (batched with other patients)."""
        return await self._reads.submit(token)

    async def apply(self, request: WriteRequest) -> ApplyResult:
        """Store the document and move the watermark (batched with other patients)."""
        return await self._writes.submit(request)

    async def close(self) -> None:
        await self._reads.close()
        await self._writes.close()

    async def _read_many(self, tokens: Sequence[str]) -> list[int]:
        found = await self._fetch_watermarks(set(tokens))
        return [found.get(token, 0) for token in tokens]

    async def _fetch_watermarks(self, tokens: set[str]) -> dict[str, int]:
        cursor = self._watermarks.find({"_id": {"$in": list(tokens)}}, {"seq": 1})
        return {doc["_id"]: int(doc["seq"]) async for doc in cursor}

    async def _move_watermarks(self, requests: list[WriteRequest], now: dt.datetime) -> int:
        """Compare-and-set every request's watermark; how many won (which ones is not reported).

        A patient's first watermark (expected 0: none yet) is inserted, the others are conditional
        updates. An insert wins exactly when no watermark exists, as the upsert of ``{_id, seq: 0}``
        would, but the embedded store runs a batch of inserts as one journaled write and each update
        as one of its own (55 us against 620 us an event, measured).
        """
        won = 0
        first = [r for r in requests if r.expected == 0]
        later = [r for r in requests if r.expected != 0]
        if first:
            docs = [{"_id": r.token, "seq": r.sequence, "updatedAt": now} for r in first]
            try:
                won += len((await self._watermarks.insert_many(docs, ordered=False)).inserted_ids)
            except BulkWriteError as exc:  # an existing watermark: a lost compare-and-set
                _only_duplicates(exc)
                won += int(exc.details.get("nInserted", 0))
        if later:
            ops = [
                UpdateOne(
                    {"_id": r.token, "seq": r.expected}, {"$set": {"seq": r.sequence, "updatedAt": now}}
                )
                for r in later
            ]
            try:
                won += (await self._watermarks.bulk_write(ops, ordered=False)).matched_count
            except BulkWriteError as exc:  # a lost update is only a lower nMatched
                _only_duplicates(exc)
                won += int(exc.details.get("nMatched", 0))
        return won

    async def _apply_many(self, requests: Sequence[WriteRequest]) -> list[ApplyResult]:
        duplicate: set[int] = set()
        rejected: dict[int, str] = {}
        try:
            await self._events.insert_many([r.document for r in requests], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                if error.get("code") == DUPLICATE_KEY:
                    duplicate.add(error["index"])
                else:
                    rejected[error["index"]] = f"{error.get('code')}: {error.get('errmsg', '')}"[:500]
        now = dt.datetime.now(dt.UTC)
        updates = [(i, r) for i, r in enumerate(requests) if i not in rejected]
        won = await self._move_watermarks([r for _, r in updates], now) if updates else 0
        results: list[ApplyResult] = [
            ApplyResult(ApplyOutcome.REJECTED, r.expected, detail=rejected[i]) if i in rejected
            else ApplyResult(ApplyOutcome.APPLIED, r.sequence, duplicate=i in duplicate)
            for i, r in enumerate(requests)
        ]  # fmt: skip
        if won < len(updates):
            # Some compare-and-sets lost; which ones is not reported: read the watermarks back.
            current = await self._fetch_watermarks({r.token for _, r in updates})
            for i, r in updates:
                now_at = current.get(r.token, 0)
                outcome = (
                    ApplyOutcome.APPLIED
                    if now_at == r.sequence
                    else ApplyOutcome.ALREADY
                    if now_at > r.sequence
                    else ApplyOutcome.LOST
                )
                results[i] = ApplyResult(outcome, now_at, duplicate=i in duplicate)
        return results


def _only_duplicates(exc: BulkWriteError) -> None:
    """Re-raise unless every write error is a duplicate key (a lost compare-and-set)."""
    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
        raise exc
