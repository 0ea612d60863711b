"""The ordered write pump shared by the Redis bus and store, the bus's other pumps, and how both connect.

A bus or store changes its state in memory at once and queues the write; the `WritePump` here takes what is
queued, a batch at a time, and writes it to Redis. The rules it keeps:

* **In order, one batch at a time.** A batch is taken only once the one before it is written, so Redis sees the
  writes in the order they were queued.
* **Nothing is dropped.** A batch that fails goes back in front of what was queued meanwhile and is tried again
  after a backoff (from 0.05 s, doubling up to 2 s). After a connection error a write may so reach Redis twice.

`Pumps` runs a bus's background loops, each under a cancel scope of its own: stopping them cancels those scopes
only, never the task group they run in (whose scope also covers the body of `async with bus:`), and a loop that
fails is logged and ends alone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

__all__ = ('FIRST_BACKOFF', 'MAX_BACKOFF', 'Pumps', 'WritePump', 'open_client')

logger = logging.getLogger('pydantic_ai_subagents.redis')

FIRST_BACKOFF = 0.05
"""Seconds to wait before the first retry of a failed Redis call."""
MAX_BACKOFF = 2.0
"""The longest wait between retries: a server back after an outage is used again within this."""

_B = TypeVar('_B')


async def open_client(url: str, prepare: Callable[[aioredis.Redis], Awaitable[None]]) -> aioredis.Redis:
    """Connect to `url`, check the server answers, and run `prepare`; on any failure close the client and raise."""
    client = aioredis.Redis.from_url(url)  # pyright: ignore[reportUnknownMemberType]
    try:
        await client.ping()  # pyright: ignore[reportUnknownMemberType]
        await prepare(client)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await client.aclose()
        raise
    return client


class WritePump(Generic[_B]):
    """Writes queued batches to Redis in order, retrying a batch that failed.

    The owner keeps the queue; the pump only calls back: `take` hands over everything queued as one batch (or
    `None` when nothing is), `write` writes a batch, and `put_back` returns a failed batch to the front of the
    queue. The owner calls `wake` after queueing.
    """

    def __init__(
        self,
        *,
        what: str,
        take: Callable[[], _B | None],
        write: Callable[[_B], Awaitable[None]],
        put_back: Callable[[_B], None],
    ) -> None:
        self._what = what
        self._take = take
        self._write = write
        self._put_back = put_back
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
        backoff = FIRST_BACKOFF
        while True:
            batch = self._take()
            if batch is None:
                self._wakeup = anyio.Event()
                await self._wakeup.wait()
                continue
            self.writing = True
            try:
                await self._write(batch)
            except RedisError as exc:
                self.errors += 1
                logger.warning('writing %s to Redis failed (%s); retrying in %.2f s', self._what, exc, backoff)
                self._put_back(batch)
                self.writing = False
                self._progress.set()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = FIRST_BACKOFF
            self.writing = False
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
