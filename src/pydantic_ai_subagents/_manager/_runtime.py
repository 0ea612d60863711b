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
    """What waits for tasks to finish or ask a question: one watcher can watch many tasks."""

    def changed(self, task_id: str) -> None:
        """The task `task_id` finished or asks a question."""
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
    watchers: Watcher | list[Watcher] | None = None
    """Told of the task's next change that can end a wait (it finishes or asks a question), then dropped: one
    watcher, or a list of several (`None`: nobody watches). Most tasks have one, and no list to walk."""
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
        """Tell `watcher` of the task's next change that can end a wait: it finishes or asks a question."""
        watchers = self.watchers
        if watchers is None:
            self.watchers = watcher
        elif isinstance(watchers, list):
            watchers.append(watcher)
        else:
            self.watchers = [watchers, watcher]

    def unwatch(self, watcher: Watcher) -> None:
        """Take back a watch that is no longer needed."""
        watchers = self.watchers
        if watchers is watcher:
            self.watchers = None
        elif isinstance(watchers, list) and watcher in watchers:
            watchers.remove(watcher)

    def notify(self) -> None:
        """Tell whoever watches the task that it finished or asks a question."""
        watchers = self.watchers
        if watchers is None:
            return
        self.watchers = None
        if isinstance(watchers, list):
            for watcher in watchers:
                watcher.changed(self.id)
        else:
            watchers.changed(self.id)
