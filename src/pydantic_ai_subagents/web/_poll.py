"""Task events for a server that does not run on the task manager's event loop.

[`TaskManager.events`][pydantic_ai_subagents.TaskManager.events] can only be read on the manager's own loop, and
reading it starts a manager that has not started yet, on the reader's loop. When the web app is served from
another thread, or before the manager has started, the event stream reads snapshots instead (which is safe from
any thread and starts nothing) a few times a second, and reports what changed as the same events: every new entry
of a task's history becomes the event that reports it, and a new cancel request becomes a `TaskCancelRequested`.
Each event has the status and time of its own transition; its other fields (question, result, ...) come from the
snapshot that revealed it, so a question already answered by then is reported empty.

What it remembers of a task is forgotten once the task is no longer listed (pruned by the task store), so a long
stream keeps no more than the store itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from .._events import TaskEvent, cancel_requested_event, created_event, event_for_change
from .._manager import TaskManager
from .._state import StatusChange, TaskRecord

__all__ = ('SnapshotFollower', 'runs_here')


@dataclass
class _Seen:
    transitions: int
    cancelled: bool


def _changes(record: TaskRecord, seen: _Seen) -> list[TaskEvent]:
    events: list[TaskEvent] = []
    history = record.history
    for index in range(seen.transitions, len(history)):
        old = history[index - 1].status if index else None
        new = history[index].status
        then = replace(record, status=new, history=history[: index + 1])
        events.append(event_for_change(StatusChange(record=then, old=old, new=new)))
    if record.cancel is not None and not seen.cancelled:
        request = cancel_requested_event(record)
        # The request comes before the transition it led to.
        position = next((i for i, e in enumerate(events) if e.at >= request.at), len(events))
        events.insert(position, request)
    seen.transitions = len(history)
    seen.cancelled = record.cancel is not None
    return events


def runs_here(manager: TaskManager) -> bool:
    """Whether `manager` runs on the current event loop, so that its `events()` can be read here."""
    loop = manager.loop
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio
        return False
    return loop is not None and loop is current


class SnapshotFollower:
    """Finds task events by comparing snapshots of a manager's tasks, remembering what it has seen of each."""

    def __init__(self, manager: TaskManager, scope: str | None) -> None:
        """Follow `manager`'s tasks, of `scope` only unless it is `None`."""
        self.manager = manager
        self.scope = scope
        self.seen: dict[str, _Seen] = {}
        """What was seen of each listed task, by task id; a task no longer listed is dropped."""

    def start(self) -> list[TaskEvent]:
        """Take the first snapshot: a `TaskCreated` for each live task, with its current status."""
        events: list[TaskEvent] = []
        for record in self.manager.list(self.scope):
            self.seen[record.id] = _Seen(transitions=len(record.history), cancelled=record.cancel is not None)
            if not record.is_terminal:
                events.append(created_event(record))
        return events

    def changes(self) -> list[TaskEvent]:
        """Take another snapshot: the events of everything that changed since the last one."""
        events: list[TaskEvent] = []
        records = self.manager.list(self.scope)
        for record in records:
            state = self.seen.setdefault(record.id, _Seen(transitions=0, cancelled=False))
            events.extend(_changes(record, state))
        if len(self.seen) > len(records):
            listed = {record.id for record in records}
            for task_id in [t for t in self.seen if t not in listed]:
                del self.seen[task_id]
        return events
