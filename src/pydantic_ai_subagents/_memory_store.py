"""[`InMemoryTaskStore`][pydantic_ai_subagents.InMemoryTaskStore]: the default task store, a dict of records.

The rules it keeps: every write happens under one lock, so a transition is atomic and two threads racing to finish
a task produce one winner and one [`TaskAlreadyFinishedError`][pydantic_ai_subagents.TaskAlreadyFinishedError]; what
it hands out is an immutable [`TaskRecord`][pydantic_ai_subagents.TaskRecord]; live tasks are never pruned.

Finished tasks past the newest `HOT_RECORDS`, and tasks still `PENDING` past the newest `HOT_RECORDS` created, are
kept packed (`pack_record`): plain values the garbage collector does not walk. Reading one gives a new record, equal
to the one kept; a packed task that changes is an object again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import fields as dataclass_fields
from typing import Any

from ._errors import InvalidTransitionError, TaskAlreadyFinishedError, TaskNotFoundError
from ._state import (
    LEGAL,
    PACKED_REVISION,
    PACKED_SCOPE,
    PACKED_STATUS,
    TERMINAL,
    CancelKind,
    CancelRequest,
    PackedRecord,
    StatusChange,
    TaskRecord,
    TaskStatus,
    Transition,
    pack_record,
    unpack_record,
)

__all__ = ('InMemoryTaskStore',)


def _copier(cls: type[TaskRecord]) -> Callable[..., TaskRecord]:
    """A `dataclasses.replace` for `cls`, written out once as one function: the store copies a record on every write.

    Each field is set through its slot's own setter (the class is frozen), from `changes` or from the record, in
    straight-line code: no loop over the fields and no `getattr` per field, so a copy is about half the time of a
    loop that reads each field by name, and two function calls rather than 23. The store checks the names in
    `changes` before it calls this.
    """
    names = [f.name for f in dataclass_fields(cls)]
    scope: dict[str, Any] = {'new': object.__new__, 'cls': cls}
    lines = ['def copy(record, /, **changes):', '    made = new(cls)']
    for i, name in enumerate(names):
        scope[f'set_{i}'] = getattr(cls, name).__set__
        lines.append(f'    set_{i}(made, changes[{name!r}] if {name!r} in changes else record.{name})')
    lines.append('    return made')
    exec('\n'.join(lines), scope)  # the source is made here, from the class's own field names
    copy: Callable[..., TaskRecord] = scope['copy']
    return copy


_copy = _copier(TaskRecord)


HOT_RECORDS = 256
"""How many of the newest finished tasks' records, and of the newest created ones, the store keeps as record
objects; older finished ones, and older ones still `PENDING` (queued behind a concurrency limit), are packed."""
_TERMINAL_VALUES = frozenset(status.value for status in TERMINAL)

_UPDATABLE = frozenset({'usage', 'note', 'metadata', 'question', 'partial_result', 'messages', 'attempts'})
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
        self._records: dict[str, TaskRecord | PackedRecord] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._hot: deque[str] = deque()
        """Finished tasks whose records are still objects, oldest first."""
        self._fresh: deque[str] = deque()
        """The newest created tasks, oldest first: past them, a task still `PENDING` is packed."""
        self._pruned: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TaskRecord]:
        with self._lock:
            records = list(self._records.values())
        return iter([unpack_record(r) if isinstance(r, tuple) else r for r in records])

    def create(self, record: TaskRecord) -> StatusChange:
        """Add a new task; it must be `PENDING` or `RUNNING` and have a fresh id."""
        with self._lock:
            if record.id in self._records:
                raise ValueError(f'task {record.id!r} already exists')
            if record.status not in (TaskStatus.PENDING, TaskStatus.RUNNING):
                raise ValueError(f'a new task starts PENDING or RUNNING, not {record.status.name}')
            stored = _copy(record, history=(Transition(status=record.status, at=self._clock()),), revision=1)
            self._records[record.id] = stored
            fresh = self._fresh
            fresh.append(record.id)
            if len(fresh) > HOT_RECORDS:
                oldest = self._records.get(fresh.popleft())
                if isinstance(oldest, TaskRecord) and oldest.status is TaskStatus.PENDING:
                    self._records[oldest.id] = pack_record(oldest)
        return StatusChange(record=stored, old=None, new=stored.status)

    def get(self, task_id: str) -> TaskRecord | None:
        """The task's current snapshot, or `None` if unknown or pruned."""
        record = self._records.get(task_id)
        # `type() is`, not `isinstance()`: no call on the hot path (a record is never a tuple).
        return unpack_record(record) if type(record) is tuple else record  # pyright: ignore[reportReturnType]

    def was_pruned(self, task_id: str) -> str | None:
        """The scope of a task that existed but was dropped by retention (remembered for a while), else `None`."""
        return self._pruned.get(task_id)

    def _current(self, task_id: str) -> TaskRecord:
        try:
            record = self._records[task_id]
        except KeyError:
            raise TaskNotFoundError(task_id) from None
        return unpack_record(record) if type(record) is tuple else record  # pyright: ignore[reportReturnType]

    def _finish(self, task_id: str, now: float) -> None:
        """Count `task_id` as finished (under the lock), and pack the record that leaves the newest finished."""
        self._finished[task_id] = now
        hot = self._hot
        hot.append(task_id)
        if len(hot) > HOT_RECORDS:
            oldest = hot.popleft()
            record = self._records.get(oldest)
            if isinstance(record, TaskRecord):
                self._records[oldest] = pack_record(record)

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
            if old in TERMINAL:
                raise TaskAlreadyFinishedError(task_id, old.value, to.value)
            if to not in LEGAL[old]:
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
            if to in TERMINAL:
                self._finish(task_id, now)
        return StatusChange(record=updated, old=old, new=to)

    def update(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change `usage`, `note`, `metadata`, `question`, `partial_result`, `messages` or `attempts`, not the state."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise TypeError(f'fields that cannot be updated: {sorted(unknown)}')
        with self._lock:
            current = self._current(task_id)
            updated = _copy(current, revision=current.revision + 1, **fields)
            packed = type(self._records[task_id]) is tuple
            self._records[task_id] = pack_record(updated) if packed else updated
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
                    self._finish(record.id, self._clock())
                return StatusChange(record=record, old=None, new=record.status)
            if isinstance(current, tuple):
                if current[PACKED_STATUS] in _TERMINAL_VALUES:  # only a later write of the same end is taken in
                    if record.revision > current[PACKED_REVISION] and record.status.value == current[PACKED_STATUS]:
                        self._records[record.id] = pack_record(record)
                    return None
                current = unpack_record(current)
            if record.revision <= current.revision or (current.is_terminal and record.status is not current.status):
                return None
            self._records[record.id] = record
            if record.status is current.status:
                return None
            if record.is_terminal:
                self._finish(record.id, self._clock())
            return StatusChange(record=record, old=current.status, new=record.status)

    def list(self, scope: str | None = None, *, active_only: bool = False) -> list[TaskRecord]:
        """Tasks in creation order, optionally only one scope's and only the live ones."""
        with self._lock:
            records = list(self._records.values())
        found: list[TaskRecord] = []
        for r in records:
            if isinstance(r, tuple):
                if (scope is not None and r[PACKED_SCOPE] != scope) or (
                    active_only and r[PACKED_STATUS] in _TERMINAL_VALUES
                ):
                    continue
                found.append(unpack_record(r))
            elif (scope is None or r.scope == scope) and not (active_only and r.status in TERMINAL):
                found.append(r)
        return found

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
                self._pruned[task_id] = record[PACKED_SCOPE] if isinstance(record, tuple) else record.scope
                dropped.append(task_id)
            # Remember pruned ids (bounded) so the model can be told "gone" rather than "unknown".
            while len(self._pruned) > max(self.max_retained, 1000):
                self._pruned.popitem(last=False)
        return dropped
