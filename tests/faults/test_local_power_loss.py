"""``medevents up`` with its whole data directory (JetStream and the embedded Mongo-wire store) on
the power-loss layer: events are posted, the power is cut part-way through processing (every
process frozen and killed at once, then everything not durable on the layer taken back), and the
system restarts on what was durably there. Every event that got a 202 must be stored exactly
once, each patient's events in the order they were accepted. The crash variant kills the same
processes without a power cut (the kernel keeps their unsynced writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from e2e.localup import LocalUp, descendants, wait_gone

from medevents.loadgen import SentEvent, Verification, verify
from medevents.loadgen.events import EventFactory, event_id_of
from medevents.loadgen.observe import Observer

from .powerloss import PowerLossDisk

ENV = {
    "MONGO_URI": "",  # the embedded store, on the layer, even when the test session has a mongod
    "PROCESSOR_DELAY_MIN_MS": "20",  # slow enough that a backlog waits in JetStream at the cut
    "PROCESSOR_DELAY_MAX_MS": "60",
    "MEDEVENTS_AUTOSCALE_MAX_PROCESSORS": "2",
    "LOG_LEVEL": "WARNING",
}


class Poster:
    """Posts each patient's events one after another (so their order is known), patients at
    once, and records what each answer means: 202 = accepted, anything else = uncertain."""

    def __init__(self, url: str, factory: EventFactory, per_patient: int) -> None:
        self.url = url
        self.factory = factory
        self.per_patient = per_patient
        self.sent: dict[str, SentEvent] = {}

    @property
    def accepted(self) -> int:
        return sum(e.accepted for e in self.sent.values())

    async def _patient(self, client: httpx.AsyncClient, patient: int) -> None:
        for seq in range(self.per_patient):
            body = self.factory.body(patient, seq)
            event_id = event_id_of(body)
            sent_at = time.time()
            try:
                response = await client.post(
                    "/events", content=body, headers={"Content-Type": "application/json"}
                )
                accepted = response.status_code == 202
            except httpx.TransportError:
                accepted = False
            self.sent[event_id] = SentEvent(self.factory.patient_id(patient), seq, sent_at, accepted)
            if not accepted:
                return  # the system is down (the cut): this patient's later events are not sent

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            await asyncio.gather(*(self._patient(client, p) for p in range(self.factory.patients)))


@contextlib.asynccontextmanager
async def watch(mongo_uri: str) -> AsyncIterator[Observer]:
    watching = Observer(None, mongo_uri)
    await watching.start()
    try:
        yield watching
    finally:
        await watching.close()


def kill_everything(up: LocalUp) -> None:
    """Every process of ``medevents up`` stopped at the same instant, then killed: nobody gets to
    shut down cleanly (the children would get SIGTERM from their dying parent otherwise)."""
    pids = {up.pid, *descendants(up.pid)}
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    up.wait(10)
    assert not wait_gone(pids, 15)


async def until_stored(watching: Observer, poster: Poster, timeout: float) -> Verification:
    """Verify until every accepted event is stored (or ``timeout``); the last verification."""
    patients = [poster.factory.patient_id(p) for p in range(poster.factory.patients)]
    deadline = time.monotonic() + timeout
    while True:
        result, _ = verify(poster.sent, await watching.documents(patients))
        if result.missing == 0 or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.5)


CUT_AT = (1 / 3, 2 / 3, 1 / 6, 1 / 2)  # share of a round's events processed when the power goes


async def crash_and_recover(
    power_disk: PowerLossDisk, *, patients: int, per_patient: int, cuts: int, power: bool
) -> None:
    up = LocalUp(power_disk.mnt, ENV)
    try:
        endpoints = up.start()
        for round_ in range(cuts):
            poster = Poster(up.url, EventFactory(uuid.uuid4().hex[:8], patients, 200), per_patient)
            async with watch(endpoints["mongo"]) as watching:
                posting = asyncio.create_task(poster.run())
                target = max(1, int(patients * per_patient * CUT_AT[round_ % len(CUT_AT)]))
                deadline = time.monotonic() + 60
                while (await watching.processed() or 0) < target and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                processed_before = await watching.processed() or 0
                accepted_before = poster.accepted
            kill_everything(up)  # after closing the observer's client: no socket to a dead server
            await posting
            report = power_disk.cut() if power else None
            if power:
                power_disk.mount()
            print(
                f"round {round_}: cut with {processed_before} processed of {accepted_before} accepted "
                f"({poster.accepted} accepted in all); layer: {report}"
            )
            assert 0 < processed_before < poster.accepted, "the cut must come part-way through processing"
            if report is not None:
                assert report["pending_files"] > 0, "the cut took nothing back: the layer did not bite"
            endpoints = up.start()
            async with watch(endpoints["mongo"]) as watching:
                result = await until_stored(watching, poster, timeout=90)
            assert result.ok, f"round {round_}: {result}"
            assert result.expected == poster.accepted and result.stored_twice == 0
    finally:
        up.stop()


async def test_power_cut_loses_no_accepted_event(power_disk: PowerLossDisk) -> None:
    await crash_and_recover(power_disk, patients=30, per_patient=8, cuts=1, power=True)


async def test_crash_loses_no_accepted_event(power_disk: PowerLossDisk) -> None:
    await crash_and_recover(power_disk, patients=30, per_patient=8, cuts=1, power=False)


@pytest.mark.soak
async def test_power_cuts_in_a_row_lose_no_accepted_event(power_disk: PowerLossDisk) -> None:
    await crash_and_recover(power_disk, patients=100, per_patient=20, cuts=4, power=True)
