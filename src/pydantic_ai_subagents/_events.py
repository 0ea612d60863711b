"""The task event family.

Every state change of a task produces exactly one event, and every task ends with exactly one terminal event
([`TaskCompleted`][pydantic_ai_subagents.TaskCompleted], [`TaskFailed`][pydantic_ai_subagents.TaskFailed] or
[`TaskCancelled`][pydantic_ai_subagents.TaskCancelled]). Events are Pydantic AI
[`CapabilityEvent`][pydantic_ai.messages.CapabilityEvent]s, so with the
[`SubAgents`][pydantic_ai_subagents.SubAgents] capability they appear in the parent's own event stream
(`run_stream_events`, `event_stream_handler`); applications also get them from
[`TaskManager.events`][pydantic_ai_subagents.TaskManager.events].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_ai.messages import CapabilityEvent

from ._bus import Message
from ._state import CancelKind, StatusChange, TaskRecord, TaskStatus

__all__ = (
    'EVENTS_TOPIC',
    'TaskAnswered',
    'TaskCancelRequested',
    'TaskCancelled',
    'TaskCompleted',
    'TaskCreated',
    'TaskEvent',
    'TaskEventMessage',
    'TaskFailed',
    'TaskQuestionAsked',
    'TaskRetrying',
    'TaskRunEvent',
    'TaskStarted',
    'created_event',
    'event_for_change',
)


@dataclass(kw_only=True)
class TaskEvent(CapabilityEvent, namespace='subagents', abstract=True):
    """Base of every task event."""

    task_id: str
    """The task the event is about."""
    subagent: str
    """The subagent doing the task."""
    scope: str
    """The conversation (or run) the task belongs to."""
    parent_task_id: str | None = None
    """The task that started this one, for nested tasks."""
    status: TaskStatus = TaskStatus.PENDING
    """The task's status after the event."""
    at: float = 0.0
    """When it happened, on the `time.monotonic()` clock of the process that made it: for durations on that host."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)
    """When it happened, as a UTC wall-clock time (as Pydantic AI's messages carry it): the same on every host."""

    @property
    def is_terminal(self) -> bool:
        """Whether this is the task's terminal event."""
        return self.status.is_terminal


@dataclass(kw_only=True)
class TaskCreated(TaskEvent):
    """A task was created; `status` is `PENDING` (waiting for a slot) or already `RUNNING`."""

    description: str = ''
    """The work as the parent described it."""
    mode: str = 'sync'
    """`sync` or `async`."""


@dataclass(kw_only=True)
class TaskStarted(TaskEvent):
    """A queued task got a slot and its subagent started."""


@dataclass(kw_only=True)
class TaskQuestionAsked(TaskEvent):
    """The subagent asked its parent a question and waits for the answer."""

    question: str = ''
    """The question."""


@dataclass(kw_only=True)
class TaskAnswered(TaskEvent):
    """The subagent's question was answered (or timed out) and it works again."""


@dataclass(kw_only=True)
class TaskCancelRequested(TaskEvent):
    """Someone asked to cancel the task.

    Not terminal: [`TaskCancelled`][pydantic_ai_subagents.TaskCancelled] follows when the subagent has really stopped.
    """

    cancel_kind: CancelKind = 'soft'
    """`soft` or `hard`."""
    requested_by: str = ''
    """Who asked: `model`, `application`, `parent`, `escalation`, ..."""


@dataclass(kw_only=True)
class TaskCompleted(TaskEvent):
    """The subagent finished with a result."""

    result: Any = None
    """The subagent's output."""


@dataclass(kw_only=True)
class TaskFailed(TaskEvent):
    """The subagent failed."""

    error: str = ''
    """Why."""


@dataclass(kw_only=True)
class TaskCancelled(TaskEvent):
    """The task was cancelled and its subagent has stopped."""

    cancel_kind: CancelKind = 'hard'
    """`soft` (wrapped up, with a partial result) or `hard`."""
    partial_result: str | None = None
    """What the subagent produced before it stopped (soft cancel)."""


@dataclass(kw_only=True)
class TaskRetrying(TaskEvent):
    """A try of the subagent's run failed on a transient model error and will be tried again.

    See `SubAgentConfig.model_retries`. Not a state change: `status` is the task's current status.
    """

    attempt: int = 2
    """The number of the try about to start (the first retry is 2)."""
    error: str = ''
    """The failure of the previous try."""
    delay: float = 0.0
    """Seconds until the try starts."""


def retrying_event(record: TaskRecord, attempt: int, error: str, delay: float, at: float) -> TaskRetrying:
    """The event reporting that a task's run will be tried again."""
    return TaskRetrying(attempt=attempt, error=error, delay=delay, **_common(record, at))


@dataclass(kw_only=True)
class TaskRunEvent(TaskEvent):
    """An event of the subagent's own run (text delta, tool call, tool result), tagged with its task.

    Only sent when the manager's `forward_subagent_events` is on. Not a state change: `status` is the task's
    current status.
    """

    event: Any = None
    """The subagent's Pydantic AI stream event (`PartStartEvent`, `PartDeltaEvent`, `FunctionToolCallEvent`, ...)."""


def run_event(record: TaskRecord, event: Any, at: float) -> TaskRunEvent:
    """Wrap one event of a subagent's run for the parent's stream."""
    return TaskRunEvent(event=event, **_common(record, at))


def _common(record: TaskRecord, at: float, timestamp: datetime | None = None) -> dict[str, Any]:
    common: dict[str, Any] = {
        'task_id': record.id,
        'subagent': record.subagent,
        'scope': record.scope,
        'parent_task_id': record.parent_task_id,
        'status': record.status,
        'at': at,
    }
    if timestamp is not None:
        common['timestamp'] = timestamp
    return common


def event_for_change(change: StatusChange) -> TaskEvent:
    """The one event that reports a status change."""
    record = change.record
    last = record.history[-1] if record.history else None
    common = _common(record, 0.0, None) if last is None else _common(record, last.at, last.timestamp)
    new = change.new
    if change.old is None:
        return TaskCreated(description=record.description, mode=record.mode, **common)
    if new is TaskStatus.RUNNING:
        if change.old is TaskStatus.WAITING_FOR_ANSWER:
            return TaskAnswered(**common)
        return TaskStarted(**common)
    if new is TaskStatus.WAITING_FOR_ANSWER:
        return TaskQuestionAsked(question=record.question or '', **common)
    if new is TaskStatus.COMPLETED:
        return TaskCompleted(result=record.result, **common)
    if new is TaskStatus.FAILED:
        return TaskFailed(error=record.error or '', **common)
    kind: CancelKind = record.cancel.kind if record.cancel is not None else 'hard'
    return TaskCancelled(cancel_kind=kind, partial_result=record.partial_result, **common)


def created_event(record: TaskRecord) -> TaskCreated:
    """What a subscriber that arrives late gets for a live task: its creation, with its current status."""
    return TaskCreated(
        task_id=record.id,
        subagent=record.subagent,
        scope=record.scope,
        parent_task_id=record.parent_task_id,
        status=record.status,
        at=record.history[-1].at if record.history else 0.0,
        timestamp=record.history[-1].timestamp if record.history else record.created_at,
        description=record.description,
        mode=record.mode,
    )


def cancel_requested_event(record: TaskRecord) -> TaskCancelRequested:
    """The event reporting a cancel request recorded on `record`."""
    assert record.cancel is not None
    return TaskCancelRequested(
        cancel_kind=record.cancel.kind,
        requested_by=record.cancel.requested_by,
        **_common(record, record.cancel.at, record.cancel.timestamp),
    )


EVENTS_TOPIC = 'subagents.events'
"""The bus topic every task event is published on."""


@dataclass(frozen=True, kw_only=True)
class TaskEventMessage(Message):
    """A task event, as published on the bus."""

    event: TaskEvent
    """The event."""
    record: TaskRecord | None = None
    """The task as the event left it: how other processes sharing the store learn of the change."""
