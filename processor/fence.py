"""The ordering fence's decision: may this event be applied now? A pure function over plain data.

Per patient, MongoDB keeps a watermark: the stream sequence of the last applied event. The stream
(work-queue retention) keeps every event until it is acknowledged, and an event is acknowledged
only after it is applied. So an event with sequence ``s`` may be applied exactly when it is the
*first message still in the stream on its subject after the watermark*: every earlier event of the
patient is then applied and gone. Whoever holds the message, however many pods overlap, and in
whatever order redeliveries arrive, this keeps each patient's events applied one after another, in
stream order, each once (the compare-and-set on the watermark settles races between writers).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["Decision", "FencingToken", "decide"]


class Decision(enum.Enum):
    """What to do with a held event."""

    APPLY = "apply"  # it is the patient's next event: run the handler, store, move the watermark
    DONE = "done"  # already applied (a redelivery, or an acknowledgement that got lost): ack it
    WAIT = "wait"  # an earlier event of the patient is still pending: keep it and look again later
    GONE = "gone"  # not in the stream although not applied: look again with a fresh watermark


class FencingToken(NamedTuple):
    """What the handler runs under: external side effects can be made conditional on it (apply
    only if the external system's last sequence for the patient is ``watermark`` or lower), so a
    worker that lost its turn (frozen past ``ack_wait``) cannot overwrite newer work."""

    watermark: int  # the patient's last applied stream sequence when this event was admitted
    sequence: int  # this event's stream sequence


def decide(
    sequence: int, watermark: int, first_pending: int | None, *, confirmed_gone: bool = False
) -> Decision:
    """Decide for the event at stream ``sequence``.

    ``watermark`` is the patient's last applied sequence (0 when none), ``first_pending`` the
    sequence of the first message still in the stream on the patient's subject at or after
    ``watermark + 1`` (``None`` when there is none), read *after* the watermark. ``confirmed_gone``
    says the event was already found missing from the stream once and the watermark has been read
    again since: then it left the stream without being applied (expired or purged by an
    operator), no earlier event remains, and applying it loses nothing and breaks no order.
    """
    if sequence <= watermark:
        return Decision.DONE
    if first_pending == sequence:
        return Decision.APPLY
    if first_pending is not None and first_pending < sequence:
        return Decision.WAIT
    # The event is not in the stream (first_pending is None or later). Normally someone applied
    # and acknowledged it after our watermark read: a fresh read will say DONE.
    return Decision.APPLY if confirmed_gone else Decision.GONE
