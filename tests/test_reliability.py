"""Reliability: every test here tries to break one property the library promises.

- Nothing is orphaned: closing the manager leaves no asyncio task, no open mailbox or subscription and no live record;
  every task has exactly one terminal state and exactly one terminal event (checked after every test by `audited`).
- Nothing is lost: a result stays retrievable until retention drops it; every kind of failure ends `FAILED` with a
  clear, secret-free error and the parent run goes on.
- Load, races, isolation between conversations and the limits a model cannot get around.

Tests marked `xfail(strict=True)` pin down bugs: each reason names the bug and where it is (in `src/`, or upstream
in Pydantic AI when the reason says so). Tests marked "Regression" pinned bugs that have been fixed since.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from itertools import pairwise
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import AbstractToolset, DynamicToolset, FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    ManagerClosedError,
    SubAgentConfig,
    SubAgentToolset,
    TaskCancelRequested,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskManager,
    TaskQuestionAsked,
    TaskStarted,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import Gate, Script, call, child_text, leftover_tasks, sync_reply, task_id_from

pytestmark = pytest.mark.anyio

# ----------------------------------------------------------------------------------------------------------- helpers


def transition_statuses(events: Sequence[TaskEvent]) -> list[TaskStatus]:
    """The states a task went through, as its events report them (cancel requests are not transitions)."""
    return [e.status for e in events if not isinstance(e, TaskCancelRequested)]


def assert_legal_history(statuses: Sequence[TaskStatus], where: str = '') -> None:
    """A history the state machine allows: starts PENDING, legal steps, at most one terminal state, and it is last."""
    assert statuses, where
    assert statuses[0] is TaskStatus.PENDING, (where, statuses)
    for old, new in pairwise(statuses):
        assert old.can_become(new), f'{where}: illegal {old.value} -> {new.value} in {[s.value for s in statuses]}'
    terminal = [s for s in statuses if s.is_terminal]
    assert len(terminal) <= 1, (where, statuses)
    if terminal:
        assert statuses[-1].is_terminal, (where, statuses)


def events_by_task(events: Sequence[TaskEvent]) -> dict[str, list[TaskEvent]]:
    grouped: dict[str, list[TaskEvent]] = defaultdict(list)
    for event in events:
        grouped[event.task_id].append(event)
    return grouped


def describe_task(task: Any) -> str:
    """Where a leftover asyncio task is stuck: its innermost frames."""
    where: list[str] = []
    coro = task.get_coro()
    while coro is not None and len(where) < 40:
        frame = getattr(coro, 'cr_frame', None) or getattr(coro, 'ag_frame', None)
        if frame is not None:
            where.append(f'{frame.f_code.co_filename.rsplit("/", 1)[-1]}:{frame.f_code.co_name}:{frame.f_lineno}')
        coro = getattr(coro, 'cr_await', None) or getattr(coro, 'ag_await', None)
    return ' -> '.join(where[-8:])


def is_upstream_lifecycle_leak(task: Any) -> bool:
    """A Pydantic AI `wrap_run` task parked forever on `_run_done` (a cancel landing as a run starts; avoided here)."""
    return ':_do_run:' in describe_task(task)


def assert_nothing_orphaned(
    manager: TaskManager, events: Sequence[TaskEvent], *, upstream_leak_ok: bool = True
) -> None:
    """After `aclose`: no task, mailbox, subscription, pending reply or live record; one terminal event per task."""
    assert manager.closed
    left = leftover_tasks()
    if upstream_leak_ok:
        # Known Pydantic AI bug, pinned by test_hard_cancel_as_a_run_starts_leaves_no_orphaned_task:
        # tolerated elsewhere (cancels at random moments can hit it), but cancelled so no later check sees them.
        leaked = [t for t in left if is_upstream_lifecycle_leak(t)]
        for task in leaked:
            task.cancel()
        left = [t for t in left if t not in leaked]
    assert left == [], [describe_task(t) for t in left[:3]]
    stats = manager.bus.stats()
    assert (stats.mailboxes, stats.subscriptions, stats.pending_replies) == (0, 0, 0), stats
    assert stats.dropped == 0, stats
    assert [r for r in manager.list() if not r.is_terminal] == []
    assert manager._settler.runtimes == {}  # pyright: ignore[reportPrivateUsage]
    assert manager._questions.waiting == {}  # pyright: ignore[reportPrivateUsage]
    grouped = events_by_task(events)
    for record in manager.list():
        assert record.id in grouped, f'task {record.id} has no events'
    for task_id, task_events in grouped.items():
        assert isinstance(task_events[0], TaskCreated), task_events[0]
        terminal = [e for e in task_events if e.is_terminal]
        assert len(terminal) == 1, f'task {task_id}: {len(terminal)} terminal events'
        statuses = transition_statuses(task_events)
        assert_legal_history(statuses, task_id)
        record = manager.get(task_id)
        if record is not None:  # still retained: the record and the events tell the same story
            assert [t.status for t in record.history] == statuses
            assert record.status is terminal[0].status


@asynccontextmanager
async def audited(manager: TaskManager, *, upstream_leak_ok: bool = True) -> AsyncIterator[list[TaskEvent]]:
    """Record every task event; on the way out close the manager and check that nothing is orphaned."""
    events: list[TaskEvent] = []

    async def collect() -> None:
        async for event in manager.events(max_buffer=1_000_000):
            events.append(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(collect)
        with anyio.fail_after(5):
            while manager.bus.stats().subscriptions == 0:
                await anyio.sleep(0)
        try:
            yield events
        finally:
            with anyio.fail_after(30):
                await manager.aclose()
    assert_nothing_orphaned(manager, events, upstream_leak_ok=upstream_leak_ok)


def tool_returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


def asker_model(question: str = 'Which year?') -> FunctionModel:
    """A child that asks its parent one question, then answers with what it was told."""

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = tool_returns(messages)
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': question})])
        return ModelResponse(parts=[TextPart(f'answer was: {returns[-1].content}')])

    return FunctionModel(fn)


def self_delegating(name: str, model: Any, holder: list[SubAgentToolset], **kw: Any) -> SubAgentConfig:
    """A subagent whose own tools are the very toolset that runs it (filled into `holder` once built)."""

    async def own_toolset(ctx: RunContext[Any]) -> AbstractToolset[Any]:
        return await holder[0].for_run(ctx)

    return SubAgentConfig(name=name, model=model, toolsets=[DynamicToolset(own_toolset, per_run_step=False)], **kw)


async def run_parent(toolset: SubAgentToolset, *calls: Any, conversation_id: str = 'c1') -> list[str]:
    """One parent run whose model makes `calls` in its first turn; the tools' replies."""
    script = Script([list(calls)])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id=conversation_id)
    return script.replies[1]


async def ticks(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


async def in_thread(func: Callable[[], Any]) -> Any:
    """Run `func` in a plain thread (not anyio's worker), as an application would, and return its result."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(func()))
    thread.start()
    await anyio.to_thread.run_sync(thread.join)
    return out[0]


# ------------------------------------------------------------------------------------------------- nothing is lost


async def test_results_stay_retrievable_until_retention_drops_them() -> None:
    toolset = create_subagent_toolset(
        [SubAgentConfig(name='w', model=child_text('result'), can_ask_questions=False)],
        max_retained=3,
        retention_seconds=None,
    )
    manager = toolset.manager
    async with audited(manager):
        finished: list[str] = []
        for i in range(8):
            replies = await run_parent(toolset, call('task', description=f'job {i}', subagent_type='w'))
            finished.append(manager.list()[-1].id)
            assert replies == [sync_reply('result', finished[-1])]
            # The 3 most recent results are kept; older ones are dropped, oldest first.
            for task_id in finished[-3:]:
                record = manager.get(task_id)
                assert record is not None and record.status is TaskStatus.COMPLETED and record.result == 'result'
            for task_id in finished[:-3]:
                assert manager.get(task_id) is None
            assert len(manager.list()) == min(i + 1, 3)
        pruned = finished[0]
        replies = await run_parent(toolset, call('check_task', task_id=pruned))
        assert replies == [f'Task {pruned} finished long ago; its record is no longer kept.']
        # Another conversation asking about the same pruned id learns nothing.
        foreign = await run_parent(toolset, call('check_task', task_id=pruned), conversation_id='other')
        assert foreign == [
            f"No task with ID '{pruned}' in this conversation. You have no active tasks: start one with task."
        ]


class Point(BaseModel):
    x: int
    y: int


async def explode() -> str:
    raise RuntimeError('key sk-abc123def456ghi789')


async def peek() -> str:
    return 'peeked'


async def _calls_explode(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if not tool_returns(messages):
        return ModelResponse(parts=[ToolCallPart('explode', {})])
    return ModelResponse(parts=[TextPart('unreachable')])


async def _model_error(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raise RuntimeError('upstream refused api_key=abcdef123456 for this call')


async def _invalid_output(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {'x': 'not a number'})])


def failing_config(kind: str) -> SubAgentConfig:
    if kind == 'tool_error':
        return SubAgentConfig(name='w', model=FunctionModel(_calls_explode), toolsets=[FunctionToolset([explode])])
    if kind == 'model_error':
        return SubAgentConfig(name='w', model=FunctionModel(_model_error))
    if kind == 'invalid_output':
        return SubAgentConfig(name='w', model=FunctionModel(_invalid_output), output_type=Point)
    if kind == 'timeout':
        return SubAgentConfig(name='w', model=Gate().model(), timeout=0.05)
    assert kind == 'usage_limit'
    return SubAgentConfig(
        name='w',
        model=TestModel(call_tools=['peek']),
        toolsets=[FunctionToolset([peek])],
        usage_limits=UsageLimits(request_limit=1),
    )


FAILURES = {
    'tool_error': 'RuntimeError: key [redacted]',
    'model_error': 'RuntimeError: upstream refused [redacted] for this call',
    'invalid_output': 'UnexpectedModelBehavior: Exceeded maximum output retries (1)',
    'timeout': 'timed out after 0.05 s',
    'usage_limit': 'usage limit reached: The next request would exceed the request_limit of 1.',
}


@pytest.mark.parametrize('mode', ['sync', 'async'])
@pytest.mark.parametrize('kind', list(FAILURES))
async def test_each_failure_kind_ends_failed_with_a_clear_error_and_the_parent_goes_on(kind: str, mode: str) -> None:
    async def wait_for_it(s: Script) -> list[Any]:
        return [call('wait_tasks', task_ids=[task_id_from(s.reply())])]

    turns: list[Any] = [[call('task', description='do it', subagent_type='w', mode=mode)]]
    if mode == 'async':
        turns.append(wait_for_it)
    script = Script(turns, final='parent carried on')
    toolset = create_subagent_toolset([failing_config(kind)])
    manager = toolset.manager
    async with audited(manager) as events:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = manager.list()
    assert result.output == 'parent carried on'
    assert record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.startswith(FAILURES[kind]), record.error
    reply = script.replies[-1][0]
    assert reply.startswith(f'Task {record.id} (w) failed: {FAILURES[kind]}')
    (failed,) = [e for e in events if e.is_terminal]
    assert failed.status is TaskStatus.FAILED
    for text in (reply, record.error, getattr(failed, 'error', '')):
        assert '\n' not in text.split(' failed: ', 1)[-1]
        assert 'Traceback' not in text
        assert 'sk-abc123' not in text and 'abcdef123456' not in text


@pytest.mark.parametrize(
    ('message', 'secret'),
    [
        ('key sk-abc123def456ghi789', 'sk-abc123def456ghi789'),
        ('bad request api_key=hunter2hunter2', 'hunter2hunter2'),
        ('login failed password: correct-horse-battery', 'correct-horse-battery'),
        ('OPENAI_API_KEY=sk-proj-0123456789abcdef was rejected', '0123456789abcdef'),
    ],
)
async def test_error_texts_mask_secrets_and_carry_no_traceback(message: str, secret: str) -> None:
    async def boom() -> str:
        try:
            raise ValueError(f'inner cause {secret}')
        except ValueError as e:
            raise RuntimeError(message) from e

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not tool_returns(messages):
            return ModelResponse(parts=[ToolCallPart('boom', {})])
        return ModelResponse(parts=[TextPart('unreachable')])

    config = SubAgentConfig(name='w', model=FunctionModel(model), toolsets=[FunctionToolset([boom])])
    toolset = create_subagent_toolset([config])
    async with audited(toolset.manager) as events:
        replies = await run_parent(toolset, call('task', description='x', subagent_type='w'))
    texts = [replies[0], *(getattr(e, 'error', '') for e in events if e.is_terminal)]
    for text in texts:
        assert 'RuntimeError: ' in text
        assert secret not in text
        assert 'inner cause' not in text and 'Traceback' not in text and '\n' not in text


@pytest.mark.parametrize(
    'message',
    [
        "config {'api_key': 'abcd1234efgh5678'}",
        '{"api_key": "abcd1234efgh5678"}',
        'Authorization: Bearer abcd1234efgh5678',
        'aws_secret_access_key=abcd1234efgh5678',
    ],
)
async def test_secrets_in_quoted_or_bearer_form_are_masked(message: str) -> None:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError(message)

    toolset = create_subagent_toolset([SubAgentConfig(name='w', model=FunctionModel(model))])
    async with audited(toolset.manager):
        replies = await run_parent(toolset, call('task', description='x', subagent_type='w'))
    assert 'failed: RuntimeError' in replies[0]
    assert 'abcd1234efgh5678' not in replies[0], replies[0]


# ---------------------------------------------------------------------------------------------------------- load

LOAD_TASKS = 2_000
LOAD_CONCURRENCY = 50
LOAD_RETAINED = 300


def load_configs(rng: random.Random) -> dict[str, SubAgentConfig]:
    async def ok(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('ok')])

    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any('CANCELLATION REQUEST' in str(getattr(p, 'content', '')) for m in messages for p in m.parts):
            return ModelResponse(parts=[TextPart('partial: half done')])
        await anyio.sleep(rng.random() * 0.01)
        return ModelResponse(parts=[TextPart('slow ok')])

    async def never(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.sleep(3600)
        raise AssertionError('unreachable')

    quiet = {'can_ask_questions': False}
    return {
        'ok': SubAgentConfig(name='ok', model=FunctionModel(ok), **quiet),
        'slow': SubAgentConfig(name='slow', model=FunctionModel(slow), **quiet),
        'ask': SubAgentConfig(name='ask', model=asker_model()),
        'tool_error': SubAgentConfig(
            name='tool_error', model=FunctionModel(_calls_explode), toolsets=[FunctionToolset([explode])], **quiet
        ),
        'model_error': SubAgentConfig(name='model_error', model=FunctionModel(_model_error), **quiet),
        'invalid_output': SubAgentConfig(
            name='invalid_output', model=FunctionModel(_invalid_output), output_type=Point, **quiet
        ),
        'timeout': SubAgentConfig(name='timeout', model=FunctionModel(never), timeout=0.02, **quiet),
        'usage_limit': SubAgentConfig(
            name='usage_limit',
            model=FunctionModel(_calls_peek),
            toolsets=[FunctionToolset([peek])],
            usage_limits=UsageLimits(request_limit=1),
            **quiet,
        ),
    }


async def _calls_peek(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    if not tool_returns(messages):
        return ModelResponse(parts=[ToolCallPart('peek', {})])
    return ModelResponse(parts=[TextPart('peeked twice')])


LOAD_WEIGHTS = {
    'ok': 50,
    'slow': 14,
    'ask': 10,
    'tool_error': 5,
    'model_error': 5,
    'invalid_output': 3,
    'timeout': 8,
    'usage_limit': 5,
}
LOAD_ERRORS = {kind: FAILURES[kind].replace('0.05', '0.02') for kind in FAILURES}


# About 25 s alone and about a minute under coverage on a 2-core machine: past the suite's 60 s per test, which would
# stop it from a signal handler in the middle of a task. Its own deadline below bounds it instead.
@pytest.mark.timeout(600)
async def test_load_2000_tasks_with_cancels_questions_and_failures() -> None:
    from pydantic_ai_subagents._config import build_agent

    rng = random.Random(20_26)
    configs = load_configs(rng)
    agents = {kind: build_agent(config) for kind, config in configs.items()}
    kinds = list(LOAD_WEIGHTS)
    weights = list(LOAD_WEIGHTS.values())
    manager = TaskManager(
        max_concurrent_tasks=LOAD_CONCURRENCY,
        max_tasks_per_scope=LOAD_TASKS,
        max_retained=LOAD_RETAINED,
        question_timeout=0.05,
        soft_cancel_grace=0.1,
        hard_cancel_wait=1.0,
    )
    kind_of: dict[str, str] = {}
    ids: list[str] = []
    terminal: dict[str, TaskEvent] = {}
    violations: list[str] = []
    running: set[str] = set()
    max_running = 0
    answered_twice = 0
    stop_threads = threading.Event()
    thread_calls = Counter[str]()

    def canceller(seed: int) -> None:
        local = random.Random(seed)
        while not stop_threads.is_set():
            if ids:
                task_id = local.choice(ids[-200:])
                kind = local.choice(['soft', 'hard'])
                method = manager.soft_cancel if kind == 'soft' else manager.hard_cancel
                thread_calls[f'{kind}:{method(task_id, requested_by="thread")}'] += 1
            stop_threads.wait(0.002)

    async with audited(manager) as events, anyio.create_task_group() as tg:

        async def answer(task_id: str) -> None:
            nonlocal answered_twice
            roll = rng.random()
            if roll < 0.3:
                return  # left to time out
            if roll < 0.5:
                await anyio.sleep(rng.random() * 0.01)
            if roll < 0.6:
                await in_thread(lambda: manager.answer(task_id, 'from a thread'))
                return
            first = manager.answer(task_id, '1999')
            second = manager.answer(task_id, '2000')
            if second:
                violations.append(f'{task_id}: a second answer was accepted (first: {first})')
            answered_twice += 1

        async def watch() -> None:
            nonlocal max_running
            seen = 0
            while True:
                while seen < len(events):
                    event = events[seen]
                    seen += 1
                    if isinstance(event, TaskStarted):
                        running.add(event.task_id)
                        max_running = max(max_running, len(running))
                    elif event.is_terminal:
                        running.discard(event.task_id)
                        if event.task_id in terminal:
                            violations.append(f'{event.task_id}: second terminal event')
                        terminal[event.task_id] = event
                    elif isinstance(event, TaskQuestionAsked):
                        tg.start_soon(answer, event.task_id)
                await anyio.sleep(0.001)

        tg.start_soon(watch)
        threads = [threading.Thread(target=canceller, args=(seed,)) for seed in (1, 2)]
        for thread in threads:
            thread.start()
        try:
            with anyio.fail_after(400):
                for i in range(LOAD_TASKS):
                    kind = rng.choices(kinds, weights)[0]
                    record = await manager.start(
                        configs[kind], f'job {i}', scope=f'conversation-{i % 20}', mode='async', agent=agents[kind]
                    )
                    kind_of[record.id] = kind
                    ids.append(record.id)
                    if rng.random() < 0.15:
                        target = rng.choice(ids[-100:])
                        if rng.random() < 0.5:
                            manager.soft_cancel(target)
                        else:
                            manager.hard_cancel(target)
                    await anyio.sleep(0)
                    while len(ids) - len(terminal) > 300:  # bounded backlog, as a server would apply
                        await anyio.sleep(0.002)
                while len(terminal) < LOAD_TASKS:
                    await anyio.sleep(0.01)
        finally:
            stop_threads.set()
            for thread in threads:
                await anyio.to_thread.run_sync(thread.join)
        tg.cancel_scope.cancel()

        assert violations == []
        assert max_running <= LOAD_CONCURRENCY
        # Memory stays bounded: nothing live is left, and no table outgrows retention.
        assert len(manager._settler.runtimes) == 0  # pyright: ignore[reportPrivateUsage]
        assert len(manager.list()) <= LOAD_RETAINED
        assert len(manager._settler.transcripts) <= LOAD_RETAINED  # pyright: ignore[reportPrivateUsage]
        assert sum(len(v) for v in owed_notices(manager).values()) <= LOAD_RETAINED
        outcomes = Counter[tuple[str, TaskStatus]]()
        cancel_requests = events_by_task([e for e in events if isinstance(e, TaskCancelRequested)])
        for task_id in ids:
            event = terminal[task_id]
            kind = kind_of[task_id]
            outcomes[kind, event.status] += 1
            requested = {e.cancel_kind for e in cancel_requests.get(task_id, [])}
            if 'hard' in requested:
                assert event.status is TaskStatus.CANCELLED, (kind, event)
            if not requested:
                assert event.status is not TaskStatus.CANCELLED, (kind, event)
            if event.status is TaskStatus.FAILED:
                error: str = getattr(event, 'error', '')
                assert kind != 'ask', error  # a question that times out is withdrawn; the task goes on
                assert error.startswith(LOAD_ERRORS[kind]), (kind, error)
            if event.status is TaskStatus.COMPLETED:
                assert kind in ('ok', 'slow', 'ask'), (kind, event)
                result = getattr(event, 'result', None)
                assert result == {'ok': 'ok', 'slow': 'slow ok'}.get(kind, result)
    assert sum(n for (_, s), n in outcomes.items() if s is TaskStatus.COMPLETED) > LOAD_TASKS // 3
    # Sanity checks that the random mix really exercised each path (how many land depends on timing).
    assert sum(n for (_, s), n in outcomes.items() if s is TaskStatus.CANCELLED) > 50
    assert answered_twice > 3
    assert thread_calls['hard:True'] + thread_calls['soft:True'] > 0


# ------------------------------------------------------------------------------------------- bugs in retention


async def test_retention_holds_without_a_new_start() -> None:
    # Regression: retention used to run only when a task was created.
    config = SubAgentConfig(name='w', model=child_text('ok'), can_ask_questions=False)
    manager = TaskManager(max_retained=5, max_concurrent_tasks=None)
    async with audited(manager):
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(20)]
        records = await manager.wait(ids, until_question=False)
        assert [r.status for r in records] == [TaskStatus.COMPLETED] * 20  # waiters keep the final snapshot
        assert len(manager.list()) <= 5, len(manager.list())


async def test_retention_by_age_holds_on_an_idle_manager() -> None:
    from pydantic_ai_subagents import InMemoryTaskStore

    now = [1000.0]
    store = InMemoryTaskStore(max_retained=100, retention_seconds=60, clock=lambda: now[0])
    config = SubAgentConfig(name='w', model=child_text('ok'), can_ask_questions=False)
    toolset = create_subagent_toolset([config], store=store)
    async with audited(toolset.manager):
        (reply,) = await run_parent(toolset, call('task', description='job', subagent_type='w', mode='async'))
        task_id = task_id_from(reply)
        await toolset.manager.wait_for(task_id)
        now[0] += 3600  # an hour later, nothing else happened
        assert toolset.manager.get(task_id) is None


def owed_notices(manager: TaskManager) -> dict[str, dict[str, None]]:
    """The notices the manager still owes each scope (internal bookkeeping, read for the memory check)."""
    return manager._delivery._owed  # pyright: ignore[reportPrivateUsage]


async def test_notices_owed_for_pruned_tasks_do_not_pile_up() -> None:
    # Regression: notices owed to conversations that never came back used to pile up without bound.
    config = SubAgentConfig(name='w', model=child_text('ok'), can_ask_questions=False)
    manager = TaskManager(max_retained=5)
    async with audited(manager):
        for i in range(40):
            record = await manager.start(config, f'job {i}', scope=f'one-off-conversation-{i}')
            await manager.wait_for(record.id)
        owed = {task_id for pending in owed_notices(manager).values() for task_id in pending}
        retained = {r.id for r in manager.list()}
        assert owed <= retained, f'{len(owed - retained)} notices owed for tasks no longer kept'


async def test_a_task_cancelled_and_pruned_before_it_runs_does_not_crash_the_manager() -> None:
    config = SubAgentConfig(name='w', model=child_text('ok'), can_ask_questions=False)
    manager = TaskManager(max_retained=0)
    async with audited(manager):
        first = await manager.start(config, 'cancelled at once', scope='s')
        assert manager.hard_cancel(first.id) is True
        second = await manager.start(config, 'innocent bystander', scope='s')  # prunes the first
        with anyio.fail_after(5):
            record = await manager.wait_for(second.id)
        assert record.status is TaskStatus.COMPLETED, (record.status, record.note)


async def test_sync_task_whose_record_is_pruned_before_the_waiter_wakes() -> None:
    # Regression: TaskManager.wait used to raise TaskNotFoundError here, crashing the parent run.
    gate = Gate(answer='the result')
    manager = TaskManager(max_retained=0)
    toolset = create_subagent_toolset([SubAgentConfig(name='w', model=gate.model())], manager=manager)
    other = SubAgentConfig(name='other', model=child_text('x'), can_ask_questions=False)
    script = Script([[call('task', description='job', subagent_type='w')]], final='parent done')
    outcome: list[Any] = []
    completed: list[str] = []
    async with audited(manager), anyio.create_task_group() as tg:

        async def start_another_when_it_completes() -> None:
            # Any other conversation starting a task at that moment prunes the finished record.
            async with aclosing(manager.events()) as stream:
                async for event in stream:
                    if isinstance(event, TaskCompleted) and event.subagent == 'w':
                        completed.append(event.task_id)
                        await manager.start(other, 'unrelated', scope='someone-else')
                        return

        async def release() -> None:
            await gate.entered.wait()
            gate.release.set()

        tg.start_soon(start_another_when_it_completes)
        tg.start_soon(release)
        try:
            result = await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='a')
            outcome.append(result.output)
        except Exception as e:
            outcome.append(e)
    assert outcome == ['parent done'], outcome
    assert manager.get(completed[0]) is None
    assert script.replies[1] == [sync_reply('the result', completed[0])]


async def test_question_that_times_out_before_the_manager_sees_it() -> None:
    from pydantic_ai_subagents._config import build_agent

    config = SubAgentConfig(name='w', model=asker_model())
    agent = build_agent(config)
    manager = TaskManager(question_timeout=0)
    async with audited(manager):
        ids = [(await manager.start(config, f'job {i}', scope='s', agent=agent)).id for i in range(5)]
        records = await manager.wait(ids, until_question=False)
        assert [(r.status, r.error) for r in records] == [(TaskStatus.COMPLETED, None)] * 5, [
            (r.status.value, r.error) for r in records
        ]


async def _never(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep(3600)
    raise AssertionError('unreachable')


async def test_hard_cancel_as_a_run_starts_leaves_no_orphaned_task() -> None:
    config = SubAgentConfig(name='w', model=FunctionModel(_never), can_ask_questions=False)
    manager = TaskManager(max_concurrent_tasks=None)
    async with audited(manager, upstream_leak_ok=False):
        ids: list[str] = []
        for delay in range(20):  # sweep the moment of the cancel across the run's start
            batch = [(await manager.start(config, f'x{delay}', scope='s')).id for _ in range(3)]
            await ticks(delay)
            for task_id in batch:
                manager.hard_cancel(task_id)
            ids += batch
        records = await manager.wait(ids, until_question=False)
        assert all(r.status is TaskStatus.CANCELLED for r in records)


# --------------------------------------------------------------------------------------------------------- races


@pytest.mark.parametrize('policy', ['keep', 'cancel'])
async def test_race_subagent_finishes_as_its_parent_run_ends(policy: str) -> None:
    rng = random.Random(policy)
    statuses = Counter[TaskStatus]()
    for _ in range(25):
        gate = Gate(answer='child result')
        config = SubAgentConfig(name='w', model=gate.model(), can_ask_questions=False)
        toolset = create_subagent_toolset([config], on_run_end=policy)  # type: ignore[arg-type]
        manager = toolset.manager
        delay = rng.randrange(-3, 40)
        async with audited(manager):
            async with anyio.create_task_group() as tg:

                async def release() -> None:
                    await ticks(delay)
                    gate.release.set()

                async def final_turn(s: Script) -> list[Any]:
                    if delay < 0:  # the child finishes while the parent's final model request is in flight
                        gate.release.set()
                        await manager.wait_for(task_id_from(s.reply()))
                    else:
                        tg.start_soon(release)
                    return [TextPart('parent final')]

                first = Script([[call('task', description='job', subagent_type='w', mode='async')], final_turn])
                agent = Agent(first.model(), toolsets=[toolset])
                result = await agent.run('go', conversation_id='c')
            (record,) = manager.list()
            with anyio.fail_after(5):
                record = await manager.wait_for(record.id)
            second = Script([])
            await agent.run('next', conversation_id='c', model=second.model(), message_history=result.all_messages())
        assert result.output in ('parent final', 'done')
        if policy == 'keep':
            assert record.status is TaskStatus.COMPLETED
        else:
            assert record.status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED)
            if record.status is TaskStatus.CANCELLED:
                assert record.cancel is not None and record.cancel.requested_by == 'parent'
        # The outcome reaches the conversation exactly once: in the ending run, or in the next one.
        notices = [
            p
            for s in (first, second)
            for ps in s.prompts
            for p in ps
            if p.startswith(f'<task_notice task_id="{record.id}"')
        ]
        assert len(notices) == 1, notices
        statuses[record.status] += 1
    assert statuses[TaskStatus.COMPLETED] > 0


@pytest.mark.parametrize('where', ['loop', 'threads'])
async def test_race_question_answered_twice(where: str) -> None:
    config = SubAgentConfig(name='w', model=asker_model())
    for _ in range(15):
        manager = TaskManager()
        async with audited(manager):
            task_id = (await manager.start(config, 'needs a year', scope='s')).id
            waiting = await manager.wait_for(task_id)
            assert waiting.status is TaskStatus.WAITING_FOR_ANSWER and waiting.question == 'Which year?'
            if where == 'loop':
                results = [manager.answer(task_id, '1999'), manager.answer(task_id, '2000')]
            else:
                barrier = threading.Barrier(2)
                results = []

                def answer(text: str) -> None:
                    barrier.wait()
                    results.append(manager.answer(task_id, text))

                threads = [threading.Thread(target=answer, args=(t,)) for t in ('1999', '2000')]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    await anyio.to_thread.run_sync(thread.join)
            record = await manager.wait_for(task_id, until_question=False)
            assert manager.answer(task_id, 'late') is False
        assert sorted(results) == [False, True]
        assert record.status is TaskStatus.COMPLETED
        if where == 'loop':
            assert record.result == 'answer was: 1999'
        else:
            assert record.result in ('answer was: 1999', 'answer was: 2000')


@pytest.mark.parametrize('order', ['answer,soft', 'soft,answer', 'answer,hard', 'hard,answer'])
async def test_race_answer_and_cancel_back_to_back(order: str) -> None:
    config = SubAgentConfig(name='w', model=asker_model())
    first, second = order.split(',')
    for i in range(10):
        manager = TaskManager()
        async with audited(manager):
            task_id = (await manager.start(config, 'needs a year', scope='s')).id
            await manager.wait_for(task_id)

            def act(op: str) -> bool:
                if op == 'answer':
                    return manager.answer(task_id, '1999')
                if op == 'soft':
                    return manager.soft_cancel(task_id)
                return manager.hard_cancel(task_id)

            if i % 2:
                results = await in_thread(lambda: [act(first), act(second)])
            else:
                results = [act(first), act(second)]
            with anyio.fail_after(5):
                record = await manager.wait_for(task_id, until_question=False)
        assert results[0] is True
        if i % 2 and first == 'answer' and results[1] is False:
            # From a thread, the answered task may have finished before the cancel reached the loop.
            assert record.status is TaskStatus.COMPLETED and record.result == 'answer was: 1999'
            continue
        assert record.status is TaskStatus.CANCELLED
        assert record.cancel is not None
        if order == 'soft,answer':
            assert results[1] is False  # the question was released with the cancellation notice
            assert record.partial_result is not None and 'CANCELLATION REQUEST' in record.partial_result
        elif order == 'answer,soft':
            assert results[1] is True
            assert record.partial_result == 'answer was: 1999'
        else:
            assert record.cancel.kind == 'hard' and record.partial_result is None
            if order == 'answer,hard':
                assert results[1] is True


async def test_race_manager_closed_mid_flight_with_tasks_in_every_state() -> None:
    rng = random.Random(7)
    for i in range(12):
        gates = [Gate() for _ in range(2)]
        running = SubAgentConfig(name='running', model=gates[0].model(), can_ask_questions=False)
        soft = SubAgentConfig(name='soft', model=gates[1].model(), can_ask_questions=False)
        waiting = SubAgentConfig(name='waiting', model=asker_model())
        manager = TaskManager(max_concurrent_tasks=3, soft_cancel_grace=30)
        waiter_saw: list[TaskStatus] = []
        async with audited(manager):
            r = (await manager.start(running, 'r', scope='s')).id
            s = (await manager.start(soft, 's', scope='s')).id
            w = (await manager.start(waiting, 'w', scope='s')).id
            pending = [(await manager.start(running, f'p{k}', scope='s')).id for k in range(3)]
            await gates[0].entered.wait()
            await gates[1].entered.wait()
            await manager.wait_for(w)
            assert manager.soft_cancel(s) is True
            assert [manager.get(t).status for t in (r, s, w, *pending)] == [  # type: ignore[union-attr]
                TaskStatus.RUNNING,
                TaskStatus.RUNNING,
                TaskStatus.WAITING_FOR_ANSWER,
                *[TaskStatus.PENDING] * 3,
            ]
            async with anyio.create_task_group() as tg:

                async def wait_on_running() -> None:
                    waiter_saw.append((await manager.wait_for(r, until_question=False)).status)

                async def meddle() -> None:
                    # Someone keeps acting on the tasks while the manager closes.
                    await ticks(rng.randrange(0, 5))
                    manager.answer(w, 'too late')
                    manager.soft_cancel(pending[0])
                    manager.hard_cancel(r)

                tg.start_soon(wait_on_running)
                tg.start_soon(meddle)
                if i % 2:  # and from another thread, at the same time
                    tg.start_soon(
                        in_thread,
                        lambda: (manager.hard_cancel(pending[1]), manager.soft_cancel(s), manager.answer(w, 'x')),
                    )
                await ticks(rng.randrange(0, 5))
                await manager.aclose()
            records = {t: manager.get(t) for t in (r, s, w, *pending)}
            assert all(rec is not None and rec.status is TaskStatus.CANCELLED for rec in records.values()), records
            assert records[s].cancel is not None and records[s].cancel.kind == 'hard'  # type: ignore[union-attr]
            with pytest.raises(ManagerClosedError):
                await manager.start(running, 'after close', scope='s')
            assert manager.answer(w, 'x') is False
            assert manager.soft_cancel(r) is False and manager.hard_cancel(r) is False
        assert waiter_saw == [TaskStatus.CANCELLED]
        assert gates[0].finished == gates[1].finished == 0


@pytest.mark.parametrize('order', ['soft,hard', 'hard,soft'])
@pytest.mark.parametrize('state', ['pending', 'running', 'waiting'])
async def test_race_soft_and_hard_cancel_back_to_back(state: str, order: str) -> None:
    first, second = order.split(',')
    for i in range(8):
        blocker = Gate()
        gate = Gate()
        manager = TaskManager(max_concurrent_tasks=1)
        async with audited(manager) as events:
            if state == 'pending':
                await manager.start(SubAgentConfig(name='blocker', model=blocker.model()), 'b', scope='s')
                await blocker.entered.wait()
                config = SubAgentConfig(name='w', model=gate.model())
            elif state == 'running':
                config = SubAgentConfig(name='w', model=gate.model())
            else:
                config = SubAgentConfig(name='w', model=asker_model())
            task_id = (await manager.start(config, 'target', scope='s')).id
            if state == 'running':
                await gate.entered.wait()
            elif state == 'waiting':
                await manager.wait_for(task_id)
            assert (
                manager.get(task_id).status
                is {  # type: ignore[union-attr]
                    'pending': TaskStatus.PENDING,
                    'running': TaskStatus.RUNNING,
                    'waiting': TaskStatus.WAITING_FOR_ANSWER,
                }[state]
            )

            def act(kind: str) -> bool:
                return manager.soft_cancel(task_id) if kind == 'soft' else manager.hard_cancel(task_id)

            results = await in_thread(lambda: [act(first), act(second)]) if i % 2 else [act(first), act(second)]
            with anyio.fail_after(5):
                record = await manager.wait_for(task_id, until_question=False)
        assert record.status is TaskStatus.CANCELLED
        assert record.cancel is not None
        if order == 'hard,soft' or state == 'pending':
            assert results == [True, False]
            assert record.cancel.kind == first
        else:
            if i % 2 == 0:  # back to back on the loop: the hard cancel always lands on the live task
                assert results == [True, True]
            # From a thread the soft-cancelled task may have wrapped up before the hard cancel arrives.
            assert results[0] is True
            assert record.cancel.kind == ('hard' if results[1] else 'soft')
        requested = [e for e in events if isinstance(e, TaskCancelRequested) and e.task_id == task_id]
        assert len(requested) == results.count(True)
        assert gate.finished == 0


async def test_race_hard_cancel_while_the_tasks_own_nested_tasks_start() -> None:
    rng = random.Random(11)
    for i in range(15):
        holder: list[SubAgentToolset] = []
        inner_gate = Gate()
        turn_taken = anyio.Event()
        mode = rng.choice(['sync', 'async'])

        def delegate(s: Script) -> list[Any]:
            turn_taken.set()
            return [call('task', description=f'nested {k}', subagent_type='inner', mode=mode) for k in range(3)]

        async def hold(s: Script) -> list[Any]:
            await anyio.sleep(3600)  # the middle stays busy, so the cancel always finds it running
            return []

        middle = self_delegating('middle', Script([delegate, hold]).model(), holder, can_ask_questions=False)
        inner = SubAgentConfig(name='inner', model=inner_gate.model(), can_ask_questions=False)
        toolset = create_subagent_toolset([middle, inner], general_purpose=False, max_nesting_depth=2)
        holder.append(toolset)
        manager = toolset.manager
        async with audited(manager):
            top_id = task_id_from(
                (await run_parent(toolset, call('task', description='top', subagent_type='middle', mode='async')))[0]
            )
            await turn_taken.wait()
            await ticks(rng.randrange(0, 30))
            accepted = (
                await in_thread(lambda: manager.hard_cancel(top_id)) if i % 3 == 0 else manager.hard_cancel(top_id)
            )
            with anyio.fail_after(5):
                top = await manager.wait_for(top_id, until_question=False)
            nested = [r for r in manager.list() if r.parent_task_id == top_id]
            # The moment the top task is cancelled, none of its nested tasks may go on unasked.
            for record in nested:
                assert record.is_terminal or (record.cancel is not None and record.cancel.kind == 'hard'), record
            with anyio.fail_after(5):
                nested = await manager.wait([r.id for r in nested], until_question=False)
        assert accepted is True
        assert top.status is TaskStatus.CANCELLED
        assert len(nested) <= 3
        for record in nested:
            assert record.status is TaskStatus.CANCELLED
            assert record.depth == 2 and record.scope != top.scope
            assert record.cancel is not None and record.cancel.requested_by == 'parent'
        assert inner_gate.finished == 0


async def test_race_cancel_and_timeout() -> None:
    rng = random.Random(3)
    outcomes = Counter[tuple[str, bool, TaskStatus]]()
    timeout = 0.03
    for i in range(24):
        gate = Gate()
        config = SubAgentConfig(name='w', model=gate.model(), timeout=timeout, can_ask_questions=False)
        manager = TaskManager(soft_cancel_grace=0.02)
        kind = 'hard' if i % 2 else 'soft'
        async with audited(manager):
            task_id = (await manager.start(config, 'x', scope='s')).id
            await gate.entered.wait()
            await anyio.sleep(max(0.0, timeout + rng.uniform(-0.01, 0.01)))
            accepted = manager.hard_cancel(task_id) if kind == 'hard' else manager.soft_cancel(task_id)
            with anyio.fail_after(5):
                record = await manager.wait_for(task_id, until_question=False)
        assert record.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
        if record.status is TaskStatus.FAILED:
            assert record.error == f'timed out after {timeout:g} s'
        if not accepted:
            assert record.status is TaskStatus.FAILED  # it had timed out already
        elif kind == 'hard':
            assert record.status is TaskStatus.CANCELLED  # an accepted hard cancel always wins
        outcomes[kind, accepted, record.status] += 1
    assert len(outcomes) >= 2, outcomes


# ------------------------------------------------------------------------------------------ security and isolation


async def test_three_conversations_sharing_one_toolset_cannot_touch_each_others_tasks() -> None:
    gate = Gate()
    configs = [
        SubAgentConfig(name='worker', model=gate.model(), can_ask_questions=False),
        SubAgentConfig(name='asker', model=asker_model()),
    ]
    toolset = create_subagent_toolset(configs)
    manager = toolset.manager
    conversations = ['alice', 'bob', 'carol']
    owned: dict[str, list[str]] = {}
    async with audited(manager):
        for conversation in conversations:
            replies = await run_parent(
                toolset,
                call('task', description=f'{conversation} work', subagent_type='worker', mode='async'),
                call('task', description=f'{conversation} question', subagent_type='asker', mode='async'),
                conversation_id=conversation,
            )
            owned[conversation] = [task_id_from(r) for r in replies]
        await manager.wait([ids[1] for ids in owned.values()])
        before = {r.id: r for r in manager.list()}
        unknown = 'f' * 24

        def probes(task_id: str) -> list[Any]:
            return [
                call('check_task', task_id=task_id),
                call('soft_cancel_task', task_id=task_id),
                call('hard_cancel_task', task_id=task_id),
                call('answer_subagent', task_id=task_id, answer='sneaky'),
                call('wait_tasks', task_ids=[task_id], timeout=0),
            ]

        for conversation in conversations:
            # A foreign id gets exactly the reply an unknown id gets in the same conversation.
            baseline = await run_parent(toolset, *probes(unknown), conversation_id=conversation)
            assert baseline[0].startswith(f"No task with ID '{unknown}' in this conversation. Your active tasks: ")
            assert all(task_id in baseline[0] for task_id in owned[conversation])
            as_unknown = [r.replace(unknown, '<id>') for r in baseline]
            for other in conversations:
                if other == conversation:
                    continue
                for foreign in owned[other]:
                    replies = await run_parent(toolset, *probes(foreign), conversation_id=conversation)
                    assert [r.replace(foreign, '<id>') for r in replies] == as_unknown
            (listing,) = await run_parent(toolset, call('list_active_tasks'), conversation_id=conversation)
            listed = {line.split(' ', 1)[0] for line in listing.splitlines()[1:]}
            assert listed == set(owned[conversation])
        after = {r.id: r for r in manager.list()}
        assert after == before  # nothing was cancelled, answered or otherwise touched
        # The owner still can.
        for conversation in conversations:
            worker, asker = owned[conversation]
            replies = await run_parent(
                toolset,
                call('answer_subagent', task_id=asker, answer='1999'),
                call('hard_cancel_task', task_id=worker),
                conversation_id=conversation,
            )
            assert replies == [
                f'Answer delivered; task {asker} goes on in the background. '
                f'wait_tasks(task_ids=["{asker}"]) returns its result.',
                f'Task {worker} stopped.',
            ]


async def test_task_ids_are_unguessable() -> None:
    from pydantic_ai_subagents._config import build_agent

    blocker = Gate()
    config = SubAgentConfig(name='w', model=blocker.model(), can_ask_questions=False)
    agent = build_agent(config)
    manager = TaskManager(max_concurrent_tasks=1, max_retained=50, max_tasks_per_scope=100)
    ids: list[str] = []
    async with audited(manager):
        ids.append((await manager.start(config, 'blocker', scope='s', agent=agent)).id)
        for i in range(400):
            batch = [(await manager.start(config, f'queued {i}', scope='s', agent=agent)).id for _ in range(25)]
            for task_id in batch:
                manager.hard_cancel(task_id)
            ids += batch
            # Let them end before retention (50) could drop one that never ran (see the xfail above).
            await anyio.lowlevel.checkpoint()
    assert len(set(ids)) == len(ids) == 10_001
    assert all(re.fullmatch(r'[0-9a-f]{24}', t) for t in ids)  # 96 random bits
    # No structure to exploit: every hex digit is about equally likely at every position.
    for position in range(24):
        counts = Counter(t[position] for t in ids)
        assert len(counts) == 16 and max(counts.values()) < 2 * len(ids) / 16


async def test_limit_concurrency_queues_and_says_so() -> None:
    gate = Gate()
    toolset = create_subagent_toolset(
        [SubAgentConfig(name='w', model=gate.model(), can_ask_questions=False)], max_concurrent_tasks=1
    )
    async with audited(toolset.manager):
        replies = await run_parent(
            toolset, *[call('task', description=f'j{k}', subagent_type='w', mode='async') for k in range(3)]
        )
        ids = [task_id_from(r) for r in replies]
        await gate.entered.wait()
        checks = await run_parent(toolset, *[call('check_task', task_id=t) for t in ids[1:]])
        assert [r.status for r in toolset.manager.list()].count(TaskStatus.RUNNING) == 1
    assert checks == [
        f'Task {ids[1]} (w) is pending, position 1 in the queue.\nwait_tasks(task_ids=["{ids[1]}"]) returns its result.',
        f'Task {ids[2]} (w) is pending, position 2 in the queue.\nwait_tasks(task_ids=["{ids[2]}"]) returns its result.',
    ]


async def test_limit_nesting_depth_refuses_with_a_plain_reply() -> None:
    holder: list[SubAgentToolset] = []
    middle_script = Script([[call('task', description='deeper', subagent_type='middle')]], final='middle done')
    middle = self_delegating('middle', middle_script.model(), holder)
    toolset = create_subagent_toolset([middle], general_purpose=False, max_nesting_depth=1)
    holder.append(toolset)
    async with audited(toolset.manager):
        replies = await run_parent(toolset, call('task', description='top', subagent_type='middle'))
        (top,) = toolset.manager.list()
    assert replies == [sync_reply('middle done', top.id)]
    assert middle_script.replies[1] == [
        'Task not started: nesting depth limit reached (1). Finish or cancel tasks first, or do this work yourself.'
    ]


async def test_limit_tasks_per_conversation_is_per_conversation() -> None:
    gate = Gate()
    toolset = create_subagent_toolset(
        [SubAgentConfig(name='w', model=gate.model(), can_ask_questions=False)], max_tasks_per_scope=2
    )
    async with audited(toolset.manager):
        replies = await run_parent(
            toolset, *[call('task', description=f'j{k}', subagent_type='w', mode='async') for k in range(3)]
        )
        elsewhere = await run_parent(
            toolset, call('task', description='mine', subagent_type='w', mode='async'), conversation_id='c2'
        )
    refusals = [r for r in replies if not r.startswith('Task started with ID: ')]
    assert refusals == [
        'Task not started: 2 tasks are live in this conversation; the limit is 2. '
        'Finish or cancel tasks first, or do this work yourself.'
    ]
    assert elsewhere[0].startswith('Task started with ID: ')


async def test_limit_description_size_gets_a_retry_naming_the_limit() -> None:
    script = Script(
        [
            [call('task', description='x' * 51, subagent_type='w')],
            [call('task', description='x' * 50, subagent_type='w')],
        ]
    )
    toolset = create_subagent_toolset(
        [SubAgentConfig(name='w', model=child_text('ok'), can_ask_questions=False)], max_description_chars=50
    )
    async with audited(toolset.manager):
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    (retry,) = script.replies[1] + script.retries[1]  # a retry prompt, however Pydantic AI words its envelope
    assert 'description has 51 characters; the limit is 50. Shorten it.' in retry
    assert script.replies[2] == [sync_reply('ok', record.id)]


async def test_limit_per_task_timeout_and_usage_budget_are_reported_plainly() -> None:
    configs = [failing_config('timeout'), failing_config('usage_limit')]
    configs[1].name = 'budget'
    toolset = create_subagent_toolset(configs)
    async with audited(toolset.manager):
        replies = await run_parent(
            toolset,
            call('task', description='slow', subagent_type='w'),
            call('task', description='greedy', subagent_type='budget'),
        )
        timed_out, greedy = (next(r for r in toolset.manager.list() if r.subagent == n) for n in ('w', 'budget'))
    assert replies[0] == f'Task {timed_out.id} (w) failed: timed out after 0.05 s'
    assert replies[1].startswith(
        f'Task {greedy.id} (budget) failed: usage limit reached: The next request would exceed the request_limit of 1.'
    )


def recording_child(seen: list[list[str]]) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(sorted(t.name for t in info.function_tools))
        return ModelResponse(parts=[TextPart('looked around')])

    return FunctionModel(fn)


SUBAGENT_TOOLS = [
    'answer_subagent',
    'check_task',
    'hard_cancel_task',
    'list_active_tasks',
    'message_task',
    'soft_cancel_task',
    'task',
    'wait_tasks',
]


@pytest.mark.parametrize(
    ('case', 'expected'),
    [
        ('nothing', []),
        ('ask_only', ['ask_parent']),
        ('own_tools', ['peek']),
        ('own_tools_and_ask', ['ask_parent', 'peek']),
        ('subagent_toolset', sorted(['ask_parent', *SUBAGENT_TOOLS])),
    ],
)
async def test_a_subagent_gets_only_the_tools_its_config_gives(case: str, expected: list[str]) -> None:
    seen: list[list[str]] = []
    nested = create_subagent_toolset([SubAgentConfig(name='inner', model=child_text('x'))], general_purpose=False)
    toolsets: list[Any] = {
        'nothing': [],
        'ask_only': [],
        'own_tools': [FunctionToolset([peek])],
        'own_tools_and_ask': [FunctionToolset([peek])],
        'subagent_toolset': [nested],
    }[case]
    config = SubAgentConfig(
        name='w', model=recording_child(seen), toolsets=toolsets, can_ask_questions=case not in ('nothing', 'own_tools')
    )
    # The parent has tools of its own too; none of them may leak into the child.
    toolset = create_subagent_toolset([config])
    parent_tools = FunctionToolset([explode])
    script = Script([[call('task', description='look', subagent_type='w')]])
    async with audited(toolset.manager), nested:
        await Agent(script.model(), toolsets=[toolset, parent_tools]).run('go')
    assert seen == [expected]
    assert script.info is not None and 'explode' in {t.name for t in script.info.function_tools}


async def test_a_nested_subagent_cannot_see_or_cancel_its_parents_or_siblings_tasks() -> None:
    holder: list[SubAgentToolset] = []
    gate = Gate()
    spy_replies: list[list[str]] = []

    def snoop(s: Script) -> list[Any]:
        siblings = [r.id for r in holder[0].manager.list(scope='alice') if r.subagent == 'worker']
        (own,) = [r.id for r in holder[0].manager.list(scope='alice') if r.subagent == 'spy']
        targets = [*siblings, own]
        return [
            call('list_active_tasks'),
            *[call('check_task', task_id=t) for t in targets],
            *[call('soft_cancel_task', task_id=t) for t in targets],
            *[call('hard_cancel_task', task_id=t) for t in targets],
            *[call('answer_subagent', task_id=t, answer='x') for t in targets],
            call('wait_tasks', task_ids=targets, timeout=0),
        ]

    def record(s: Script) -> list[Any]:
        spy_replies.append(s.last)
        return [TextPart('nothing to see')]

    spy = self_delegating('spy', Script([snoop, record]).model(), holder, can_ask_questions=False)
    worker = SubAgentConfig(name='worker', model=gate.model(), can_ask_questions=False)
    toolset = create_subagent_toolset([spy, worker], general_purpose=False)
    holder.append(toolset)
    manager = toolset.manager
    async with audited(manager):
        siblings = [
            task_id_from(r)
            for r in await run_parent(
                toolset,
                call('task', description='w1', subagent_type='worker', mode='async'),
                call('task', description='w2', subagent_type='worker', mode='async'),
                conversation_id='alice',
            )
        ]
        await gate.entered.wait()
        (spy_reply,) = await run_parent(
            toolset, call('task', description='look around', subagent_type='spy'), conversation_id='alice'
        )
        spy_record = next(r for r in manager.list(scope='alice') if r.subagent == 'spy')
        assert spy_reply == sync_reply('nothing to see', spy_record.id)
        for task_id in siblings:
            record = manager.get(task_id)
            assert record is not None and record.status is TaskStatus.RUNNING and record.cancel is None
    (replies,) = spy_replies
    targets = [*siblings, spy_record.id]
    assert replies[0] == 'No active tasks.'
    unknown = [
        f"No task with ID '{t}' in this conversation. You have no active tasks: start one with task." for t in targets
    ]
    no_question = [
        f"No task with ID '{t}' asks you anything. To answer the user, write your answer as plain text, without a "
        'tool call.'
        for t in targets
    ]
    assert replies[1:-1] == unknown * 3 + no_question
    assert replies[-1] == '\n'.join(unknown)
    assert spy_record.status is TaskStatus.COMPLETED and spy_record.cancel is None
