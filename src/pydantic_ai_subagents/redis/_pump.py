"""The ordered write pump shared by the Redis bus and store, and the bus's other pumps.

A bus or store changes its state in memory at once and queues the write; the `WritePump` here takes what is
queued, a batch at a time, and writes it to Redis. The rules it keeps:

* **In order, one batch at a time.** A batch is taken only once the one before it is written, so Redis sees the
  writes in the order they were queued.
* **Nothing is dropped.** A batch that fails is tried again (see `_connect.retrying`), however long Redis is gone,
  before anything queued after it. After a connection error a write may so reach Redis twice.

`Pumps` runs a bus's background loops, each under a cancel scope of its own: stopping them cancels those scopes
only, never the task group they run in (whose scope also covers the body of `async with bus:`), and a loop that
fails is logged and ends alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

from ._connect import retrying

__all__ = ('Pumps', 'WritePump')

logger = logging.getLogger('pydantic_ai_subagents.redis')

_B = TypeVar('_B')


class WritePump(Generic[_B]):
    """Writes queued batches to Redis in order, retrying a batch that failed.

    The owner keeps the queue; the pump only calls back: `take` hands over everything queued as one batch (or
    `None` when nothing is) and `write` writes a batch. The owner calls `wake` after queueing.
    """

    def __init__(self, *, what: str, take: Callable[[], _B | None], write: Callable[[_B], Awaitable[None]]) -> None:
        self._what = what
        self._take = take
        self._write = write
        self._wakeup = anyio.Event()
        self._progress = anyio.Event()
        self.writing = False
        """Whether a batch is being written right now."""
        self.errors = 0
        """Failed attempts to write a batch (each batch is retried)."""

    def wake(self) -> None:
        """Tell the pump that something was queued."""
        self._wakeup.set()

    def notify(self) -> None:
        """Wake whoever waits in `wait`: something they wait on changed (a batch was written, the pump stopped)."""
        self._progress.set()

    async def wait(self, busy: Callable[[], bool]) -> None:
        """Wait until `busy()` is false, checking it again each time the pump makes progress or is notified."""
        while busy():
            progress = self._progress = anyio.Event() if self._progress.is_set() else self._progress
            await progress.wait()

    async def run(self) -> None:
        """Write batches until cancelled."""
        while True:
            batch = self._take()
            if batch is None:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            self.writing = True
            try:
                await retrying(
                    partial(self._write, batch), what=f'writing {self._what} to Redis', on_failure=self._failed
                )
            finally:
                self.writing = False
                self._progress.set()

    def _failed(self, error: Exception) -> None:
        self.errors += 1
        self._progress.set()


class Pumps:
    """The background loops of one bus, each under a cancel scope of its own, in a task group the bus owns."""

    def __init__(self, *, on_idle: Callable[[], None]) -> None:
        self._on_idle = on_idle
        self._tg: anyio.abc.TaskGroup | None = None
        self._scopes: set[anyio.CancelScope] = set()
        self._idle = anyio.Event()
        self._idle.set()
        self.running = 0
        """How many pumps run now."""

    def attach(self, tg: anyio.abc.TaskGroup) -> None:
        """Run the pumps in `tg` from now on."""
        self._tg = tg

    def spawn(self, func: Callable[..., Awaitable[None]], *args: Any, scope: anyio.CancelScope | None = None) -> None:
        """Start a pump, under `scope` (to stop it alone later) or a scope of its own that `stop` cancels."""
        assert self._tg is not None
        if self.running == 0:
            self._idle = anyio.Event()
        self.running += 1
        scope = scope or anyio.CancelScope()
        self._scopes.add(scope)
        self._tg.start_soon(self._run, scope, func, *args)

    async def _run(self, scope: anyio.CancelScope, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            with scope:
                await func(*args)
        except Exception:
            logger.exception('redis bus pump %s failed', getattr(func, '__name__', func))
        finally:
            self._scopes.discard(scope)
            self.running -= 1
            if self.running == 0:
                self._idle.set()
                self._on_idle()

    def stop(self) -> None:
        """Cancel every pump."""
        for scope in list(self._scopes):
            scope.cancel()

    async def wait_idle(self) -> None:
        """Wait until no pump runs."""
        await self._idle.wait()
