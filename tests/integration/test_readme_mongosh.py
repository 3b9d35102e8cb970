"""The README's mongosh examples run against the Mongo-wire server of the tests (SecantusDB, or the
MongoDB in ``MONGO_URI``) on documents of the processed-event shape, and the README's list of what
the embedded store does differently is still true."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

from medevents.config import MongoSettings
from medevents.store import PROCESSED_EVENTS_INDEXES

README = Path(__file__).resolve().parents[2] / "README.md"
_CALL = re.compile(r"db\.processed_events\.(\w+)\((.*?)\)((?:\.\w+\(.*?\))*)$", re.S)
_CHAINED = re.compile(r"\.(\w+)\((.*?)\)")


def mongosh_examples() -> list[str]:
    """The `db.processed_events...` statements of the README's mongosh block, one string each."""
    text = README.read_text()
    start = text.index("```js\n", text.index("## Looking at the data (mongosh)")) + len("```js\n")
    block = text[start : text.index("```", start)]
    statements: list[str] = []
    for line in block.splitlines():
        if line.startswith("db."):
            statements.append(line)
        elif statements and line.strip() and not line.lstrip().startswith(("//", "use ")):
            statements[-1] += "\n" + line
    return statements


def _date(obj: dict[str, Any]) -> Any:
    return dt.datetime.fromisoformat(obj["$isodate"]) if obj.keys() == {"$isodate"} else obj


def _js_to_python(args: str) -> list[Any]:
    """mongosh arguments (object literals with bare keys, ISODate) as Python values. Plain JSON,
    not extended JSON, which would read ``{"$regex": ...}`` as a regex literal."""
    text = re.sub(r'ISODate\("([^"]+)"\)', r'{"$isodate": "\1"}', args)
    text = re.sub(r"([{,]\s*)([A-Za-z_$][\w$]*)\s*:", r'\1"\2":', text)
    loaded: list[Any] = json.loads(f"[{text}]", object_hook=_date)
    return loaded


def run(db: Any, statement: str) -> list[Any]:
    match = _CALL.fullmatch(statement.strip())
    assert match, f"not a statement this test understands: {statement}"
    method, args, chain = match.groups()
    collection = db.processed_events
    if method == "aggregate":
        return list(collection.aggregate(*_js_to_python(args)))
    assert method == "find", method
    cursor = collection.find(*_js_to_python(args))
    for name, chained in _CHAINED.findall(chain):
        if name == "sort":
            cursor = cursor.sort(list(_js_to_python(chained)[0].items()))
        else:
            assert name == "pretty", name  # mongosh's formatting only
    return list(cursor)


def _doc(event_id: str, patient: str, minute: int, status: str = "success") -> dict[str, Any]:
    ts = dt.datetime(2025, 10, 1, 10, minute, tzinfo=dt.UTC)
    return {
        "eventId": event_id,
        "patientId": patient,
        "type": "vitals",
        "data": {"heartRate": 70 + minute},
        "ts": ts,
        "processedAt": ts,
        "result": {"status": status, "message": "Event processed successfully"},
    }


@pytest.fixture
def db(mongo_settings: MongoSettings) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_settings.uri)
    database = client[mongo_settings.database]
    database.processed_events.create_indexes(PROCESSED_EVENTS_INDEXES)  # as the processors make them
    database.processed_events.insert_many(
        [
            _doc("e-3", "patient-123", 30),
            _doc("e-1", "patient-123", 10),
            _doc("e-2", "patient-123", 20),
            _doc("e-4", "patient-456", 40, status="failed"),
            _doc("e-5", "other-789", 50),
        ]
    )
    yield database
    client.drop_database(mongo_settings.database)
    client.close()


def test_the_readme_mongosh_examples_answer_as_described(db: Any) -> None:
    statements = mongosh_examples()
    results = [run(db, s) for s in statements]
    assert len(statements) == 7, statements
    everything, duplicates, one_patient, prefix, failed, time_range, per_patient = results
    assert len(everything) == 5
    assert duplicates == []
    assert [d["eventId"] for d in one_patient] == ["e-1", "e-2", "e-3"]
    assert sorted(d["patientId"] for d in prefix) == ["patient-123"] * 3 + ["patient-456"]
    assert [d["eventId"] for d in failed] == ["e-4"]
    assert len(time_range) == 5
    assert per_patient[0] == {"_id": "patient-123", "events": 3}


def test_the_embedded_store_differences_in_the_readme_still_hold(db: Any) -> None:
    embedded = "secantusVersion" in db.client.admin.command("buildInfo")
    literal = list(db.processed_events.find({"patientId": re.compile("^patient")}))
    operator = list(db.processed_events.find({"patientId": {"$regex": "^patient"}}))
    assert len(operator) == 4
    assert len(literal) == (0 if embedded else 4), "README: a /regex/ literal on an indexed field"
    assert db.processed_events.count_documents({"patientId": {"$in": [re.compile("^p")]}}) == (
        0 if embedded else 4
    )
    unindexed = list(db.processed_events.find({"type": re.compile("^vit")}))
    assert len(unindexed) == 5, "README: on a field without an index the literal works"
    natural = db.processed_events.find({"patientId": re.compile("^patient")}).hint([("$natural", 1)])
    assert len(list(natural)) == 4, "README: .hint({$natural: 1}) is a way around it"
    if embedded:
        with pytest.raises(OperationFailure, match="text indexes are not supported"):
            db.scratch.create_index([("note", pymongo.TEXT)])
        with pytest.raises(OperationFailure, match="globalScriptEngine"):
            list(db.processed_events.find({"$where": "this.patientId.length > 3"}))
