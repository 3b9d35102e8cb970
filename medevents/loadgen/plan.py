"""Who sends what, when: patients split among workers, and the planned send time of each request."""

from __future__ import annotations

__all__ = ["owned_patients", "slot_due"]


def owned_patients(worker: int, workers: int, patients: int) -> list[int]:
    """The patients ``worker`` (0-based, of ``workers``) sends for. Every patient belongs to exactly
    one worker, and a worker awaits each answer before its next request, so no patient ever has two
    events in flight: the order the generator sends a patient's events in is the order they must
    be stored in."""
    if not 0 <= worker < workers or workers > patients:
        raise ValueError(f"worker {worker} of {workers} with {patients} patients")
    return list(range(worker, patients, workers))


def slot_due(slot: int, rate: float | None, start: float) -> float:
    """When request number ``slot`` is due: evenly spaced at ``rate`` per second from ``start``,
    or at once when there is no rate (max-rate mode)."""
    return start if rate is None else start + slot / rate
