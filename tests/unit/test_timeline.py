"""The timeline's pure parts: patient ids in paths (any allowed character survives the trip),
query parameters (every bad one named), next links, and terminal-safe output."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medevents.ingest.patients import (
    MAX_AFTER,
    BadParameter,
    PatientPath,
    TimelineQuery,
    parse_patient_path,
    parse_timeline_query,
)
from medevents.model import PatientId
from medevents.timeline import DEFAULT_LIMIT, MAX_LIMIT, patient_path, render_event

AWKWARD = [
    "patient-456",
    "2.16.840.1.113883",
    "a/b",
    "/",
    "a%2Fb",
    "%",
    "with space",
    "*",
    ">",
    "a?b#c&d=e",
    "+plus+",
    "Zoë Müller",
    "患者",
    "🙂",
    ".",
    "..",
    "...",
    "events",
    "patients",
    "~tilde",
]


def _valid(pid: str) -> bool:
    try:
        msgspec.convert(pid, PatientId)
    except msgspec.ValidationError:
        return False
    return True


patient_ids = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), min_size=1, max_size=256
).filter(_valid)


@given(patient_ids, st.sampled_from(["", "/api", "/patients"]))
def test_any_valid_patient_id_survives_the_path(pid: str, root: str) -> None:
    path = patient_path(pid)
    assert path.count("/") == 2 and path.isascii()
    assert parse_patient_path((root + path).encode()) == PatientPath(pid, events=False)
    assert parse_patient_path((root + path + "/events").encode()) == PatientPath(pid, events=True)


@pytest.mark.parametrize("pid", AWKWARD)
def test_awkward_ids(pid: str) -> None:
    segment = patient_path(pid).removeprefix("/patients/")
    assert segment not in (".", "..") and "/" not in segment
    assert parse_patient_path(f"/patients/{segment}/events".encode()) == PatientPath(pid, events=True)


def test_dot_segments_sent_as_they_are_still_name_the_patient() -> None:
    # A client that does not remove dot segments (requests) sends them literally.
    assert parse_patient_path(b"/patients/./events") == PatientPath(".", events=True)
    assert parse_patient_path(b"/patients/..") == PatientPath("..", events=False)


@pytest.mark.parametrize("path", [b"/patients", b"/patients/a/b", b"/patients/a/events/x", b"/patients/a/"])
def test_other_paths_are_not_patient_routes(path: bytes) -> None:
    assert parse_patient_path(path) is None


@pytest.mark.parametrize("segment", [b"", b"%FF", b"a%0Ab", b"%E2%80%AE", b"x" * 257, b"%00"])
def test_invalid_patient_ids_are_named(segment: bytes) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_patient_path(b"/patients/" + segment + b"/events")
    assert caught.value.name == "patientId"


def test_query_defaults() -> None:
    assert parse_timeline_query([]) == TimelineQuery(after=0, limit=DEFAULT_LIMIT)


def test_query_values() -> None:
    query = parse_timeline_query(
        [
            ("after", "42"),
            ("limit", str(MAX_LIMIT)),
            ("type", "lab results"),
            ("since", "2025-10-01T10:00:00+02:00"),
            ("until", "2025-10-01T10:00:00Z"),
        ]
    )
    assert query.after == 42 and query.limit == MAX_LIMIT and query.type == "lab results"
    assert query.since == dt.datetime(2025, 10, 1, 8, tzinfo=dt.UTC)
    assert query.filtered


@pytest.mark.parametrize(
    ("items", "name"),
    [
        ([("after", "-1")], "after"),
        ([("after", "1.5")], "after"),
        ([("after", " 1")], "after"),
        ([("after", "1_000")], "after"),
        ([("after", str(MAX_AFTER + 1))], "after"),
        ([("limit", "0")], "limit"),
        ([("limit", str(MAX_LIMIT + 1))], "limit"),
        ([("limit", "")], "limit"),
        ([("type", "")], "type"),
        ([("type", "x" * 65)], "type"),
        ([("type", "a\u202eb")], "type"),
        ([("since", "2025-10-01")], "since"),
        ([("since", "2025-10-01T10:00:00")], "since"),  # no offset
        ([("until", "yesterday")], "until"),
        ([("sinec", "2025-10-01T00:00:00Z")], "sinec"),
        ([("type", "a"), ("type", "b")], "type"),
    ],
)
def test_bad_parameters_are_named(items: list[tuple[str, str]], name: str) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_timeline_query(items)
    assert caught.value.name == name


def test_a_plus_decoded_as_space_gets_a_hint() -> None:
    with pytest.raises(BadParameter) as caught:
        parse_timeline_query([("since", "2025-10-01T10:00:00 02:00")])
    assert "%2B" in caught.value.detail


def test_filters_are_half_open_on_ts() -> None:
    t = dt.datetime(2025, 10, 1, 10, tzinfo=dt.UTC)
    query = TimelineQuery(since=t, until=t + dt.timedelta(minutes=5), type="vitals")
    doc = {"type": "vitals", "ts": t}
    assert query.matches(doc)
    assert not query.matches({**doc, "ts": t + dt.timedelta(minutes=5)})
    assert not query.matches({**doc, "ts": t - dt.timedelta(milliseconds=1)})
    assert not query.matches({**doc, "type": "labs"})
    assert not query.matches({**doc, "ts": None})  # an undecodable payload has no time
    assert TimelineQuery().matches({"type": None, "ts": None})


@given(
    patient_ids,
    st.integers(0, MAX_AFTER),
    st.integers(1, MAX_LIMIT),
    st.none()
    | st.text(st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp")), min_size=1, max_size=64),
    st.none() | st.datetimes(timezones=st.just(dt.timezone(dt.timedelta(hours=2)))),
)
def test_next_links_carry_the_query(
    pid: str, after: int, limit: int, kind: str | None, since: dt.datetime | None
) -> None:
    query = TimelineQuery(limit=limit, type=kind, since=since)
    link = urlsplit(query.link(pid, after))
    assert parse_patient_path(link.path.encode()) == PatientPath(pid, events=True)
    again = parse_timeline_query(parse_qsl(link.query, keep_blank_values=True))
    assert again == TimelineQuery(after=after, limit=limit, type=kind, since=since)


EVENT = {
    "status": "processed",
    "eventId": "e-1",
    "patientId": "p",
    "type": "vitals",
    "data": {"note": "x"},
    "ts": "2025-10-01T10:00:00Z",
    "sequence": 7,
    "result": {"status": "success", "message": "ok"},
}


@given(st.text())
def test_rendered_lines_hold_no_terminal_controls_and_json_keeps_the_value(text: str) -> None:
    event = {**EVENT, "data": {text: text}}
    for as_json in (False, True):
        line = render_event(event, as_json=as_json)
        assert not any(c in line for c in "\x1b\x9b\r\n\u202e\u200b\u2028")
    assert json.loads(render_event(event, as_json=True)) == event


def test_failed_events_show_why() -> None:
    line = render_event({**EVENT, "status": "failed", "result": {"status": "failed", "message": "bad"}})
    assert line.split()[:5] == ["7", "2025-10-01T10:00:00Z", "vitals", "failed", "e-1"] and line.endswith(
        "(bad)"
    )
