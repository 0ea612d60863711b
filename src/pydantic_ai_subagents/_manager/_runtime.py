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
    """What waits for a task's next status change: anything with a `set()`."""

    def set(self) -> None:
        """The task's status changed."""
        ...


@dataclass(kw_only=True, eq=False, slots=True, weakref_slot=True)
class TaskRuntime:
    """One live task: its job, where it runs, and the manager's bookkeeping of it (never handed to users)."""

    job: TaskJob
    executor: Executor
    timeout: float | None
    parent_usage: RunUsage | None = None
    trace_context: Context = field(default_factory=Context)
    """The tracing context of the tool call that created the task."""
    stopped: anyio.Event = field(default_factory=anyio.Event)
    """Set once the task has ended (its run exited, or it never started)."""
    watchers: list[Watcher] = field(default_factory=list['Watcher'])
    """Set at the task's next status change, then dropped (waiters register here)."""
    soft_requested_turn: int | None = None
    timed_out: bool = False
    thread_note: str | None = None
    final: TaskRecord | None = None
    """The task's terminal snapshot, kept here for waiters even if retention drops the record."""
    direct_waiters: int = 0
    """Tool calls of the parent waiting on this task right now; they report its outcome, so no notice is sent."""
    settled: bool = False
    # Made when first needed: a queued task does without it (many queued tasks are many objects for the GC).
    _cancel_scope: anyio.CancelScope | None = field(default=None, init=False, repr=False)

    @property
    def id(self) -> str:
        """The task id."""
        return self.job.id

    @property
    def depth(self) -> int:
        """The task's nesting level (1: started by the parent the model talks to)."""
        return self.job.depth

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The cancel scope around the task's run once it is spawned; cancelling it first is allowed."""
        if self._cancel_scope is None:
            self._cancel_scope = anyio.CancelScope()
        return self._cancel_scope

    def notify(self) -> None:
        """Wake whoever watches the task's next change."""
        watchers, self.watchers = self.watchers, []
        for watcher in watchers:
            watcher.set()
