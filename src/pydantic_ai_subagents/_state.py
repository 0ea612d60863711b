"""The task state machine and the in-memory task store.

This module knows nothing of Pydantic AI: it is plain data and the rules that govern it.

Rules it keeps:

- Only the legal transitions happen (see [`TaskStatus`][pydantic_ai_subagents.TaskStatus]); anything else raises
  [`InvalidTransitionError`][pydantic_ai_subagents.InvalidTransitionError] naming the task, its state and the
  requested one. A terminal state never changes: asking again raises
  [`TaskAlreadyFinishedError`][pydantic_ai_subagents.TaskAlreadyFinishedError], which callers turn into an
  "already finished" reply.
- Every transition produces exactly one [`StatusChange`][pydantic_ai_subagents.StatusChange], so every task has
  exactly one terminal change. The store applies transitions under a lock, so two threads racing to finish the
  same task produce one winner and one `TaskAlreadyFinishedError`.
- What leaves the store is an immutable [`TaskRecord`][pydantic_ai_subagents.TaskRecord] snapshot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from ._errors import InvalidTransitionError, TaskAlreadyFinishedError, TaskNotFoundError

__all__ = (
    'CancelKind',
    'CancelRequest',
    'InMemoryTaskStore',
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
        return self in _TERMINAL

    def can_become(self, other: TaskStatus) -> bool:
        """Whether the state machine allows a transition from this state to `other`."""
        return other in _LEGAL[self]


_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
_LEGAL: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.WAITING_FOR_ANSWER, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.WAITING_FOR_ANSWER: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Transition:
    """One entry of a task's history."""

    status: TaskStatus
    """The state entered."""
    at: float
    """When, on the `time.monotonic()` clock."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelRequest:
    """A request to cancel a task, as recorded on the task."""

    kind: CancelKind
    """`soft` or `hard`; a hard request that follows a soft one replaces it."""
    requested_by: str
    """Who asked: `'model'`, `'application'`, `'timeout'`, `'parent'`, `'escalation'`, ..."""
    at: float
    """When, on the `time.monotonic()` clock."""


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


_RECORD_FIELDS = tuple(f.name for f in dataclass_fields(TaskRecord))


def _copy(record: TaskRecord, **changes: Any) -> TaskRecord:
    """`dataclasses.replace` for the store's writes, without its per-call look at the fields: half the cost.

    The store checks the names in `changes` before it calls this.
    """
    copy = object.__new__(TaskRecord)
    for name in _RECORD_FIELDS:
        object.__setattr__(copy, name, changes[name] if name in changes else getattr(record, name))
    return copy


_UPDATABLE = frozenset({'usage', 'note', 'metadata', 'question', 'partial_result'})
_TRANSITION_FIELDS = frozenset({'result', 'error', 'partial_result', 'question', 'note', 'usage'})


class InMemoryTaskStore:
    """The default [`TaskStore`][pydantic_ai_subagents.TaskStore]: a dict of records guarded by a lock.

    Finished tasks are kept until there are more than `max_retained` of them or they are older than
    `retention_seconds`; the oldest finished ones go first. Live tasks are never pruned.
    """

    def __init__(
        self,
        *,
        max_retained: int = 1000,
        retention_seconds: float | None = 3600.0,
        clock: Any = time.monotonic,
    ) -> None:
        """Create an empty store.

        Args:
            max_retained: Finished tasks kept at most (the oldest are dropped first). 1,000 records stay well under
                20 MB even with long results, while covering any conversation's recent history.
            retention_seconds: Finished tasks older than this are dropped; `None` keeps them until `max_retained`.
            clock: Monotonic clock, replaceable in tests.
        """
        if max_retained < 0:
            raise ValueError('max_retained must be >= 0')
        self.max_retained = max_retained
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, TaskRecord] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._pruned: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TaskRecord]:
        with self._lock:
            return iter(list(self._records.values()))

    def create(self, record: TaskRecord) -> StatusChange:
        """Add a new task; it must be `PENDING` or `RUNNING` and have a fresh id."""
        with self._lock:
            if record.id in self._records:
                raise ValueError(f'task {record.id!r} already exists')
            if record.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
                raise ValueError(f'a new task starts PENDING or RUNNING, not {record.status.name}')
            stored = _copy(record, history=(Transition(status=record.status, at=self._clock()),), revision=1)
            self._records[record.id] = stored
        return StatusChange(record=stored, old=None, new=stored.status)

    def get(self, task_id: str) -> TaskRecord | None:
        """The task's current snapshot, or `None` if unknown or pruned."""
        return self._records.get(task_id)

    def was_pruned(self, task_id: str) -> str | None:
        """The scope of a task that existed but was dropped by retention (remembered for a while), else `None`."""
        return self._pruned.get(task_id)

    def _current(self, task_id: str) -> TaskRecord:
        try:
            return self._records[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None

    def transition(self, task_id: str, to: TaskStatus, **fields: Any) -> StatusChange:
        """Move a task to `to`, setting `fields` (`result`, `error`, `partial_result`, `question`, `note`, `usage`).

        Leaving `WAITING_FOR_ANSWER` clears the pending question unless `question` is given.

        Raises:
            TaskNotFoundError: unknown id.
            TaskAlreadyFinishedError: the task is already terminal.
            InvalidTransitionError: the state machine does not allow it.
        """
        unknown = set(fields) - _TRANSITION_FIELDS
        if unknown:
            raise TypeError(f'unknown task fields: {sorted(unknown)}')
        with self._lock:
            current = self._current(task_id)
            old = current.status
            if old.is_terminal:
                raise TaskAlreadyFinishedError(task_id, old.value, to.value)
            if not old.can_become(to):
                raise InvalidTransitionError(task_id, old.value, to.value)
            now = self._clock()
            if old is TaskStatus.WAITING_FOR_ANSWER and 'question' not in fields:
                fields['question'] = None
            updated = _copy(
                current,
                status=to,
                history=(*current.history, Transition(status=to, at=now)),
                revision=current.revision + 1,
                **fields,
            )
            self._records[task_id] = updated
            if to.is_terminal:
                self._finished[task_id] = now
        return StatusChange(record=updated, old=old, new=to)

    def update(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change `usage`, `note`, `metadata`, `question` or `partial_result` without a state change."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f'fields that cannot be updated: {sorted(unknown)}')
        with self._lock:
            current = self._current(task_id)
            updated = _copy(current, revision=current.revision + 1, **fields)
            self._records[task_id] = updated
        return updated

    def request_cancel(self, task_id: str, kind: CancelKind, requested_by: str) -> TaskRecord:
        """Record a cancel request; a hard request replaces a soft one, never the other way round.

        Raises:
            TaskNotFoundError: unknown id.
            TaskAlreadyFinishedError: the task is already terminal.
        """
        with self._lock:
            current = self._current(task_id)
            if current.status.is_terminal:
                raise TaskAlreadyFinishedError(task_id, current.status.value, TaskStatus.CANCELLED.value)
            if current.cancel is not None and (current.cancel.kind == 'hard' or current.cancel.kind == kind):
                return current
            updated = _copy(
                current,
                cancel=CancelRequest(kind=kind, requested_by=requested_by, at=self._clock()),
                revision=current.revision + 1,
            )
            self._records[task_id] = updated
        return updated

    def apply(self, record: TaskRecord) -> StatusChange | None:
        """Take in a snapshot of a task written elsewhere, unless the copy here is as new or newer.

        A terminal copy is never replaced by a snapshot that is not terminal, and a task this store already pruned
        is not brought back.

        Returns:
            The status change it makes here (`old` is `None` for a task new to this store), or `None` when the
            status did not change or the snapshot was not taken in.
        """
        with self._lock:
            current = self._records.get(record.id)
            if current is None:
                if record.id in self._pruned:
                    return None
                self._records[record.id] = record
                if record.is_terminal:
                    self._finished[record.id] = self._clock()
                return StatusChange(record=record, old=None, new=record.status)
            if record.revision <= current.revision or (current.is_terminal and record.status is not current.status):
                return None
            self._records[record.id] = record
            if record.status is current.status:
                return None
            if record.is_terminal:
                self._finished[record.id] = self._clock()
            return StatusChange(record=record, old=current.status, new=record.status)

    def list(self, scope: str | None = None, *, active_only: bool = False) -> list[TaskRecord]:
        """Tasks in creation order, optionally only one scope's and only the live ones."""
        with self._lock:
            records = list(self._records.values())
        return [
            r for r in records if (scope is None or r.scope == scope) and not (active_only and r.status.is_terminal)
        ]

    def prune(self) -> list[str]:
        """Drop finished tasks past `max_retained` or older than `retention_seconds`; return their ids."""
        dropped: list[str] = []
        with self._lock:
            now = self._clock()
            while self._finished:
                task_id, finished_at = next(iter(self._finished.items()))
                too_many = len(self._finished) > self.max_retained
                too_old = self.retention_seconds is not None and now - finished_at > self.retention_seconds
                if not (too_many or too_old):
                    break
                del self._finished[task_id]
                record = self._records.pop(task_id)
                self._pruned[task_id] = record.scope
                dropped.append(task_id)
            # Remember pruned ids (bounded) so the model can be told "gone" rather than "unknown".
            while len(self._pruned) > max(self.max_retained, 1000):
                self._pruned.popitem(last=False)
        return dropped
