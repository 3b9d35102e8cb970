"""Micro-batching: many coroutines submit one item each, a few flushers run them in batches.

The embedded MongoDB-wire server does about four times more work per second in batches than in
single operations (FINDINGS.md), so every watermark read and every write goes through here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from medevents import tracing

from ._tasks import cancel_and_wait

__all__ = ["Batcher"]

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Collects submitted items for up to ``window_s`` (or ``max_batch`` items) and runs them with
    ``run``, at most ``flushers`` batches at once. ``run`` returns one result per item, in order;
    if it raises, every item of the batch gets the exception.

    While tracing is on, each batch runs in a span named ``name`` with a link to the span that
    submitted each item (a batch serves many traces; links, not parents, say which)."""

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        name: str,
        max_batch: int,
        window_s: float,
        flushers: int = 2,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._run = run
        self._name = name
        self._max = max_batch
        self._window = window_s
        self._on_batch = on_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._links: dict[asyncio.Future[R], tracing.SpanContext] = {}  # only while tracing is on
        self._ready = asyncio.Condition()
        self._tasks = [asyncio.create_task(self._flusher(), name=f"batcher-{i}") for i in range(flushers)]

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if tracing.enabled:
            self._links[future] = tracing.current_span_context()
        if len(self._pending) == 1 or len(self._pending) >= self._max:
            async with self._ready:
                self._ready.notify()
        return await future

    async def _flusher(self) -> None:
        while True:
            async with self._ready:
                await self._ready.wait_for(lambda: bool(self._pending))
            if len(self._pending) < self._max and self._window > 0:
                await asyncio.sleep(self._window)
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            if self._links:  # tracing: forget the links of submitters that gave up
                for _, future in batch:
                    if future.done():
                        self._links.pop(future, None)
            batch = [(item, future) for item, future in batch if not future.done()]
            if self._pending:
                async with self._ready:
                    self._ready.notify()
            if not batch:
                continue
            if self._on_batch:
                self._on_batch(len(batch))
            try:
                if self._links:
                    results = await self._traced([item for item, _ in batch], [f for _, f in batch])
                else:
                    results = await self._run([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # handed to every submitter, which decides what it means
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _traced(self, items: list[T], futures: list[asyncio.Future[R]]) -> Sequence[R]:
        contexts = [self._links.pop(f, None) for f in futures]
        links = [tracing.Link(c) for c in contexts if c is not None and c.is_valid]
        with tracing.span(self._name, links=links) as span:
            if span is not None:
                span.set_attribute("medevents.batch_size", len(items))
            return await self._run(items)

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._links.clear()
