"""The task state machine: task states, their legal transitions, task records, and what a task store must offer.

This module knows nothing of Pydantic AI: it is plain data and the rules that govern it.

Rules it keeps:

- Only the legal transitions happen (see [`TaskStatus`][pydantic_ai_subagents.TaskStatus]); anything else raises
  [`InvalidTransitionError`][pydantic_ai_subagents.InvalidTransitionError] naming the task, its state and the
  requested one. A terminal state never changes: asking again raises
  [`TaskAlreadyFinishedError`][pydantic_ai_subagents.TaskAlreadyFinishedError], which callers turn into an
  "already finished" reply.
- Every transition produces exactly one [`StatusChange`][pydantic_ai_subagents.StatusChange], so every task has
  exactly one terminal change. A store applies transitions atomically (the in-memory one under a lock), so two
  threads racing to finish the same task produce one winner and one `TaskAlreadyFinishedError`.
- What leaves a store is an immutable [`TaskRecord`][pydantic_ai_subagents.TaskRecord] snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

__all__ = (
    'CancelKind',
    'CancelRequest',
    'SharedTaskStore',
    'StatusChange',
    'TaskMode',
    'TaskRecord',
    'TaskStatus',
    'TaskStore',
    'TaskUsage',
    'Transition',
)

TaskMode: TypeAlias = Literal['sync', 'async']
"""How a task was started: `sync` (the caller waits for the result) or `async` (it runs in the background)."""

CancelKind: TypeAlias = Literal['soft', 'hard']
"""`soft`: ask the subagent to wrap up and return partial results; `hard`: stop it now."""


class TaskStatus(StrEnum):
    """The state of a task.

    `PENDING -> RUNNING | CANCELLED | FAILED`; `RUNNING -> WAITING_FOR_ANSWER | COMPLETED | FAILED | CANCELLED`;
    `WAITING_FOR_ANSWER -> RUNNING | CANCELLED | FAILED`. `COMPLETED`, `FAILED` and `CANCELLED` are terminal.
    """

    PENDING = 'pending'
    """Created, waiting for a free slot (see `max_concurrent_tasks`); never started."""
    RUNNING = 'running'
    """The subagent is working."""
    WAITING_FOR_ANSWER = 'waiting_for_answer'
    """The subagent asked its parent a question and waits for the answer."""
    COMPLETED = 'completed'
    """The subagent finished and returned a result."""
    FAILED = 'failed'
    """The subagent failed: an error, a timeout or an exhausted budget."""
    CANCELLED = 'cancelled'
    """The task was cancelled, softly (with a partial result) or hard."""

    @property
    def is_terminal(self) -> bool:
        """Whether the task is finished: `COMPLETED`, `FAILED` or `CANCELLED`."""
        return self in TERMINAL

    def can_become(self, other: TaskStatus) -> bool:
        """Whether the state machine allows a transition from this state to `other`."""
        return other in LEGAL[self]


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
"""The terminal statuses: `status in TERMINAL` is `status.is_terminal` without a call, for the hot paths."""
LEGAL: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.WAITING_FOR_ANSWER, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.WAITING_FOR_ANSWER: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}
"""The statuses each status may become: `other in LEGAL[status]` is `status.can_become(other)` without a call."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """One entry of a task's history."""

    status: TaskStatus
    """The state entered."""
    at: float
    """When, on the `time.monotonic()` clock of the process that made the change: for durations on that host."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)
    """When, as a UTC wall-clock time: the same on every host that reads the record."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelRequest:
    """A request to cancel a task, as recorded on the task."""

    kind: CancelKind
    """`soft` or `hard`; a hard request that follows a soft one replaces it."""
    requested_by: str
    """Who asked: `'model'`, `'application'`, `'timeout'`, `'parent'`, `'escalation'`, ..."""
    at: float
    """When, on the `time.monotonic()` clock of the process that recorded it: for durations on that host."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC), compare=False)
    """When, as a UTC wall-clock time."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskUsage:
    """What a task's subagent used, rolled up from its model requests."""

    requests: int = 0
    """Model requests made."""
    tool_calls: int = 0
    """Tool calls executed."""
    input_tokens: int = 0
    """Input tokens sent."""
    output_tokens: int = 0
    """Output tokens received."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskRecord:
    """An immutable snapshot of a task.

    Handed out by the task manager and the store; holding one never keeps the task alive or changes it.
    """

    id: str
    """Unguessable task id."""
    subagent: str
    """Name of the subagent doing the work."""
    description: str
    """The work as the parent described it."""
    mode: TaskMode
    """`sync` or `async`."""
    scope: str
    """Whose task it is: the parent's conversation id (else its run id). Only that scope sees the task."""
    parent_task_id: str | None = None
    """The task whose subagent started this one, for nested tasks; `None` at the top level."""
    depth: int = 1
    """Nesting depth: 1 for a task started by the top-level agent."""
    status: TaskStatus = TaskStatus.PENDING
    """Current state."""
    history: tuple[Transition, ...] = ()
    """Every state entered, in order, with its time."""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """Wall-clock creation time (UTC)."""
    result: Any = None
    """The subagent's output (`COMPLETED` only): a string or the structured output object."""
    error: str | None = None
    """Why the task failed (`FAILED`), written to be safe to show to a model."""
    partial_result: str | None = None
    """What a cancelled task had produced (soft cancel: its wrap-up answer)."""
    question: str | None = None
    """The pending question while `WAITING_FOR_ANSWER`."""
    cancel: CancelRequest | None = None
    """The cancel request, if one was made."""
    usage: TaskUsage = field(default_factory=TaskUsage)
    """Usage of the subagent's run so far."""
    note: str | None = None
    """An extra remark on how the task ended, e.g. that a tool thread was still running at a hard cancel."""
    metadata: Mapping[str, Any] = field(default_factory=dict[str, Any])
    """Free-form data for the application (never shown to the model)."""
    owner: str | None = None
    """The task manager that runs the task (its participant name on the bus): where control requests for it go
    when several processes share one store."""
    revision: int = 0
    """How many times the store has written the record; of two snapshots of a task, the later has the higher."""
    attempts: int = 1
    """How many times the subagent's run was started: 1, plus one per retry after a transient model failure."""
    continued_from: str | None = None
    """The finished task whose conversation this one continues (a follow-up), if any."""
    messages: tuple[str, ...] = ()
    """Messages sent into the running subagent while it worked (steering), in order, as they were sent."""

    @property
    def is_terminal(self) -> bool:
        """Whether the task is finished."""
        return self.status.is_terminal

    @property
    def started_at(self) -> float | None:
        """Monotonic time the task entered `RUNNING` for the first time, if it did."""
        return next((t.at for t in self.history if t.status is TaskStatus.RUNNING), None)

    @property
    def finished_at(self) -> float | None:
        """Monotonic time the task entered its terminal state, if it did."""
        return self.history[-1].at if self.is_terminal and self.history else None

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the task started running (or was created), until it finished or `now`."""
        if not self.history:
            return 0.0
        start = self.started_at
        if start is None:
            start = self.history[0].at
        end = self.finished_at
        if end is None:
            end = time.monotonic() if now is None else now
        return max(0.0, end - start)


PackedRecord: TypeAlias = tuple[Any, ...]
"""A finished task's record as one tuple of plain values (see `pack_record`)."""

_STATUS_BY_VALUE = {status.value: status for status in TaskStatus}


def pack_record(record: TaskRecord) -> PackedRecord:
    """`record` as one flat tuple of plain values, which the garbage collector stops walking (see `unpack_record`).

    A record is six objects the collector walks on each full pass (the record, its history tuple and transitions,
    its usage); kept by the hundred thousand, they made a fan-out of that size a quarter slower. The tuple holds
    strings, numbers and datetimes (statuses by value), its history last, three values a transition, so CPython
    untracks it at the first collection that looks at it (a nested tuple could take one collection more). A
    result, metadata or steering messages that hold objects keep it tracked, and lose nothing.
    """
    cancel = record.cancel
    usage = record.usage
    packed = [
        record.id,
        record.subagent,
        record.description,
        record.mode,
        record.scope,
        record.parent_task_id,
        record.depth,
        record.status.value,
        record.revision,
        record.created_at,
        record.result,
        record.error,
        record.partial_result,
        record.question,
        record.note,
        record.metadata or None,  # even an empty dict keeps a tuple tracked
        record.owner,
        record.attempts,
        record.continued_from,
        record.messages or None,
        usage.requests,
        usage.tool_calls,
        usage.input_tokens,
        usage.output_tokens,
    ]
    if cancel is None:
        packed += (None, None, None, None)
    else:
        packed += (cancel.kind, cancel.requested_by, cancel.at, cancel.timestamp)
    for transition in record.history:
        packed += (transition.status.value, transition.at, transition.timestamp)
    return tuple(packed)


PACKED_SCOPE, PACKED_STATUS, PACKED_REVISION = 4, 7, 8
"""Where a packed record keeps its `scope`, its status's value and its `revision`."""
_PACKED_HISTORY = 28


def unpack_record(packed: PackedRecord) -> TaskRecord:
    """The record that `pack_record` packed: a new object, equal to the one packed."""
    by_value = _STATUS_BY_VALUE
    metadata = packed[15]
    kind = packed[24]
    return TaskRecord(
        id=packed[0],
        subagent=packed[1],
        description=packed[2],
        mode=packed[3],
        scope=packed[4],
        parent_task_id=packed[5],
        depth=packed[6],
        status=by_value[packed[7]],
        revision=packed[8],
        created_at=packed[9],
        result=packed[10],
        error=packed[11],
        partial_result=packed[12],
        question=packed[13],
        note=packed[14],
        metadata={} if metadata is None else metadata,
        owner=packed[16],
        attempts=packed[17],
        continued_from=packed[18],
        messages=packed[19] or (),
        usage=TaskUsage(requests=packed[20], tool_calls=packed[21], input_tokens=packed[22], output_tokens=packed[23]),
        cancel=None
        if kind is None
        else CancelRequest(kind=kind, requested_by=packed[25], at=packed[26], timestamp=packed[27]),
        history=tuple(
            [
                Transition(status=by_value[packed[i]], at=packed[i + 1], timestamp=packed[i + 2])
                for i in range(_PACKED_HISTORY, len(packed), 3)
            ]
        ),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class StatusChange:
    """One transition, as the store reports it: the source of every status event."""

    record: TaskRecord
    """The task after the transition."""
    old: TaskStatus | None
    """The state left; `None` when the task was just created."""
    new: TaskStatus
    """The state entered."""


class TaskStore(Protocol):
    """Where task records live. The in-memory store is the default; another backend can take its place."""

    def create(self, record: TaskRecord) -> StatusChange:
        """Add a new task (in its initial state) and report its creation."""
        ...

    def get(self, task_id: str) -> TaskRecord | None:
        """The task's current snapshot, or `None` if unknown or pruned."""
        ...

    def was_pruned(self, task_id: str) -> str | None:
        """The scope of a task that existed but was dropped by retention, else `None`.

        A store remembers a bounded number of pruned ids, so the model can be told that a task finished long ago
        rather than that it never existed; `None` for an id it does not remember.
        """
        ...

    def transition(self, task_id: str, to: TaskStatus, **fields: Any) -> StatusChange:
        """Move a task to a new state, setting `fields` on it in the same step."""
        ...

    def update(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change fields of a task without a state change (usage, metadata, note)."""
        ...

    def request_cancel(self, task_id: str, kind: CancelKind, requested_by: str) -> TaskRecord:
        """Record a cancel request on a live task."""
        ...

    def list(self, scope: str | None = None, *, active_only: bool = False) -> list[TaskRecord]:
        """Tasks in creation order, optionally only one scope's and only the live ones."""
        ...

    def prune(self) -> list[str]:
        """Drop finished tasks past the retention limits; return the dropped ids."""
        ...


@runtime_checkable
class SharedTaskStore(TaskStore, Protocol):
    """A [`TaskStore`][pydantic_ai_subagents.TaskStore] that several processes share.

    [`RedisTaskStore`][pydantic_ai_subagents.redis.RedisTaskStore] is one. Each process keeps a copy of the records
    it can read at once; a record is written by the manager that owns it (`TaskRecord.owner`), and other processes
    learn of the change from the task event that carries it, through
    [`apply`][pydantic_ai_subagents.SharedTaskStore.apply]. Owners hold a lease that they renew while they live:
    the live tasks of an owner whose lease ran out are orphans, which some surviving process marks `FAILED`.
    """

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between renewals of this process's leases: how often a manager checks on its shared tasks."""
        ...

    async def register_owner(self, owner: str) -> None:
        """Take (and keep renewing) the lease of `owner`, a manager of this process."""
        ...

    async def unregister_owner(self, owner: str) -> None:
        """Give up the lease of `owner` (its manager closed)."""
        ...

    def apply(self, record: TaskRecord) -> StatusChange | None:
        """Take in a snapshot written by another process, unless the copy here is as new or newer.

        Returns:
            The status change it makes here (`old` is `None` for a task new to this copy), or `None` when the
            status is unchanged or the snapshot was older.
        """
        ...

    async def orphans(self) -> list[TaskRecord]:
        """Live tasks whose owner's lease ran out, each handed to one process only: it must mark them `FAILED`."""
        ...

    async def owners_alive(self, owners: set[str]) -> set[str]:
        """Which of `owners` (managers or workers) hold a lease right now."""
        ...

    async def refresh(self) -> list[TaskRecord]:
        """Read again the live tasks of other processes (a change whose event was lost); return those that changed."""
        ...

    async def submit(self, queue: str, job: Mapping[str, Any]) -> None:
        """Put a job (a task for a worker) on a worker queue."""
        ...
