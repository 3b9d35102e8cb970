"""The load generator's pure parts: event bodies, the plan, percentiles and verification."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medevents.ids import derive_event_id
from medevents.loadgen import SentEvent, StoredEvent, verify
from medevents.loadgen.events import EventFactory, event_id_of
from medevents.loadgen.plan import owned_patients, slot_due
from medevents.loadgen.plot import _rates, plot
from medevents.loadgen.stats import percentile, summarize
from medevents.model import decode_event

# -- events -------------------------------------------------------------------------------------


@given(st.integers(0, 2000), st.integers(1, 50))
def test_bodies_are_valid_events_near_the_requested_size(size: int, patients: int) -> None:
    factory = EventFactory("r1", patients, size)
    for patient, seq in ((0, 0), (patients - 1, 999)):
        body = factory.body(patient, seq)
        event = decode_event(body)  # the ingest's own decoder accepts it
        assert event.patientId == f"lg-r1-{patient}"
        assert event.data["seq"] == seq
        if size > 200:
            assert abs(len(body) - size) <= 8


def test_bodies_are_unique_and_ids_match_what_ingest_derives() -> None:
    factory = EventFactory("r2", 3)
    bodies = {factory.body(p, s) for p in range(3) for s in range(100)}
    assert len(bodies) == 300
    ids = {event_id_of(b) for b in bodies}
    assert len(ids) == 300
    body = factory.body(1, 7)
    assert event_id_of(body) == derive_event_id(decode_event(body))


def test_run_ids_keep_runs_apart() -> None:
    assert EventFactory("a", 1).body(0, 0) != EventFactory("b", 1).body(0, 0)


# -- plan ---------------------------------------------------------------------------------------


@given(st.integers(1, 300), st.data())
def test_every_patient_has_exactly_one_worker(patients: int, data: st.DataObject) -> None:
    workers = data.draw(st.integers(1, patients))
    owned = [owned_patients(w, workers, patients) for w in range(workers)]
    flat = sorted(itertools.chain.from_iterable(owned))
    assert flat == list(range(patients))
    assert all(owned)  # no worker without patients


def test_more_workers_than_patients_is_refused() -> None:
    with pytest.raises(ValueError, match="patients"):
        owned_patients(0, 5, 4)


@given(st.integers(0, 10**6), st.floats(0.1, 1e6))
def test_slots_are_evenly_spaced(slot: int, rate: float) -> None:
    assert slot_due(slot, None, 10.0) == 10.0
    assert math.isclose(slot_due(slot, rate, 10.0), 10.0 + slot / rate)
    assert slot_due(slot + 1, rate, 10.0) > slot_due(slot, rate, 10.0)


# -- stats --------------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1), st.floats(0, 100))
def test_percentile_is_a_measured_value_and_monotone(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert percentile(ordered, 0) <= p <= percentile(ordered, 100) == ordered[-1]
    assert percentile(ordered, min(100.0, q + 1)) >= p


def test_nearest_rank_examples_and_summary_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile(values, 50) == 0.05
    assert percentile(values, 99) == 0.099
    assert percentile(values, 99.9) == 0.1
    summary = summarize(values)
    assert summary["count"] == 100
    assert summary["p50_ms"] == 50.0
    assert summary["p99_9_ms"] == 100.0
    assert summarize([])["p99_ms"] is None


# -- verification -------------------------------------------------------------------------------


def _history(patients: int, per_patient: int) -> tuple[dict[str, SentEvent], list[StoredEvent]]:
    """A correct run: patients interleaved in the stream, each patient's events in order."""
    sent: dict[str, SentEvent] = {}
    docs: list[StoredEvent] = []
    stream_seq = 0
    for seq in range(per_patient):
        for p in range(patients):
            stream_seq += 1
            event_id = f"e-{p}-{seq}"
            sent[event_id] = SentEvent(f"p{p}", seq, 1000.0 + stream_seq, True)
            docs.append(
                StoredEvent(
                    event_id, f"p{p}", seq, stream_seq, 2000.0 + stream_seq, started_at=1999.5 + stream_seq
                )
            )
    return sent, docs


@given(st.integers(1, 8), st.integers(1, 8), st.randoms(use_true_random=False))
def test_a_correct_run_verifies_in_any_document_order(patients: int, per: int, rnd: object) -> None:
    sent, docs = _history(patients, per)
    rnd.shuffle(docs)  # type: ignore[attr-defined]
    result, latencies = verify(sent, docs)
    assert result.ok
    assert (result.expected, result.stored, result.missing) == (patients * per, patients * per, 0)
    assert result.order_checked
    assert len(latencies) == patients * per
    assert all(lat == 1000.0 for lat in latencies)


@given(st.integers(2, 6), st.integers(2, 6), st.data())
def test_swapping_two_events_of_a_patient_is_caught(patients: int, per: int, data: st.DataObject) -> None:
    sent, docs = _history(patients, per)
    patient = data.draw(st.integers(0, patients - 1))
    mine = [i for i, d in enumerate(docs) if d.patient_id == f"p{patient}"]
    a, b = sorted(data.draw(st.lists(st.sampled_from(mine), min_size=2, max_size=2, unique=True)))
    which = data.draw(st.sampled_from(["processed_at", "seq"]))
    # Applied in the wrong order (processing times swapped), or stored in the wrong stream order.
    x, y = docs[a], docs[b]
    docs[a] = msgspec.structs.replace(x, **{which: getattr(y, which)})
    docs[b] = msgspec.structs.replace(y, **{which: getattr(x, which)})
    result, _ = verify(sent, docs)
    assert not result.ok
    assert result.out_of_order == 1
    assert result.samples["out_of_order_patients"] == [f"p{patient}"]


def test_missing_twice_and_unexpected_are_each_caught() -> None:
    sent, docs = _history(2, 3)
    result, _ = verify(sent, docs[1:])
    assert (result.ok, result.missing, result.samples["missing"]) == (False, 1, [docs[0].event_id])

    twice = [*docs, msgspec.structs.replace(docs[0], stream_seq=99, processed_at=9999.0)]
    result, _ = verify(sent, twice)
    assert (result.ok, result.stored_twice) == (False, 1)

    stranger = StoredEvent("nobody-sent-this", "p0", 50, 100, 5000.0)
    result, _ = verify(sent, [*docs, stranger])
    assert (result.ok, result.unexpected) == (False, 1)


def test_unanswered_events_may_be_stored_once_or_not_at_all() -> None:
    sent, docs = _history(1, 3)
    last = docs[-1].event_id
    sent[last] = msgspec.structs.replace(sent[last], accepted=False)
    stored, _ = verify(sent, docs)
    absent, _ = verify(sent, docs[:-1])
    assert stored.ok and absent.ok
    assert (stored.uncertain_stored, stored.expected) == (1, 2)


def test_without_stream_sequences_order_is_reported_unchecked() -> None:
    sent, docs = _history(1, 2)
    result, _ = verify(sent, [msgspec.structs.replace(d, stream_seq=None) for d in docs])
    assert result.ok
    assert not result.order_checked


def test_overlapping_handlers_of_one_patient_are_caught() -> None:
    sent, docs = _history(2, 3)
    # patient p0's second event started before its first finished (times still in order)
    first, second = docs[0], docs[2]
    assert (first.patient_id, second.patient_id) == ("p0", "p0")
    assert first.processed_at is not None
    docs[2] = msgspec.structs.replace(second, started_at=first.processed_at - 0.1)
    result, _ = verify(sent, docs)
    assert (result.ok, result.samples["out_of_order_patients"]) == (False, ["p0"])


def test_failed_events_count_but_give_no_latency() -> None:
    sent, docs = _history(1, 2)
    docs[1] = msgspec.structs.replace(docs[1], failed=True)
    result, latencies = verify(sent, docs)
    assert (result.ok, result.failed, len(latencies)) == (True, 1, 1)


# -- plot ---------------------------------------------------------------------------------------


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the optional `plot` extra is not installed")
    samples = [
        {
            "t": float(t),
            "sent": 100 * t,
            "accepted": 100 * t,
            "processed": 80 * t,
            "lag": 20 * t,
            "processors": 1 + t // 3,
        }
        for t in range(10)
    ]
    path = tmp_path / "run.png"
    plot({"run_id": "r", "samples": samples}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rates_come_from_consecutive_samples() -> None:
    samples: list[dict[str, Any]] = [
        {"t": 0.0, "n": 0},
        {"t": 2.0, "n": 100},
        {"t": 3.0, "n": None},
        {"t": 4.0, "n": 400},
    ]
    assert _rates(samples, "n") == ([2.0], [50.0])
