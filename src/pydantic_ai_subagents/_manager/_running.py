"""Running tasks: slots and queue, the executor of each task, and the one path from spawn to settle.

Rules it keeps:

- Each task runs as one child of the manager's task group, in a cancel scope of its own, and ends through the
  settle point whatever happens: an outcome from its executor, an exception the executor let through (a bug), or
  its scope cancelled by the manager closing. Only the manager's own cancellation propagates.
- A task's slot is given on (to the oldest queued task of its level) the moment it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from functools import partial

import anyio
import anyio.abc

try:
    from sniffio import current_async_library_cvar
except ImportError:  # pragma: no cover - anyio works without sniffio
    current_async_library_cvar = None

from .._otel import end_attributes, task_span, tracing
from .._run import Executor, Outcome, safe_error
from .._run._support import is_real_cancel
from .._state import TERMINAL
from ._observer import TaskObserver
from ._runtime import TaskRuntime
from ._settle import Settler
from ._slots import Slots

__all__ = ('CLOSED_NOTE', 'Running')

CLOSED_NOTE = 'stopped because the task manager was closed'


class Running:
    """Spawns, runs and ends this manager's tasks."""

    def __init__(
        self,
        *,
        settler: Settler,
        slots: Slots,
        observer: Callable[[TaskRuntime], TaskObserver],
        forget: Callable[[str], None],
    ) -> None:
        self.settler = settler
        self.slots = slots
        self._observer = observer
        self._forget = forget
        self.tg: anyio.abc.TaskGroup | None = None

    def admit(self, runtime: TaskRuntime) -> None:
        """Start a new task now if its level has a free slot, else queue it."""
        if self.slots.take(runtime.depth):
            self._spawn(runtime)
        else:
            # A queued task is only its runtime and its record: its asyncio task, span and cancel scope come when
            # a slot frees, so a long queue costs little memory and no scheduling.
            self.slots.queue(runtime)

    def _spawn(self, runtime: TaskRuntime) -> None:
        tg = self.tg
        assert tg is not None
        # A fresh context: the task must not inherit the parent run's deadline or other run-scoped state;
        # how long it may run is its own `timeout`, and a sync task stops with its parent through a hard cancel.
        context = contextvars.Context()
        if current_async_library_cvar is not None and (library := current_async_library_cvar.get()) is not None:
            # Keep the name of the async library: without it, every anyio call of the run (dozens per model turn)
            # looks the library up the slow way.
            context.run(current_async_library_cvar.set, library)
        # With no tracer, the task's coroutine is `_execute` itself: each step of its run resumes every coroutine
        # frame above the run, so a frame that only opens a span would cost calls on every step.
        run = self._run_in_span if tracing() else self._execute
        context.run(partial(tg.start_soon, name=f'subagent task {runtime.id}'), run, runtime)

    async def _run_in_span(self, runtime: TaskRuntime) -> None:
        """Run one task and settle it, inside its span. Raises nothing but the manager's own cancellation."""
        store = self.settler.store
        record = store.get(runtime.id)
        if record is None or record.is_terminal:
            self.end(runtime)  # cancelled between its spawn and its start
            return
        with task_span(record, runtime.trace_context, start_time=record.created_at) as span:
            try:
                await self._execute(runtime)
            finally:
                final = store.get(runtime.id) or runtime.final
                if final is not None:
                    end_attributes(span, final)

    async def _execute(self, runtime: TaskRuntime) -> None:
        """Run one task and settle it. Raises nothing but the manager's own cancellation."""
        record = self.settler.store.get(runtime.id)
        if record is None or record.status in TERMINAL:
            self.end(runtime)  # cancelled between its spawn and its start
            return
        outcome: Outcome | None = None
        executor: Executor = runtime.executor
        try:
            with runtime.cancel_scope:
                outcome = await executor.execute(runtime.job, self._observer(runtime))
                # Settled the moment the run is over, before the scope's own exit: the status says how the task
                # ended as soon as its run has exited.
                self.settler.settle(runtime, outcome)
        except BaseException as e:
            if is_real_cancel(e):
                raise
            outcome = Outcome(kind='failed', error=safe_error(e))
        finally:
            self.settler.settle(runtime, outcome or Outcome(kind='stopped', note=CLOSED_NOTE))
            self.end(runtime)
            if outcome is not None and outcome.raised is not None:
                # Freeing the stopped or failed run's objects waits for the next pass of the loop: who waits for the
                # task's end (woken just now) runs first.
                asyncio.get_running_loop().call_soon(outcome.release)

    def end(self, runtime: TaskRuntime) -> None:
        """The task is over here: wake who waits for its stop, forget it, and give its slot on."""
        if not runtime.end():
            return
        # The runtime holds its job, the job its observer and the observer the runtime: cut that loop, so that the
        # task's objects go as soon as nothing refers to them, not at a later run of the collector (at 100,000
        # tasks, the collector's full passes were a quarter of the wall time).
        runtime.job.observer = None
        self.settler.runtimes.pop(runtime.id, None)
        self._forget(runtime.id)
        following = self.slots.release(runtime.depth)
        if following is not None and self.tg is not None:
            self._spawn(following)

    def end_unstarted(self, runtime: TaskRuntime) -> None:
        """A task cancelled before its run began ends now, `CANCELLED`."""
        self.settler.settle(runtime, Outcome(kind='stopped'))
        if self.slots.unqueue(runtime):
            # It never ran, so nothing else ends it: its span, as it would have had, and its runtime.
            record = self.settler.store.get(runtime.id) or runtime.final
            if record is not None:
                with task_span(record, runtime.trace_context, start_time=record.created_at) as span:
                    end_attributes(span, record)
            runtime.end()
            self.settler.runtimes.pop(runtime.id, None)
            self._forget(runtime.id)
        else:
            runtime.cancel_scope.cancel()

    async def stop_all(self, grace: float, hard_cancel: Callable[[TaskRuntime], None]) -> None:
        """Hard-cancel every live task, give them `grace` seconds to stop, then cancel what is left."""
        runtimes = self.settler.runtimes
        for runtime in list(runtimes.values()):
            hard_cancel(runtime)
        for runtime in list(runtimes.values()):
            if not runtime.ended:
                with anyio.move_on_after(grace):
                    await runtime.stopped.wait()
        for runtime in list(runtimes.values()):
            runtime.cancel_scope.cancel()
