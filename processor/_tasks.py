"""Stopping tasks for sure.

On Python 3.11, ``asyncio.wait_for`` (used inside nats-py's requests) can swallow a cancellation
that arrives just as the awaited reply does; a loop cancelled once may then keep running. So stop
tasks by cancelling them until they are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished, cancelling again as needed."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
