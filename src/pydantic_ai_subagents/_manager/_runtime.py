"""What the manager keeps about one live task besides its record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import anyio
from opentelemetry.context import Context
from pydantic_ai.usage import RunUsage

from .._run import Executor, TaskJob
from .._state import TaskRecord

__all__ = ('TaskRuntime', 'Watcher')


class Watcher(Protocol):
    """What waits for a task to finish or ask a question: anything with a `set()`."""

    def set(self) -> None:
        """The task finished or asks a question."""
        ...


@dataclass(kw_only=True, eq=False, slots=True, weakref_slot=True)
class TaskRuntime:
    """One live task: its job, where it runs, and the manager's bookkeeping of it (never handed to users)."""

    job: TaskJob
    id: str
    """The task id, its job's: a field, as the hot paths read it often (a property is a call each time)."""
    depth: int
    """The task's nesting level, its job's (1: started by the parent the model talks to)."""
    executor: Executor
    timeout: float | None
    parent_usage: RunUsage | None = None
    trace_context: Context = field(default_factory=Context)
    """The tracing context of the tool call that created the task."""
    watchers: list[Watcher] | None = None
    """Set at the task's next change that can end a wait (it finishes or asks a question), then dropped (waiters
    register here; `None`: nobody watches)."""
    soft_requested_turn: int | None = None
    timed_out: bool = False
    thread_note: str | None = None
    final: TaskRecord | None = None
    """The task's terminal snapshot, kept here for waiters even if retention drops the record."""
    direct_waiters: int = 0
    """Tool calls of the parent waiting on this task right now; they report its outcome, so no notice is sent."""
    settled: bool = False
    ended: bool = False
    """Whether the task has ended (its run exited, or it never started)."""
    # Made when first needed: a queued task does without them, and most tasks never need an event for their end
    # (many tasks are many objects for the garbage collector to walk).
    _cancel_scope: anyio.CancelScope | None = field(default=None, init=False, repr=False)
    _stopped: anyio.Event | None = field(default=None, init=False, repr=False)

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The cancel scope around the task's run once it is spawned; cancelling it first is allowed."""
        if self._cancel_scope is None:
            self._cancel_scope = anyio.CancelScope()
        return self._cancel_scope

    @property
    def stopped(self) -> anyio.Event:
        """Set once the task has ended (its run exited, or it never started); made when first asked for."""
        if self._stopped is None:
            self._stopped = anyio.Event()
            if self.ended:
                self._stopped.set()
        return self._stopped

    def end(self) -> bool:
        """Mark the task ended and wake who waits for it; `False` if it had already ended."""
        if self.ended:
            return False
        self.ended = True
        if self._stopped is not None:
            self._stopped.set()
        return True

    def watch(self, watcher: Watcher) -> None:
        """Wake `watcher` at the task's next change that can end a wait: it finishes or asks a question."""
        if self.watchers is None:
            self.watchers = [watcher]
        else:
            self.watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        """Take back a watch that is no longer needed."""
        watchers = self.watchers
        if watchers is not None and watcher in watchers:
            watchers.remove(watcher)

    def notify(self) -> None:
        """Wake whoever watches the task: it finished or asks a question."""
        watchers = self.watchers
        if watchers is None:
            return
        self.watchers = None
        for watcher in watchers:
            watcher.set()
