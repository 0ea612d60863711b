"""The manager's host: the long-lived task that owns the task group every task runs in, and the thread entry point.

Rules it keeps:

- Starting is idempotent and safe under concurrency: callers that arrive while the host is starting wait for that
  one start; exactly one host (and one mailbox) exists per manager and loop.
- The host outlives the agent run that first used the manager (it is an asyncio task of its own); closing sets it
  going down, and its exit stops every task first, also when the loop itself shuts down.
- Calls from other threads are handed to the loop through anyio's portal; on the loop's thread, or while the loop
  is not running (between two `run_sync` calls), they run directly: nothing else touches the manager then.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .._errors import ManagerClosedError, SubagentsError

__all__ = ('Host', 'check_duration')


def check_duration(name: str, value: float | None, *, optional: bool = False, zero: bool = False) -> None:
    """Refuse a duration that is not a finite number of seconds (`None` where `optional`, 0 where `zero`).

    Raises:
        ValueError: NaN, infinite, negative (or zero when not allowed), or not a number.
    """
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'{name} must be a number of seconds, got {value!r}')
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        allowed = 'a finite number of seconds >= 0' if zero else 'a finite number of seconds > 0'
        raise ValueError(f'{name} must be {allowed}{" or None" if optional else ""}, got {value!r}')


class Host:
    """Owns the manager's task group, its loop, and the way in from other threads."""

    def __init__(
        self,
        *,
        serve: Callable[[anyio.abc.TaskGroup], Awaitable[None]],
        stop_all: Callable[[], Awaitable[None]],
        leave: Callable[[], Awaitable[None]],
        forget_loop: Callable[[], None],
        has_live_tasks: Callable[[], bool],
    ) -> None:
        self._serve = serve
        self._stop_all = stop_all
        self._leave = leave
        self._forget_loop = forget_loop
        self._has_live_tasks = has_live_tasks
        self.tg: anyio.abc.TaskGroup | None = None
        self.closed = False
        self._closing: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._starting: anyio.Event | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the host runs (or last ran) on."""
        return self._loop

    async def ensure_started(self) -> anyio.abc.TaskGroup:
        """The task group tasks run in; starts the host on first use (or on a new loop once the old one is gone).

        Raises:
            ManagerClosedError: the manager is closed.
        """
        while True:
            if self.closed:
                raise ManagerClosedError('the task manager is closed')
            running = asyncio.get_running_loop()
            starting = self._starting
            if starting is None or self._loop is not running:
                break
            await starting.wait()  # another caller on this loop is starting it: that start is ours too
        loop = self._loop
        if loop is running:
            if self.tg is not None:
                return self.tg
            self._forget_loop()  # the host was cancelled from outside; start again
        elif loop is not None:
            if not (loop.is_closed() or (not loop.is_running() and not self._has_live_tasks())):
                raise SubagentsError(
                    'this task manager has live tasks on another event loop: use one manager (one toolset) per '
                    'loop, or close it first'
                )
            self._forget_loop()
        self._starting = starting = anyio.Event()
        try:
            self._token = anyio.lowlevel.current_token()
            self._loop_thread = threading.get_ident()
            started = anyio.Event()
            self._closing = anyio.Event()
            self._done = anyio.Event()
            self._loop = running
            task = running.create_task(self._host(started), name='pydantic-ai-subagents manager')
            _HOST_TASKS.add(task)
            task.add_done_callback(_HOST_TASKS.discard)
            await started.wait()
        finally:
            self._starting = None
            starting.set()
        if self.tg is None:
            raise ManagerClosedError('the task manager could not start')
        return self.tg

    async def _host(self, started: anyio.Event) -> None:
        assert self._closing is not None
        assert self._done is not None
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                try:
                    await self._serve(tg)
                finally:
                    started.set()
                try:
                    await self._closing.wait()
                finally:
                    # Also when the loop itself shuts down (asyncio.run cancels what is left): stop the tasks first.
                    with anyio.CancelScope(shield=True):
                        await self._stop_all()
                    tg.cancel_scope.cancel()
        finally:
            self.tg = None
            with anyio.CancelScope(shield=True):
                await self._leave()
            self._done.set()
            started.set()

    async def aclose(self, after: Callable[[], Awaitable[None]]) -> None:
        """Stop the host (it stops every task) and wait for it; then `after`. Idempotent."""
        if self.closed:
            if self._done is not None:
                await self._done.wait()
            return
        self.closed = True
        if self._closing is not None and self._done is not None:
            self._closing.set()
            await self._done.wait()
        await after()

    def runs_here(self) -> bool:
        """Whether `call` would run its function right here, so that the caller can call it itself.

        That is: the manager is open and the caller is on its loop's thread, with that loop not closed.
        """
        loop = self._loop
        return (
            not self.closed
            and threading.get_ident() == self._loop_thread
            and not (loop is not None and loop.is_closed())
        )

    def call(self, func: Callable[[], bool]) -> bool:
        """Run `func` on the manager's loop and return its answer; `False` once the manager is closed."""
        if self.closed:
            return False
        loop = self._loop
        if self._token is None or loop is None or threading.get_ident() == self._loop_thread or not loop.is_running():
            if loop is not None and loop.is_closed():
                return False
            return func()
        try:
            return anyio.from_thread.run_sync(func, token=self._token)
        except (anyio.RunFinishedError, RuntimeError):
            return False  # the loop stopped while the call was on its way


_HOST_TASKS: set[asyncio.Task[Any]] = set()
"""The running hosts: an asyncio task must be referenced until done."""
