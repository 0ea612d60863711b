"""The JSON shapes of the web API, modelled on the task objects of the A2A protocol.

A task is reported as a [`TaskView`][pydantic_ai_subagents.web.TaskView]: its identity, where it sits in the task
tree, its current status (`state` plus an ISO 8601 `timestamp`, states in lower case as in
[`TaskStatus`][pydantic_ai_subagents.TaskStatus]), what it produced, its usage and its history. Every text a model
wrote (description, result, error, partial result, question) is passed through verbatim: escaping it is the job of
whoever displays it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from .._events import TaskEvent
from .._state import TaskMode, TaskRecord, TaskStatus, TaskUsage

__all__ = (
    'AnswerTaskBody',
    'AnswerTaskResult',
    'CancelTaskBody',
    'CancelTaskResult',
    'CancelView',
    'ContinueTaskBody',
    'ContinueTaskResult',
    'ErrorDetail',
    'StatusView',
    'TaskList',
    'TaskView',
    'UsageView',
    'event_to_json',
    'render_text',
    'task_views',
)

MAX_ANSWER_CHARS = 20_000
"""Longest answer accepted for a subagent's question."""
NOT_BLANK = r'[^\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]'
"""A character that is not whitespace, as ECMA-262 (and so JSON Schema) defines whitespace."""


def render_text(value: Any) -> str | None:
    """A task output as text: strings as they are, anything else as JSON, `None` stays `None`."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return to_json(value, fallback=str).decode()


class _Model(BaseModel):
    model_config = ConfigDict(extra='forbid')


class StatusView(_Model):
    """A task's state and when it was entered (A2A: `TaskStatus`)."""

    state: TaskStatus
    """The state, in lower case: `pending`, `running`, `waiting_for_answer`, `completed`, `failed`, `cancelled`."""
    timestamp: datetime
    """When the state was entered (UTC)."""


class UsageView(_Model):
    """What a task's subagent used so far."""

    requests: int
    """Model requests made."""
    tool_calls: int
    """Tool calls executed."""
    input_tokens: int
    """Input tokens sent."""
    output_tokens: int
    """Output tokens received."""
    total_tokens: int
    """Input plus output tokens."""

    @classmethod
    def of(cls, usage: TaskUsage) -> UsageView:
        """The view of a task's usage."""
        return cls(
            requests=usage.requests,
            tool_calls=usage.tool_calls,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        )


class CancelView(_Model):
    """A cancel request recorded on a task."""

    kind: Literal['soft', 'hard']
    """`soft`: the subagent was asked to wrap up; `hard`: it is stopped at once."""
    requested_by: str
    """Who asked: `application`, `model`, `parent`, `escalation`, ..."""
    requested_at: datetime
    """When it was asked (UTC)."""


class TaskView(_Model):
    """One task, as the API reports it (A2A: `Task`)."""

    id: str
    """The task id."""
    subagent: str
    """The subagent doing the work."""
    description: str
    """The work, as the parent's model described it."""
    mode: TaskMode
    """`sync` (the parent waits) or `async` (it runs in the background)."""
    scope: str
    """The conversation (or run) the task belongs to."""
    parent_task_id: str | None
    """The task whose subagent started this one; `null` for a top-level task."""
    depth: int
    """Nesting depth: 1 for a task started by the top-level agent."""
    status: StatusView
    """The current state and when it was entered."""
    result: str | None
    """The result as text (JSON for structured output), once `completed`."""
    error: str | None
    """Why the task failed, once `failed`."""
    partial_result: str | None
    """What a cancelled task had produced."""
    question: str | None
    """The question the subagent waits on, while `waiting_for_answer`."""
    cancel: CancelView | None
    """The cancel request, if one was made."""
    note: str | None
    """An extra remark on how the task ended."""
    usage: UsageView
    """Usage of the subagent's run so far, rolled up: each subtask's usage is added when it ends (`subtask_usage`)."""
    subtask_usage: UsageView
    """The part of `usage` that was rolled up from finished subtasks; `usage` less this is the task's own."""
    live_subtasks: int
    """Live tasks below this one (started by its subagent, or by theirs): a hard cancel stops them too."""
    created_at: datetime
    """When the task was created (UTC)."""
    elapsed_seconds: float
    """Seconds since the task started running (or was created), until it finished or now."""
    history: list[StatusView]
    """Every state entered, oldest first."""
    messages: list[str] = []
    """Messages sent into the running subagent (steering), oldest first."""
    attempts: int = 1
    """How many times the subagent's run was started: 1, plus one per retry after a transient model failure."""
    continued_from: str | None = None
    """The finished task whose conversation this one continues (a follow-up), if any."""
    can_continue: bool = False
    """Whether `POST /tasks/{task_id}/continue` can start a follow-up of it: it completed, its conversation is kept
    here or by a store that shares it (Redis), and the app was given its subagent. Always `false` for an app made
    without `subagents`."""
    revision: int = 0
    """How many times the task's record has been written: of two views of one task, the later has the higher. A
    client that reads a task on more than one connection (replies, the event stream) keeps the later view."""

    @classmethod
    def from_record(
        cls,
        record: TaskRecord,
        subtasks: Sequence[TaskRecord] = (),
        *,
        live_subtasks: int = 0,
        can_continue: bool = False,
    ) -> TaskView:
        """Build the view of a task snapshot.

        Args:
            record: The task.
            subtasks: The tasks its subagent started (its direct children), to tell its own usage from theirs.
            live_subtasks: How many tasks below it are live.
            can_continue: Whether the app can start a follow-up of it.
        """
        history = [StatusView(state=t.status, timestamp=t.timestamp) for t in record.history]
        status = history[-1] if history else StatusView(state=record.status, timestamp=record.created_at)
        cancel = None
        if record.cancel is not None:
            cancel = CancelView(
                kind=record.cancel.kind,
                requested_by=record.cancel.requested_by,
                requested_at=record.cancel.timestamp,
            )
        return cls(
            id=record.id,
            subagent=record.subagent,
            description=record.description,
            mode=record.mode,
            scope=record.scope,
            parent_task_id=record.parent_task_id,
            depth=record.depth,
            status=status,
            result=render_text(record.result),
            error=record.error,
            partial_result=record.partial_result,
            question=record.question,
            cancel=cancel,
            note=record.note,
            usage=UsageView.of(record.usage),
            subtask_usage=UsageView.of(_rolled_up(record, subtasks)),
            live_subtasks=live_subtasks,
            created_at=record.created_at,
            elapsed_seconds=round(record.elapsed(), 3),
            messages=list(record.messages),
            attempts=record.attempts,
            continued_from=record.continued_from,
            can_continue=can_continue,
            revision=record.revision,
            history=history,
        )


def _rolled_up(record: TaskRecord, subtasks: Iterable[TaskRecord]) -> TaskUsage:
    """The usage of the subtasks already counted in `record.usage`.

    Those that ended before the record was last written: a task that ended first keeps the usage it had, and its
    subtasks stopped after it are not in it.
    """
    ended = record.history[-1].at if record.is_terminal and record.history else None
    counted = [
        sub.usage
        for sub in subtasks
        if sub.is_terminal and sub.history and (ended is None or sub.history[-1].at <= ended)
    ]
    return TaskUsage(
        requests=sum(u.requests for u in counted),
        tool_calls=sum(u.tool_calls for u in counted),
        input_tokens=sum(u.input_tokens for u in counted),
        output_tokens=sum(u.output_tokens for u in counted),
    )


def task_views(
    records: Sequence[TaskRecord],
    every: Sequence[TaskRecord],
    can_continue: Callable[[TaskRecord], bool] | None = None,
) -> list[TaskView]:
    """The views of `records`, each with its subtasks found among `every` (all the manager's tasks).

    `can_continue` tells whether the app can start a follow-up of a task; without it, none can.
    """
    children: dict[str, list[TaskRecord]] = {}
    for r in every:
        if r.parent_task_id is not None:
            children.setdefault(r.parent_task_id, []).append(r)

    def live_below(task_id: str, seen: set[str]) -> int:
        count = 0
        for child in children.get(task_id, ()):
            if child.id not in seen:
                seen.add(child.id)
                count += (not child.is_terminal) + live_below(child.id, seen)
        return count

    return [
        TaskView.from_record(
            r,
            children.get(r.id, ()),
            live_subtasks=live_below(r.id, {r.id}),
            can_continue=can_continue is not None and can_continue(r),
        )
        for r in records
    ]


class TaskList(_Model):
    """The answer to `GET /tasks`."""

    tasks: list[TaskView]
    """The matching tasks, in creation order."""


class CancelTaskBody(_Model):
    """The body of `POST /tasks/{task_id}/cancel`."""

    kind: Literal['soft', 'hard'] = 'soft'
    """`soft`: ask the subagent to wrap up and return partial results; `hard`: stop it now."""


class CancelTaskResult(_Model):
    """The answer to `POST /tasks/{task_id}/cancel`."""

    accepted: bool
    """Whether the request was taken: `false` when the same (or a stronger) cancel was already requested."""
    task: TaskView
    """The task right after the request; its state turns `cancelled` once the subagent has really stopped."""


class AnswerTaskBody(_Model):
    """The body of `POST /tasks/{task_id}/answer`."""

    # The pattern spells out its whitespace, so that JSON Schema (ECMA-262) and Python agree on what it accepts.
    model_config = ConfigDict(extra='forbid', regex_engine='python-re')

    answer: Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=NOT_BLANK)]
    """The answer to the subagent's pending question; it must hold more than whitespace."""


class AnswerTaskResult(_Model):
    """The answer to `POST /tasks/{task_id}/answer`."""

    accepted: bool
    """Whether the answer was delivered: `false` when the task was not waiting for one."""
    task: TaskView
    """The task right after the request."""


class MessageTaskBody(_Model):
    """The body of `POST /tasks/{task_id}/message`."""

    model_config = ConfigDict(extra='forbid', regex_engine='python-re')

    message: Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=NOT_BLANK)]
    """New information or a correction for the running subagent; it must hold more than whitespace."""


class MessageTaskResult(_Model):
    """The answer to `POST /tasks/{task_id}/message`."""

    accepted: bool
    """Whether the message went into the run (or is held until a queued task starts): `false` when the task is
    being cancelled, its run ended just now, or (in another process) its owner refused it."""
    task: TaskView
    """The task right after the request."""


class ContinueTaskBody(_Model):
    """The body of `POST /tasks/{task_id}/continue`."""

    model_config = ConfigDict(extra='forbid', regex_engine='python-re')

    message: Annotated[str, Field(min_length=1, max_length=MAX_ANSWER_CHARS, pattern=NOT_BLANK)]
    """The follow-up, as the subagent will read it after its earlier conversation (the new task's description); it
    must hold more than whitespace."""
    mode: TaskMode = 'async'
    """Recorded on the new task. The reply comes at once either way: follow the task to see it end."""


class ContinueTaskResult(_Model):
    """The answer to `POST /tasks/{task_id}/continue`."""

    task: TaskView
    """The new task (the follow-up), right after it was started: its `continued_from` is the task continued."""


class ErrorDetail(_Model):
    """An error reply."""

    detail: str
    """What went wrong."""


def event_to_json(event: TaskEvent) -> dict[str, Any]:
    """A task event as a JSON-ready dict: `type` (the event class name), its fields and a wall-clock `timestamp`.

    Outputs are rendered as text (see [`render_text`][pydantic_ai_subagents.web.render_text]); the monotonic `at`
    is kept as it is, and `timestamp` is the event's own UTC wall-clock time, as recorded where it happened.
    """
    data: dict[str, Any] = {'type': type(event).__name__}
    for f in fields(event):
        if f.name == 'capability_id':
            continue
        value = getattr(event, f.name)
        if f.name == 'result':
            value = render_text(value)
        elif isinstance(value, TaskStatus):
            value = value.value
        elif isinstance(value, datetime):
            value = value.isoformat()
        data[f.name] = value
    return data
