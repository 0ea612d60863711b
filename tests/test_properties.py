"""Property-based tests: Hypothesis drives the task manager (and the model-facing tools) with random operations.

The state machine starts sync and async tasks whose subagents finish, fail, ask a question or block; it soft- and
hard-cancels them (from the manager's loop and from another thread), answers, releases, waits, reads them through
the tools of a real agent, and closes the manager. After every step the invariants hold: every history is legal,
a task reaches at most one terminal state and keeps it, each scope sees only its own tasks, and once closed nothing
is left running.

Hypothesis's stateful tests are synchronous, so each machine owns one event loop in a blocking portal and runs the
async work of a step with `portal.call`.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import (
    ManagerClosedError,
    SubAgentConfig,
    TaskCancelRequested,
    TaskEvent,
    TaskManager,
    TaskRecord,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents._run import safe_error

from .conftest import Gate, Script, call, child_text
from .test_reliability import (
    asker_model,
    assert_legal_history,
    describe_task,
    is_upstream_lifecycle_leak,
    transition_statuses,
)

pytestmark = pytest.mark.anyio

SCOPES = ('alice', 'bob')
KINDS = ('finish', 'fail', 'ask', 'block')


async def _fail(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raise RuntimeError('the model is down')


def _loop_leftovers() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        t for t in asyncio.all_tasks() if t is not current and not t.done() and 'run_portal' not in repr(t.get_coro())
    ]


class ManagerMachine(RuleBasedStateMachine):
    """Random operations on one `TaskManager`, checked after each step."""

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = anyio.from_thread.start_blocking_portal('asyncio')
        self.portal = self._portal_cm.__enter__()
        self.manager = TaskManager(
            max_concurrent_tasks=2, question_timeout=10, soft_cancel_grace=0.2, hard_cancel_wait=1.0, max_retained=10
        )
        self.toolset = create_subagent_toolset(
            [SubAgentConfig(name='noop', model=child_text('x'))], manager=self.manager
        )
        self.events: list[TaskEvent] = []
        self.portal.call(self._open)
        self._collector = self.portal.start_task_soon(self._collect)
        self.portal.call(self._subscribed)
        self.kind: dict[str, str] = {}
        self.scope: dict[str, str] = {}
        self.gates: dict[str, Gate] = {}
        self.hard_accepted: set[str] = set()
        self.terminal_seen: dict[str, TaskStatus] = {}
        self.closed = False

    # ------------------------------------------------------------------------------------------- loop side

    async def _open(self) -> None:
        await self.manager.__aenter__()

    async def _collect(self) -> None:
        async for event in self.manager.events(max_buffer=100_000):
            self.events.append(event)

    async def _subscribed(self) -> None:
        while self.manager.bus.stats().subscriptions == 0:
            await anyio.sleep(0)

    async def _start(self, kind: str, mode: str, scope: str) -> tuple[str, Gate | None]:
        gate = Gate() if kind == 'block' else None
        model: Any = {
            'finish': child_text('finished'),
            'fail': FunctionModel(_fail),
            'ask': asker_model(),
            'block': gate.model() if gate else None,
        }[kind]
        config = SubAgentConfig(name=kind, model=model, can_ask_questions=kind == 'ask')
        record = await self.manager.start(config, f'{kind} job', scope=scope, mode=mode)  # type: ignore[arg-type]
        if mode == 'sync':  # a sync caller waits for the result (or a question), here briefly
            await self.manager.wait([record.id], timeout=0.2)
        return record.id, gate

    async def _state(self) -> tuple[list[TaskRecord], list[TaskEvent]]:
        return self.manager.list(), list(self.events)

    # ----------------------------------------------------------------------------------------------- rules

    @rule(kind=st.sampled_from(KINDS), mode=st.sampled_from(['sync', 'async']), scope=st.sampled_from(SCOPES))
    def start(self, kind: str, mode: str, scope: str) -> None:
        if self.closed:
            with pytest.raises(ManagerClosedError):
                self.portal.call(self._start, kind, mode, scope)
            return
        task_id, gate = self.portal.call(self._start, kind, mode, scope)
        self.kind[task_id] = kind
        self.scope[task_id] = scope
        if gate is not None:
            self.gates[task_id] = gate
        record = self.manager.get(task_id)
        tally(f'start {kind} {mode}: {record.status.value if record else "already pruned"}')

    def _pick(self, data: st.DataObject) -> str:
        """One of the tasks started so far, or an id nobody has."""
        if not self.kind or data.draw(st.integers(0, 9), label='unknown?') == 0:
            return 'f' * 24
        return data.draw(st.sampled_from(list(self.kind)), label='task')  # in start order: reproducible

    @rule(data=st.data(), hard=st.booleans(), from_thread=st.booleans())
    def cancel(self, data: st.DataObject, hard: bool, from_thread: bool) -> None:
        task_id = self._pick(data)
        before = self.manager.get(task_id)
        method = self.manager.hard_cancel if hard else self.manager.soft_cancel
        # From this (non-loop) thread the manager hands the call to its loop; via the portal it runs on the loop.
        accepted = method(task_id) if from_thread else self.portal.call(method, task_id)
        tally(
            f'{"hard" if hard else "soft"} cancel of a {before.status.value if before else "unknown"} task: {accepted}'
        )
        if before is None or before.is_terminal or self.closed:
            assert accepted is False
        if hard and accepted:
            self.hard_accepted.add(task_id)
            record = self.portal.call(lambda: self.manager.wait_for(task_id, until_question=False, timeout=5))
            assert record.status is TaskStatus.CANCELLED, record

    @rule(data=st.data(), twice=st.booleans())
    def answer(self, data: st.DataObject, twice: bool) -> None:
        task_id = self._pick(data)
        before = self.manager.get(task_id)
        first = self.portal.call(self.manager.answer, task_id, '1999')
        tally(f'answer to a {before.status.value if before else "unknown"} task: {first}')
        if before is None or before.is_terminal or self.closed:
            assert first is False
        if twice:
            assert self.manager.answer(task_id, '2000') is False  # the question is gone, whoever answered it

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.gates:
            task_id = data.draw(st.sampled_from(list(self.gates)), label='gate')
            self.portal.call(self._release, self.gates[task_id])

    @staticmethod
    async def _release(gate: Gate) -> None:
        gate.release.set()

    @rule(data=st.data(), mode=st.sampled_from(['all', 'any']))
    def wait(self, data: st.DataObject, mode: str) -> None:
        if not self.kind:
            return
        drawn = data.draw(st.lists(st.sampled_from(list(self.kind)), min_size=1, max_size=3, unique=True), label='ids')
        ids = [t for t in drawn if self.manager.get(t) is not None]  # retention may have dropped some
        if not ids:
            return
        records = self.portal.call(lambda: self.manager.wait(ids, mode=mode, timeout=0.1))  # type: ignore[arg-type]
        assert [r.id for r in records] == ids

    @rule()
    def let_time_pass(self) -> None:
        self.portal.call(anyio.sleep, 0.02)

    @rule(scope=st.sampled_from(SCOPES), data=st.data())
    def read_through_the_tools(self, scope: str, data: st.DataObject) -> None:
        """The model of one conversation lists its tasks and checks one id, maybe another conversation's."""
        probe = self._pick(data)
        script = Script([[call('list_active_tasks'), call('check_task', task_id=probe)]])

        async def run() -> None:
            await Agent(script.model(), toolsets=[self.toolset]).run('go', conversation_id=scope)

        if self.closed:
            with pytest.raises(ManagerClosedError):
                self.portal.call(run)
            return
        self.portal.call(run)
        listing, checked = script.replies[1]
        own = {t for t, s in self.scope.items() if s == scope}
        if listing != 'No active tasks.':
            count, *lines = listing.splitlines()
            assert count == f'{len(lines)} active task{"s" if len(lines) > 1 else ""}:', listing
            assert {line.split(' ', 1)[0] for line in lines} <= own
        if probe not in own:
            # The reply is the same for a foreign id as for an unknown one; it names only this scope's own live tasks.
            assert checked.startswith(f"No task with ID '{probe}' in this conversation. "), checked
            named = set(re.findall(r'\b[0-9a-f]{24}\b', checked.split(' in this conversation. ', 1)[1]))
            assert named <= own, checked
        else:
            assert checked.startswith(f'Task {probe} '), checked

    @rule()
    def close(self) -> None:
        self.portal.call(self.manager.aclose)  # idempotent
        self.closed = True
        self._check_closed()

    # ------------------------------------------------------------------------------------------ invariants

    @invariant()
    def histories_are_legal_and_terminal_states_final(self) -> None:
        records, events = self.portal.call(self._state)
        for record in records:
            statuses = [t.status for t in record.history]
            assert_legal_history(statuses, record.id)
            if record.is_terminal:
                assert self.terminal_seen.setdefault(record.id, record.status) is record.status
            else:
                assert record.id not in self.terminal_seen, f'{record.id} left its terminal state'
        by_task: dict[str, list[TaskEvent]] = defaultdict(list)
        for event in events:
            by_task[event.task_id].append(event)
        for task_id, task_events in by_task.items():
            terminal = [e for e in task_events if e.is_terminal]
            assert len(terminal) <= 1, task_events
            assert_legal_history(transition_statuses(task_events), task_id)
            if terminal:
                assert self.terminal_seen.setdefault(task_id, terminal[0].status) is terminal[0].status
            cancels = [e for e in task_events if isinstance(e, TaskCancelRequested)]
            assert len(cancels) <= 2  # a soft request, then at most one hard one
        for task_id in self.hard_accepted:
            assert self.terminal_seen.get(task_id, TaskStatus.CANCELLED) is TaskStatus.CANCELLED
        for record in records:  # each ending is one this kind of subagent can have
            kind = self.kind.get(record.id)
            if record.status is TaskStatus.FAILED:
                assert kind == 'fail' and record.error == 'RuntimeError: the model is down', (kind, record.error)
            elif record.status is TaskStatus.COMPLETED:
                expected = {'finish': 'finished', 'block': 'child result'}.get(kind or '', record.result)
                assert kind != 'fail' and record.result == expected, (kind, record.result)
            elif record.status is TaskStatus.CANCELLED:
                assert record.cancel is not None, record

    @invariant()
    def each_scope_sees_only_its_own_tasks(self) -> None:
        for scope in SCOPES:
            records = self.manager.list(scope)
            assert all(r.scope == scope for r in records)
            assert {r.id for r in records} <= {t for t, s in self.scope.items() if s == scope}

    @invariant()
    def nothing_runs_after_close(self) -> None:
        if self.closed:
            assert [r for r in self.manager.list() if not r.is_terminal] == []

    def _check_closed(self) -> None:
        assert [r for r in self.manager.list() if not r.is_terminal] == []
        left = self.portal.call(self._leftovers)
        assert left == [], left
        stats = self.manager.bus.stats()
        assert (stats.mailboxes, stats.subscriptions, stats.pending_replies) == (0, 0, 0), stats

    async def _leftovers(self) -> list[str]:
        await anyio.sleep(0.01)  # the event collector ends with the bus
        left = _loop_leftovers()
        for task in left:
            # The known Pydantic AI leak (a hard cancel landing as a run starts), pinned by
            # test_reliability.test_hard_cancel_as_a_run_starts_leaves_no_orphaned_task: tolerated, and cleaned up.
            if is_upstream_lifecycle_leak(task):
                task.cancel()
        return [describe_task(t) for t in left if not is_upstream_lifecycle_leak(t)]

    def teardown(self) -> None:
        try:
            if not self.closed:
                self.portal.call(self.manager.aclose)
                self.closed = True
                self._check_closed()
            self._collector.result(timeout=5)  # the event stream ended with the manager
        finally:
            self._portal_cm.__exit__(None, None, None)


ManagerMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestManagerMachine = ManagerMachine.TestCase


# --------------------------------------------------------------------------------------- secrets in error texts

_TOKEN = st.text(alphabet='abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789', min_size=12, max_size=40)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    secret=_TOKEN,
    shape=st.sampled_from(['sk-{s}', 'api_key={s}', 'API-KEY: {s}', 'password={s}', 'token: {s}', 'secret={s}']),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_secret_shaped_values_never_reach_the_model(secret: str, shape: str, before: str, after: str) -> None:
    assume(secret not in before + after)
    text = safe_error(RuntimeError(f'{before} {shape.format(s=secret)} {after}'))
    assert secret not in text
    assert '\n' not in text and len(text) <= 506
