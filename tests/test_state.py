"""Tests for the task state machine and the in-memory task store."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from pydantic_ai_subagents._errors import InvalidTransitionError, TaskAlreadyFinishedError, TaskNotFoundError
from pydantic_ai_subagents._memory_store import InMemoryTaskStore
from pydantic_ai_subagents._state import (
    CancelRequest,
    SharedTaskStore,
    StatusChange,
    TaskRecord,
    TaskStatus,
    TaskStore,
    TaskUsage,
    Transition,
)

S = TaskStatus

LEGAL: dict[TaskStatus, set[TaskStatus]] = {
    S.PENDING: {S.RUNNING, S.CANCELLED, S.FAILED},
    S.RUNNING: {S.WAITING_FOR_ANSWER, S.COMPLETED, S.FAILED, S.CANCELLED},
    S.WAITING_FOR_ANSWER: {S.RUNNING, S.CANCELLED, S.FAILED},
    S.COMPLETED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}
TERMINAL = {S.COMPLETED, S.FAILED, S.CANCELLED}
LEGAL_PAIRS = [(a, b) for a in S for b in S if b in LEGAL[a]]
ILLEGAL_PAIRS = [(a, b) for a in S for b in S if b not in LEGAL[a]]

# The shortest legal route from a fresh PENDING task to each state.
ROUTE: dict[TaskStatus, tuple[TaskStatus, ...]] = {
    S.PENDING: (),
    S.RUNNING: (S.RUNNING,),
    S.WAITING_FOR_ANSWER: (S.RUNNING, S.WAITING_FOR_ANSWER),
    S.COMPLETED: (S.RUNNING, S.COMPLETED),
    S.FAILED: (S.RUNNING, S.FAILED),
    S.CANCELLED: (S.CANCELLED,),
}


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def new_record(task_id: str, *, scope: str = 'conv-1', status: TaskStatus = S.PENDING) -> TaskRecord:
    return TaskRecord(id=task_id, subagent='helper', description='do a thing', mode='async', scope=scope, status=status)


def store_with(
    task_id: str, status: TaskStatus, *, clock: FakeClock | None = None, **store_kwargs: Any
) -> InMemoryTaskStore:
    """A store holding one task that was driven to `status` along a legal route."""
    store = InMemoryTaskStore(clock=clock or FakeClock(), **store_kwargs)
    store.create(new_record(task_id))
    for step in ROUTE[status]:
        store.transition(task_id, step)
    return store


def drive(store: InMemoryTaskStore, task_id: str, status: TaskStatus, *, scope: str = 'conv-1') -> None:
    store.create(new_record(task_id, scope=scope))
    for step in ROUTE[status]:
        store.transition(task_id, step)


# --- the transition table ---------------------------------------------------------------------------------------


def test_table_sizes() -> None:
    assert len(LEGAL_PAIRS) == 10
    assert len(ILLEGAL_PAIRS) == 36 - 10


def test_can_become_matches_table() -> None:
    for a, b in itertools.product(S, S):
        assert a.can_become(b) is (b in LEGAL[a]), (a, b)


@pytest.mark.parametrize(('old', 'new'), LEGAL_PAIRS, ids=[f'{a.value}->{b.value}' for a, b in LEGAL_PAIRS])
def test_legal_transition_succeeds(old: TaskStatus, new: TaskStatus) -> None:
    store = store_with('t1', old)
    change = store.transition('t1', new)
    assert change.old is old
    assert change.new is new
    assert change.record.status is new
    assert store.get('t1') == change.record
    assert change.record.history[-1].status is new
    assert [t.status for t in change.record.history] == [S.PENDING, *ROUTE[old], new]


@pytest.mark.parametrize(('old', 'new'), ILLEGAL_PAIRS, ids=[f'{a.value}->{b.value}' for a, b in ILLEGAL_PAIRS])
def test_illegal_transition_raises(old: TaskStatus, new: TaskStatus) -> None:
    store = store_with('task-xyz', old)
    before = store.get('task-xyz')
    with pytest.raises(InvalidTransitionError) as exc_info:
        store.transition('task-xyz', new, note='should not stick')
    err = exc_info.value
    assert err.task_id == 'task-xyz'
    assert err.current == old.value
    assert err.requested == new.value
    message = str(err)
    assert 'task-xyz' in message
    assert repr(old.value) in message
    assert repr(new.value) in message
    if old in TERMINAL:
        assert type(err) is TaskAlreadyFinishedError
        assert 'already finished' in message
    else:
        assert type(err) is InvalidTransitionError
    # A refused transition changes nothing.
    assert store.get('task-xyz') is before


def test_error_hierarchy() -> None:
    assert issubclass(TaskAlreadyFinishedError, InvalidTransitionError)
    assert issubclass(TaskNotFoundError, LookupError)


def test_transition_unknown_task() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    with pytest.raises(TaskNotFoundError) as exc_info:
        store.transition('nope', S.RUNNING)
    assert exc_info.value.task_id == 'nope'
    assert 'nope' in str(exc_info.value)


# --- TaskStatus ---------------------------------------------------------------------------------------------------


def test_status_values() -> None:
    assert [s.value for s in S] == ['pending', 'running', 'waiting_for_answer', 'completed', 'failed', 'cancelled']
    assert S('waiting_for_answer') is S.WAITING_FOR_ANSWER
    assert S.RUNNING == 'running'


@pytest.mark.parametrize('status', list(S), ids=[s.value for s in S])
def test_is_terminal(status: TaskStatus) -> None:
    assert status.is_terminal is (status in TERMINAL)
    assert new_record('x', status=status).is_terminal is (status in TERMINAL)


# --- StatusChange, history and snapshots --------------------------------------------------------------------------


def test_create_reports_creation() -> None:
    clock = FakeClock(5.0)
    store = InMemoryTaskStore(clock=clock)
    change = store.create(new_record('a'))
    assert change.old is None
    assert change.new is S.PENDING
    assert change.record.history == (Transition(status=S.PENDING, at=5.0),)

    running = store.create(new_record('b', status=S.RUNNING))
    assert running.old is None
    assert running.new is S.RUNNING
    assert [t.status for t in running.record.history] == [S.RUNNING]


def test_create_ignores_supplied_history() -> None:
    store = InMemoryTaskStore(clock=FakeClock(1.0))
    record = dataclasses.replace(new_record('a'), history=(Transition(status=S.COMPLETED, at=0.0),))
    assert store.create(record).record.history == (Transition(status=S.PENDING, at=1.0),)


def test_create_rejects_duplicates_and_terminal_states() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    store.create(new_record('a'))
    with pytest.raises(ValueError, match='already exists'):
        store.create(new_record('a'))
    for status in (S.WAITING_FOR_ANSWER, *TERMINAL):
        with pytest.raises(ValueError, match='starts PENDING or RUNNING'):
            store.create(new_record(f'new-{status.value}', status=status))


def test_negative_max_retained_rejected() -> None:
    with pytest.raises(ValueError):
        InMemoryTaskStore(max_retained=-1)


def test_history_grows_with_monotonic_times() -> None:
    clock = FakeClock(0.0)
    store = InMemoryTaskStore(clock=clock)
    store.create(new_record('t'))
    steps = [S.RUNNING, S.WAITING_FOR_ANSWER, S.RUNNING, S.WAITING_FOR_ANSWER, S.RUNNING, S.COMPLETED]
    advances = [1.0, 0.0, 2.5, 0.0, 0.25, 3.0]
    for n, (step, dt) in enumerate(zip(steps, advances, strict=True), start=2):
        clock.advance(dt)
        change = store.transition('t', step)
        assert len(change.record.history) == n
        assert change.record.history[-1] == Transition(status=step, at=clock.now)
    history = store.get('t').history  # type: ignore[union-attr]
    times = [t.at for t in history]
    assert times == sorted(times)
    assert [t.status for t in history] == [S.PENDING, *steps]


def test_record_time_properties() -> None:
    clock = FakeClock(10.0)
    store = InMemoryTaskStore(clock=clock)
    store.create(new_record('t'))
    record = store.get('t')
    assert record is not None
    assert record.started_at is None
    assert record.finished_at is None
    assert record.elapsed(now=12.0) == 2.0
    clock.advance(1.0)
    store.transition('t', S.RUNNING)
    clock.advance(4.0)
    record = store.transition('t', S.COMPLETED, result='ok').record
    assert record.started_at == 11.0
    assert record.finished_at == 15.0
    assert record.elapsed(now=1000.0) == 4.0
    assert new_record('blank').elapsed() == 0.0


def test_elapsed_with_clock_at_zero() -> None:
    # A fake clock may well start at zero; a task that started and finished at 0.0 has run for no time at all.
    clock = FakeClock(0.0)
    store = InMemoryTaskStore(clock=clock)
    store.create(new_record('t', status=S.RUNNING))
    record = store.transition('t', S.COMPLETED).record
    assert record.started_at == 0.0
    assert record.finished_at == 0.0
    assert record.elapsed(now=50.0) == 0.0
    assert record.elapsed() == 0.0


def test_snapshots_are_immutable() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    change = store.create(new_record('t'))
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.record.status = S.RUNNING  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.new = S.RUNNING  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        change.record.history[0].at = 0.0  # type: ignore[misc]
    cancelled = store.request_cancel('t', 'soft', 'model')
    assert cancelled.cancel is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cancelled.cancel.kind = 'hard'  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        TaskUsage().requests = 3  # type: ignore[misc]


def test_old_snapshot_does_not_change() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    first = store.create(new_record('t')).record
    copy = dataclasses.replace(first)
    store.transition('t', S.RUNNING)
    store.update('t', note='hello', usage=TaskUsage(requests=1))
    store.request_cancel('t', 'hard', 'application')
    store.transition('t', S.CANCELLED, partial_result='half')
    assert first == copy
    assert first.status is S.PENDING
    assert len(first.history) == 1
    assert first.note is None
    assert first.cancel is None
    assert first.partial_result is None
    assert store.get('t') != first


def test_status_change_is_a_frozen_dataclass() -> None:
    record = new_record('t')
    change = StatusChange(record=record, old=S.PENDING, new=S.RUNNING)
    assert dataclasses.is_dataclass(change)
    assert change.old is S.PENDING
    assert change.new is S.RUNNING


# --- fields --------------------------------------------------------------------------------------------------------


def test_transition_sets_result_and_usage() -> None:
    store = store_with('t', S.RUNNING)
    usage = TaskUsage(requests=2, tool_calls=1, input_tokens=10, output_tokens=5)
    record = store.transition('t', S.COMPLETED, result={'answer': 42}, usage=usage, note='fine').record
    assert record.result == {'answer': 42}
    assert record.usage == usage
    assert record.usage.total_tokens == 15
    assert record.note == 'fine'
    assert record.error is None


def test_transition_sets_error() -> None:
    store = store_with('t', S.RUNNING)
    record = store.transition('t', S.FAILED, error='the model gave up').record
    assert record.error == 'the model gave up'
    assert record.result is None


def test_transition_sets_partial_result() -> None:
    store = store_with('t', S.RUNNING)
    record = store.transition('t', S.CANCELLED, partial_result='got halfway').record
    assert record.partial_result == 'got halfway'


def test_question_set_and_cleared() -> None:
    store = store_with('t', S.RUNNING)
    record = store.transition('t', S.WAITING_FOR_ANSWER, question='which file?').record
    assert record.question == 'which file?'
    assert store.transition('t', S.RUNNING).record.question is None

    store.transition('t', S.WAITING_FOR_ANSWER, question='second?')
    # An explicit question when leaving wins over the automatic clearing.
    assert store.transition('t', S.RUNNING, question='kept').record.question == 'kept'


@pytest.mark.parametrize('leave_to', sorted(LEGAL[S.WAITING_FOR_ANSWER]), ids=lambda s: s.value)
def test_leaving_waiting_clears_question(leave_to: TaskStatus) -> None:
    store = store_with('t', S.RUNNING)
    store.transition('t', S.WAITING_FOR_ANSWER, question='why?')
    assert store.transition('t', leave_to).record.question is None


def test_transition_rejects_unknown_fields() -> None:
    store = store_with('t', S.RUNNING)
    before = store.get('t')
    with pytest.raises(TypeError, match='bogus'):
        store.transition('t', S.COMPLETED, bogus=1)
    for name in ('metadata', 'status', 'history', 'cancel', 'id', 'scope'):
        with pytest.raises(TypeError):
            store.transition('t', S.COMPLETED, **{name: None})
    assert store.get('t') is before


def test_update_allowed_fields() -> None:
    store = store_with('t', S.RUNNING)
    usage = TaskUsage(requests=1)
    record = store.update('t', usage=usage, note='n', metadata={'k': 'v'}, question='q?', partial_result='some of it')
    assert record.usage == usage
    assert record.note == 'n'
    assert record.metadata == {'k': 'v'}
    assert record.question == 'q?'
    assert record.partial_result == 'some of it'
    assert record.status is S.RUNNING
    assert len(record.history) == 2
    assert store.get('t') is record


@pytest.mark.parametrize('name', ['status', 'result', 'error', 'history', 'cancel', 'id', 'scope', 'nonsense'])
def test_update_rejects_other_fields(name: str) -> None:
    store = store_with('t', S.RUNNING)
    before = store.get('t')
    with pytest.raises(TypeError):
        store.update('t', **{name: None})
    assert store.get('t') is before


def test_update_unknown_task() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    with pytest.raises(TaskNotFoundError):
        store.update('missing', note='x')


# --- cancel requests ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('status', [S.PENDING, S.RUNNING, S.WAITING_FOR_ANSWER], ids=lambda s: s.value)
def test_soft_cancel_recorded(status: TaskStatus) -> None:
    clock = FakeClock(7.0)
    store = store_with('t', status, clock=clock)
    record = store.request_cancel('t', 'soft', 'model')
    assert record.cancel == CancelRequest(kind='soft', requested_by='model', at=7.0)
    assert record.status is status  # a request is not a transition
    assert store.get('t') is record


def test_hard_replaces_soft() -> None:
    clock = FakeClock(1.0)
    store = store_with('t', S.RUNNING, clock=clock)
    store.request_cancel('t', 'soft', 'model')
    clock.advance(2.0)
    record = store.request_cancel('t', 'hard', 'timeout')
    assert record.cancel == CancelRequest(kind='hard', requested_by='timeout', at=3.0)


def test_soft_after_hard_keeps_hard() -> None:
    clock = FakeClock(1.0)
    store = store_with('t', S.RUNNING, clock=clock)
    hard = store.request_cancel('t', 'hard', 'application')
    clock.advance(1.0)
    record = store.request_cancel('t', 'soft', 'model')
    assert record.cancel == CancelRequest(kind='hard', requested_by='application', at=1.0)
    assert record is hard


def test_repeated_request_keeps_first() -> None:
    clock = FakeClock(1.0)
    store = store_with('t', S.RUNNING, clock=clock)
    store.request_cancel('t', 'soft', 'model')
    clock.advance(1.0)
    assert store.request_cancel('t', 'soft', 'parent').cancel == CancelRequest(
        kind='soft', requested_by='model', at=1.0
    )


@pytest.mark.parametrize('status', sorted(TERMINAL), ids=lambda s: s.value)
def test_cancel_on_finished_task(status: TaskStatus) -> None:
    store = store_with('t', status)
    before = store.get('t')
    with pytest.raises(TaskAlreadyFinishedError) as exc_info:
        store.request_cancel('t', 'hard', 'application')
    assert exc_info.value.task_id == 't'
    assert exc_info.value.current == status.value
    assert exc_info.value.requested == 'cancelled'
    assert store.get('t') is before


def test_cancel_unknown_task() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    with pytest.raises(TaskNotFoundError):
        store.request_cancel('ghost', 'soft', 'model')


# --- listing and retention ----------------------------------------------------------------------------------------


def test_list_by_scope_and_activity() -> None:
    store = InMemoryTaskStore(clock=FakeClock())
    drive(store, 'a1', S.RUNNING, scope='a')
    drive(store, 'b1', S.PENDING, scope='b')
    drive(store, 'a2', S.COMPLETED, scope='a')
    drive(store, 'a3', S.WAITING_FOR_ANSWER, scope='a')
    drive(store, 'b2', S.FAILED, scope='b')

    assert [r.id for r in store.list()] == ['a1', 'b1', 'a2', 'a3', 'b2']
    assert [r.id for r in store.list('a')] == ['a1', 'a2', 'a3']
    assert [r.id for r in store.list('a', active_only=True)] == ['a1', 'a3']
    assert [r.id for r in store.list('b', active_only=True)] == ['b1']
    assert [r.id for r in store.list(active_only=True)] == ['a1', 'b1', 'a3']
    assert store.list('nobody') == []
    assert len(store) == 5
    assert [r.id for r in store] == ['a1', 'b1', 'a2', 'a3', 'b2']


def test_prune_drops_oldest_finished_first() -> None:
    clock = FakeClock(0.0)
    store = InMemoryTaskStore(clock=clock, max_retained=2, retention_seconds=None)
    for name in ('a', 'b', 'c', 'd', 'live1', 'live2'):
        store.create(new_record(name, status=S.RUNNING))
    # Finish in an order that differs from creation order.
    for name in ('c', 'a', 'd', 'b'):
        clock.advance(1.0)
        store.transition(name, S.COMPLETED)

    assert store.prune() == ['c', 'a']
    assert {r.id for r in store.list()} == {'b', 'd', 'live1', 'live2'}
    assert store.get('c') is None
    assert store.prune() == []


def test_prune_never_drops_live_tasks() -> None:
    store = InMemoryTaskStore(clock=FakeClock(), max_retained=0, retention_seconds=0.0)
    drive(store, 'p', S.PENDING)
    drive(store, 'r', S.RUNNING)
    drive(store, 'w', S.WAITING_FOR_ANSWER)
    drive(store, 'done', S.COMPLETED)
    assert store.prune() == ['done']
    assert [r.id for r in store.list()] == ['p', 'r', 'w']


def test_prune_by_age() -> None:
    clock = FakeClock(0.0)
    store = InMemoryTaskStore(clock=clock, max_retained=100, retention_seconds=10.0)
    drive(store, 'old', S.COMPLETED)
    clock.advance(5.0)
    drive(store, 'newer', S.FAILED)
    drive(store, 'live', S.RUNNING)

    clock.advance(5.0)  # 'old' is exactly 10 s old: kept
    assert store.prune() == []
    clock.advance(0.5)
    assert store.prune() == ['old']
    clock.advance(5.0)
    assert store.prune() == ['newer']
    clock.advance(1000.0)
    assert store.prune() == []
    assert [r.id for r in store.list()] == ['live']


def test_was_pruned_reports_scope() -> None:
    store = InMemoryTaskStore(clock=FakeClock(), max_retained=0)
    drive(store, 'gone', S.CANCELLED, scope='conv-9')
    drive(store, 'alive', S.RUNNING, scope='conv-9')
    assert store.was_pruned('gone') is None
    assert store.prune() == ['gone']
    assert store.was_pruned('gone') == 'conv-9'
    assert store.was_pruned('alive') is None
    assert store.was_pruned('never-existed') is None
    assert store.get('gone') is None
    with pytest.raises(TaskNotFoundError):
        store.transition('gone', S.RUNNING)


def _shared_store_class(missing: str | None = None) -> type:
    """A class with every member of `SharedTaskStore` but `missing`, each refusing to be used."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError('only the shape of this class is checked')

    methods = ('create', 'get', 'was_pruned', 'transition', 'update', 'request_cancel', 'list', 'prune')
    methods += ('register_owner', 'unregister_owner', 'apply', 'orphans', 'owners_alive', 'refresh', 'submit')
    members: dict[str, object] = dict.fromkeys(methods, refuse)
    members['heartbeat_interval'] = 0.5
    members.pop(missing or '', None)
    return type('FakeSharedStore', (), members)


@pytest.mark.parametrize('member', ['was_pruned', 'heartbeat_interval'])
def test_the_store_protocols_include_what_the_manager_asks_for(member: str) -> None:
    assert isinstance(_shared_store_class()(), SharedTaskStore)
    assert not isinstance(_shared_store_class(missing=member)(), SharedTaskStore)


def test_the_in_memory_store_answers_was_pruned_through_the_protocol() -> None:
    in_memory = InMemoryTaskStore(clock=FakeClock(), max_retained=0)
    store: TaskStore = in_memory
    drive(in_memory, 'gone', S.COMPLETED, scope='conv-3')
    assert store.was_pruned('gone') is None
    store.prune()
    assert store.was_pruned('gone') == 'conv-3'
    assert not isinstance(in_memory, SharedTaskStore)


# --- threads --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('round_', range(10))
def test_racing_threads_one_winner(round_: int) -> None:
    store = store_with('race', S.RUNNING)
    targets = [S.COMPLETED, S.FAILED, S.CANCELLED] * 4
    barrier = threading.Barrier(len(targets))
    winners: list[TaskStatus] = []
    losers: list[BaseException] = []
    lock = threading.Lock()

    def finish(to: TaskStatus) -> None:
        barrier.wait()
        try:
            store.transition('race', to)
        except BaseException as exc:
            with lock:
                losers.append(exc)
        else:
            with lock:
                winners.append(to)

    threads = [threading.Thread(target=finish, args=(to,)) for to in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(winners) == 1
    assert len(losers) == len(targets) - 1
    assert all(type(exc) is TaskAlreadyFinishedError for exc in losers)
    assert all(exc.current == winners[0].value for exc in losers)  # type: ignore[attr-defined]
    record = store.get('race')
    assert record is not None
    assert record.status is winners[0]
    terminal_entries = [t for t in record.history if t.status.is_terminal]
    assert terminal_entries == [record.history[-1]]
    assert [t.status for t in record.history] == [S.PENDING, S.RUNNING, winners[0]]


# --- stateful property test ------------------------------------------------------------------------------------------

SCOPES = ('conv-a', 'conv-b', 'conv-c')
MAX_RETAINED = 2
RETENTION_SECONDS = 10.0
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        'result': st.integers(),
        'error': st.text(max_size=5),
        'question': st.none() | st.text(max_size=5),
        'note': st.text(max_size=5),
    },
)
STEP = st.sampled_from([0.0, 0.5, 3.0])


class TaskStoreMachine(RuleBasedStateMachine):
    """Drives an `InMemoryTaskStore` at random and checks it against a small model."""

    tasks = Bundle('tasks')

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.store = InMemoryTaskStore(clock=self.clock, max_retained=MAX_RETAINED, retention_seconds=RETENTION_SECONDS)
        self.counter = 0
        self.scope_of: dict[str, str] = {}
        self.created_as: dict[str, TaskStatus] = {}
        self.terminal: dict[str, TaskStatus] = {}
        self.pruned: set[str] = set()
        self.just_pruned = False

    def _create(self, scope: str, status: TaskStatus) -> str:
        self.counter += 1
        task_id = f'task-{self.counter}'
        change = self.store.create(new_record(task_id, scope=scope, status=status))
        assert change.old is None
        assert change.new is status
        self.scope_of[task_id] = scope
        self.created_as[task_id] = status
        return task_id

    def _apply(self, task_id: str, to: TaskStatus, fields: dict[str, Any]) -> None:
        """Ask the store for a transition and check the outcome against the model, whether accepted or not."""
        before = self.store.get(task_id)
        if before is None:
            assert task_id in self.pruned
            with pytest.raises(TaskNotFoundError):
                self.store.transition(task_id, to, **fields)
            return
        try:
            change = self.store.transition(task_id, to, **fields)
        except TaskAlreadyFinishedError:
            assert before.status.is_terminal
            assert self.terminal[task_id] is before.status
            assert self.store.get(task_id) is before
        except InvalidTransitionError:
            assert not before.status.is_terminal
            assert to not in LEGAL[before.status]
            assert self.store.get(task_id) is before
        else:
            assert to in LEGAL[before.status]
            assert task_id not in self.terminal
            assert change.old is before.status
            assert change.new is to
            after = self.store.get(task_id)
            assert after is change.record
            assert after.history == (*before.history, Transition(status=to, at=self.clock.now))
            for name, value in fields.items():
                assert getattr(after, name) == value
            if before.status is S.WAITING_FOR_ANSWER and 'question' not in fields:
                assert after.question is None
            if to.is_terminal:
                self.terminal[task_id] = to
                self.just_pruned = False

    @initialize(target=tasks, scope=st.sampled_from(SCOPES))
    def seed(self, scope: str) -> str:
        return self._create(scope, S.PENDING)

    @rule(target=tasks, scope=st.sampled_from(SCOPES), status=st.sampled_from([S.PENDING, S.RUNNING]))
    def create(self, scope: str, status: TaskStatus) -> str:
        return self._create(scope, status)

    @rule(task_id=tasks, to=st.sampled_from(list(S)), fields=FIELDS, dt=STEP)
    def any_transition(self, task_id: str, to: TaskStatus, fields: dict[str, Any], dt: float) -> None:
        """A transition to any state, legal or not."""
        self.clock.advance(dt)
        self._apply(task_id, to, fields)

    @rule(task_id=tasks, data=st.data(), fields=FIELDS, dt=STEP)
    def legal_transition(self, task_id: str, data: st.DataObject, fields: dict[str, Any], dt: float) -> None:
        """A transition the state machine allows, so that tasks get deep into their lives."""
        record = self.store.get(task_id)
        if record is None or record.is_terminal:
            return
        to = data.draw(st.sampled_from(sorted(LEGAL[record.status], key=list(S).index)))
        self.clock.advance(dt)
        self._apply(task_id, to, fields)

    @rule(task_id=tasks, question=st.text(min_size=1, max_size=5))
    def ask(self, task_id: str, question: str) -> None:
        """A running task asks its parent something."""
        record = self.store.get(task_id)
        if record is not None and record.status is S.RUNNING:
            self._apply(task_id, S.WAITING_FOR_ANSWER, {'question': question})
            assert self.store.get(task_id).question == question  # type: ignore[union-attr]

    @rule(task_id=tasks, to=st.sampled_from(sorted(TERMINAL, key=list(S).index)))
    def finish(self, task_id: str, to: TaskStatus) -> None:
        """Take a live task to a terminal state along a legal route, so finished tasks pile up."""
        record = self.store.get(task_id)
        if record is None or record.is_terminal:
            return
        if to not in LEGAL[record.status]:
            self.clock.advance(0.5)
            self._apply(task_id, S.RUNNING, {})
        self.clock.advance(0.5)
        self._apply(task_id, to, {})
        assert self.store.get(task_id).status is to  # type: ignore[union-attr]

    @rule()
    def unknown_task(self) -> None:
        with pytest.raises(TaskNotFoundError):
            self.store.transition('no-such-task', S.RUNNING)
        with pytest.raises(TaskNotFoundError):
            self.store.request_cancel('no-such-task', 'soft', 'model')
        with pytest.raises(TaskNotFoundError):
            self.store.update('no-such-task', note='x')
        assert self.store.was_pruned('no-such-task') is None

    @rule(
        task_id=tasks,
        kind=st.sampled_from(['soft', 'hard']),
        by=st.sampled_from(['model', 'application', 'timeout']),
    )
    def request_cancel(self, task_id: str, kind: Any, by: str) -> None:
        before = self.store.get(task_id)
        if before is None:
            with pytest.raises(TaskNotFoundError):
                self.store.request_cancel(task_id, kind, by)
            return
        if before.status.is_terminal:
            with pytest.raises(TaskAlreadyFinishedError):
                self.store.request_cancel(task_id, kind, by)
            assert self.store.get(task_id) is before
            return
        after = self.store.request_cancel(task_id, kind, by)
        assert after.status is before.status
        assert after.history == before.history
        assert after.cancel is not None
        if before.cancel is not None and before.cancel.kind == 'hard':
            assert after.cancel == before.cancel
        elif kind == 'hard':
            assert after.cancel.kind == 'hard'
        else:
            assert after.cancel.kind == 'soft'

    @rule(task_id=tasks, note=st.text(max_size=5), requests=st.integers(0, 9))
    def update(self, task_id: str, note: str, requests: int) -> None:
        before = self.store.get(task_id)
        if before is None:
            with pytest.raises(TaskNotFoundError):
                self.store.update(task_id, note=note)
            return
        with pytest.raises(TypeError):
            self.store.update(task_id, status=S.COMPLETED)
        assert self.store.get(task_id) is before
        after = self.store.update(task_id, note=note, usage=TaskUsage(requests=requests))
        assert after.note == note
        assert after.usage.requests == requests
        assert after.status is before.status
        assert after.history == before.history

    @rule(dt=st.sampled_from([1.0, 4.0, 15.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule()
    def prune(self) -> None:
        live_before = {r.id for r in self.store.list(active_only=True)}
        dropped = self.store.prune()
        assert len(dropped) == len(set(dropped))
        for task_id in dropped:
            assert task_id in self.terminal
            assert task_id not in live_before
            assert self.store.get(task_id) is None
            assert self.store.was_pruned(task_id) == self.scope_of[task_id]
        self.pruned.update(dropped)
        self.just_pruned = True
        finished = [r for r in self.store.list() if r.is_terminal]
        assert len(finished) <= MAX_RETAINED
        for record in finished:
            assert record.finished_at is not None
            assert self.clock.now - record.finished_at <= RETENTION_SECONDS

    @invariant()
    def histories_are_legal(self) -> None:
        for record in self.store.list():
            history = record.history
            assert history
            assert history[0].status is self.created_as[record.id]
            for prev, nxt in itertools.pairwise(history):
                assert nxt.status in LEGAL[prev.status], (prev, nxt)
                assert prev.at <= nxt.at
            assert history[-1].status is record.status
            terminal_positions = [i for i, t in enumerate(history) if t.status.is_terminal]
            assert terminal_positions in ([], [len(history) - 1])

    @invariant()
    def terminal_tasks_stay_put(self) -> None:
        for task_id, status in self.terminal.items():
            record = self.store.get(task_id)
            if record is None:
                assert task_id in self.pruned
                assert self.store.was_pruned(task_id) == self.scope_of[task_id]
            else:
                assert record.status is status
                assert len([t for t in record.history if t.status.is_terminal]) == 1

    @invariant()
    def live_tasks_are_never_pruned(self) -> None:
        for task_id in self.scope_of:
            if task_id not in self.terminal:
                record = self.store.get(task_id)
                assert record is not None
                assert not record.is_terminal
                assert task_id not in self.pruned
                assert self.store.was_pruned(task_id) is None

    @invariant()
    def listing_respects_scope(self) -> None:
        for scope in SCOPES:
            listed = self.store.list(scope)
            assert all(r.scope == scope for r in listed)
            expected = {t for t, s in self.scope_of.items() if s == scope and t not in self.pruned}
            assert {r.id for r in listed} == expected
            active = self.store.list(scope, active_only=True)
            assert {r.id for r in active} == {t for t in expected if t not in self.terminal}
        assert len(self.store) == len(self.scope_of) - len(self.pruned)

    @invariant()
    def retention_holds_after_prune(self) -> None:
        if self.just_pruned:
            assert sum(1 for r in self.store.list() if r.is_terminal) <= MAX_RETAINED


TaskStoreMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None, database=None)
TestTaskStoreMachine = TaskStoreMachine.TestCase
