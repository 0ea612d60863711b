"""Older finished tasks' records, kept packed: what a reader gets is the record that was kept, whatever the path."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import pytest

from pydantic_ai_subagents._errors import TaskAlreadyFinishedError
from pydantic_ai_subagents._memory_store import HOT_RECORDS, InMemoryTaskStore
from pydantic_ai_subagents._state import (
    CancelRequest,
    TaskRecord,
    TaskStatus,
    TaskUsage,
    Transition,
    pack_record,
    unpack_record,
)

S = TaskStatus


def full_record() -> TaskRecord:
    """A record with every field away from its default."""
    return TaskRecord(
        id='t1',
        subagent='helper',
        description='do a thing',
        mode='sync',
        scope='conv',
        parent_task_id='t0',
        depth=2,
        status=S.CANCELLED,
        history=(
            Transition(status=S.PENDING, at=1.0),
            Transition(status=S.RUNNING, at=2.0),
            Transition(status=S.CANCELLED, at=3.5),
        ),
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        result='r',
        error='e',
        partial_result='half',
        question='q?',
        cancel=CancelRequest(kind='hard', requested_by='model', at=3.0),
        usage=TaskUsage(requests=3, tool_calls=2, input_tokens=100, output_tokens=7),
        note='a note',
        metadata={'k': 'v'},
        owner='manager-1',
        revision=9,
        attempts=2,
        continued_from='t-1',
        messages=('steer one', 'steer two'),
    )


def test_a_packed_record_unpacks_equal_with_its_history_and_times() -> None:
    record = full_record()
    back = unpack_record(pack_record(record))
    assert back == record
    # Fields left out of equality come back too.
    assert [t.timestamp for t in back.history] == [t.timestamp for t in record.history]
    assert back.cancel is not None and record.cancel is not None
    assert back.cancel.timestamp == record.cancel.timestamp
    assert back.status is S.CANCELLED and all(type(t.status) is TaskStatus for t in back.history)
    plain = TaskRecord(id='t2', subagent='helper', description='d', mode='async', scope='conv')
    assert unpack_record(pack_record(plain)) == plain
    assert unpack_record(pack_record(plain)).metadata == {}


def test_a_packed_record_of_plain_values_is_nothing_for_the_collector() -> None:
    plain = pack_record(TaskRecord(id='t2', subagent='helper', description='d', mode='async', scope='conv'))
    with_objects = pack_record(full_record())  # its metadata is a dict: it stays tracked, and unpacks the same
    gc.collect()
    assert not gc.is_tracked(plain)
    assert gc.is_tracked(with_objects)
    assert unpack_record(with_objects) == full_record()


def finished_store(n: int) -> InMemoryTaskStore:
    store = InMemoryTaskStore(max_retained=10 * n)
    for i in range(n):
        task_id = f't{i}'
        store.create(TaskRecord(id=task_id, subagent='packer', description=f'job {i}', mode='async', scope=f's{i % 2}'))
        store.transition(task_id, S.RUNNING)
        store.transition(task_id, S.COMPLETED, result=f'result {i}', usage=TaskUsage(requests=1))
    return store


def test_the_store_keeps_older_finished_records_packed_and_reads_them_back() -> None:
    n = HOT_RECORDS + 40
    store = finished_store(n)
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, TaskRecord) and o.subagent == 'packer']
    assert len(kept) == HOT_RECORDS  # the newest finished ones; the older 40 are plain values
    oldest = store.get('t0')
    assert oldest is not None
    assert (oldest.status, oldest.result, oldest.description, oldest.usage.requests) == (
        S.COMPLETED,
        'result 0',
        'job 0',
        1,
    )
    assert [t.status for t in oldest.history] == [S.PENDING, S.RUNNING, S.COMPLETED]
    assert oldest.revision == 3
    # Listing keeps creation order, by scope, and no packed record is live.
    assert [r.id for r in store.list()] == [f't{i}' for i in range(n)]
    assert [r.id for r in store.list('s1')] == [f't{i}' for i in range(1, n, 2)]
    assert store.list(active_only=True) == []
    assert [r.id for r in store] == [f't{i}' for i in range(n)]


def test_a_packed_record_refuses_a_new_state_and_takes_an_update() -> None:
    store = finished_store(HOT_RECORDS + 1)
    with pytest.raises(TaskAlreadyFinishedError):
        store.transition('t0', S.RUNNING)
    with pytest.raises(TaskAlreadyFinishedError):
        store.request_cancel('t0', 'hard', 'application')
    updated = store.update('t0', note='looked at later')
    assert updated.note == 'looked at later' and updated.revision == 4 and updated.result == 'result 0'
    assert store.get('t0') == updated
    gc.collect()
    kept = [o for o in gc.get_objects() if isinstance(o, TaskRecord) and o.subagent == 'packer' and o.id == 't0']
    assert len(kept) == 1  # `updated` only


def test_a_packed_record_is_pruned_with_its_scope_remembered() -> None:
    store = finished_store(HOT_RECORDS + 10)
    store.max_retained = HOT_RECORDS
    dropped = store.prune()
    assert dropped == [f't{i}' for i in range(10)]
    assert store.get('t0') is None
    assert store.was_pruned('t0') == 's0' and store.was_pruned('t1') == 's1'


def test_a_packed_record_takes_a_later_snapshot_of_its_end_only() -> None:
    store = finished_store(HOT_RECORDS + 1)
    current = store.get('t0')
    assert current is not None
    assert store.apply(TaskRecord(**{**_fields(current), 'status': S.FAILED, 'revision': 9})) is None
    assert store.get('t0') == current
    later = TaskRecord(**{**_fields(current), 'note': 'from elsewhere', 'revision': 9})
    assert store.apply(later) is None  # no status change to report
    assert store.get('t0') == later


def _fields(record: TaskRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in TaskRecord.__dataclass_fields__}


def test_tasks_queued_past_the_newest_are_packed_and_start_as_records() -> None:
    store = InMemoryTaskStore()
    n = HOT_RECORDS + 10
    for i in range(n):
        store.create(TaskRecord(id=f't{i}', subagent='queuer', description=f'job {i}', mode='async', scope='s'))
    store.transition(f't{n - 1}', S.RUNNING)  # a fresh one that started is never packed
    gc.collect()
    assert len([o for o in gc.get_objects() if isinstance(o, TaskRecord) and o.subagent == 'queuer']) == HOT_RECORDS
    queued = store.get('t0')
    assert queued is not None and queued.status is S.PENDING and queued.revision == 1
    assert [r.id for r in store.list(active_only=True)] == [f't{i}' for i in range(n)]
    assert [r.id for r in store.list('other', active_only=True)] == []
    noted = store.update('t0', note='still queued')
    assert store.get('t0') == noted
    started = store.transition('t0', S.RUNNING).record
    assert (started.status, started.note, started.revision) == (S.RUNNING, 'still queued', 3)
    assert [t.status for t in started.history] == [S.PENDING, S.RUNNING]
    assert store.get('t0') is started  # a record object again
    cancelled = store.request_cancel('t1', 'hard', 'application')
    assert cancelled.cancel is not None and cancelled.cancel.kind == 'hard'
    assert store.transition('t1', S.CANCELLED).record.status is S.CANCELLED
    # Another process's later snapshot of a packed queued task is taken in.
    later = TaskRecord(**{**_fields(store.get('t2') or queued), 'status': S.RUNNING, 'revision': 5})
    change = store.apply(later)
    assert change is not None and (change.old, change.new) == (S.PENDING, S.RUNNING)
    assert store.get('t2') == later
