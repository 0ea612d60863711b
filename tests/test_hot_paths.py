"""The shape of the hot paths: what one task costs in asyncio tasks and objects, beyond what its run costs anyway.

These pin down the performance work behind the benchmarks (`bench/`), as properties that hold on any machine: a
count of tasks or objects, never a time.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import sys
import weakref
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition

import pydantic_ai_subagents
from pydantic_ai_subagents import (
    InMemoryTaskStore,
    SubAgentConfig,
    TaskManager,
    TaskRecord,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents._manager import _settle
from pydantic_ai_subagents._run import Outcome
from pydantic_ai_subagents._run._support import _ask_parent  # pyright: ignore[reportPrivateUsage]

from .conftest import Gate, Script, call, child_text

pytestmark = pytest.mark.anyio


@contextmanager
def counting_tasks() -> Generator[list[int]]:
    """Count the asyncio tasks created on the running loop inside the block."""
    loop = asyncio.get_running_loop()
    count = [0]
    create_task = loop.create_task

    def counted(*args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        count[0] += 1
        return create_task(*args, **kwargs)

    loop.create_task = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del loop.create_task


async def test_a_task_costs_one_asyncio_task_more_than_its_run() -> None:
    """`ask_parent` is one of the built agent's own tools: a second toolset would make Pydantic AI run each step's
    toolset calls in parallel tasks."""
    model = child_text('ok')
    plain = Agent(model, instructions='Do it.')
    await plain.run('warm up')
    with counting_tasks() as plain_tasks:
        await plain.run('job')
    async with TaskManager() as manager:
        config = SubAgentConfig(name='worker', instructions='Do it.', model=model)
        await manager.wait_for((await manager.start(config, 'warm up', scope='s')).id)
        with counting_tasks() as ours:
            record = await manager.wait_for((await manager.start(config, 'job', scope='s')).id)
    assert record.status is TaskStatus.COMPLETED
    assert ours[0] == plain_tasks[0] + 1


def asks_once(seen: list[list[str]]) -> FunctionModel:
    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(sorted(t.name for t in info.function_tools))
        answered = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
        if not answered:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
        return ModelResponse(parts=[TextPart(f'Year {answered[0].content}')])

    return FunctionModel(fn)


@pytest.mark.parametrize('ready_agent', [False, True])
async def test_ask_parent_reaches_built_and_ready_agents_and_a_ready_one_is_not_changed(ready_agent: bool) -> None:
    seen: list[list[str]] = []
    agent = Agent(asks_once(seen), name='ready') if ready_agent else None
    config = SubAgentConfig(name='worker', model=None if ready_agent else asks_once(seen), agent=agent)
    async with TaskManager() as manager:
        for _ in range(2):
            task_id = (await manager.start(config, 'job', scope='s')).id
            record = await manager.wait_for(task_id)
            assert record.status is TaskStatus.WAITING_FOR_ANSWER
            assert manager.answer(task_id, '1969')
            record = await manager.wait_for(task_id, until_question=False)
            assert record.result == 'Year 1969'
    assert seen == [['ask_parent']] * 4
    if agent is not None:
        assert [t.name for ts in agent.toolsets for t in getattr(ts, 'tools', {}).values()] == []


@pytest.mark.parametrize('ready_agent', [False, True])
async def test_ask_parent_reaches_the_model_as_a_plain_tool_would_and_is_made_once(ready_agent: bool) -> None:
    """The child's model gets `ask_parent` as Pydantic AI would send a plain tool of the same function, and the same
    definition object on every request of every task: no run builds it again or copies it (to drop its return
    schema, or to stamp its toolset's id)."""
    seen: list[ToolDefinition] = []

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.extend(info.function_tools)
        return ModelResponse(parts=[TextPart('ok')])

    plain = Agent(FunctionModel(fn))
    plain.tool_plain(name='ask_parent', retries=2)(_ask_parent)
    await plain.run('job')
    expected = seen.pop()
    agent = Agent(FunctionModel(fn), name='ready') if ready_agent else None
    config = SubAgentConfig(name='worker', model=None if ready_agent else FunctionModel(fn), agent=agent)
    async with TaskManager() as manager:
        for i in range(3):
            assert (await manager.wait_for((await manager.start(config, f'job {i}', scope='s')).id)).result == 'ok'
    assert len(seen) == 3
    if not ready_agent:
        assert seen[0] == expected
    else:  # the shared toolset's own id, where the agent's tool has the agent's
        assert seen[0] == replace(expected, toolset_id='pydantic-ai-subagents-ask-parent')
    assert all(d is seen[0] for d in seen)


async def test_a_task_s_run_has_two_coroutine_frames_of_ours_above_it() -> None:
    """Each step of a run resumes every coroutine frame above it: with no tracer, a task's model request runs under
    the task's own coroutine, which settles it, and the drive loop, which also ends the run and makes its outcome."""
    package = str(Path(pydantic_ai_subagents.__file__).parent)
    ours: list[list[str]] = []

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # The chain of coroutines the task driving this run awaits, down to where it waits now.
        (task,) = [t for t in asyncio.all_tasks() if t.get_name().startswith('subagent task ')]
        frames: list[str] = []
        awaited: Any = task.get_coro()
        while awaited is not None:
            code = getattr(awaited, 'cr_code', None) or getattr(awaited, 'ag_code', None)
            if code is not None and code.co_filename.startswith(package):
                frames.append(code.co_name)
            awaited = getattr(awaited, 'cr_await', None) or getattr(awaited, 'ag_await', None)
        ours.append(frames)
        return ModelResponse(parts=[TextPart('ok')])

    config = SubAgentConfig(name='worker', model=FunctionModel(fn))
    async with TaskManager() as manager:
        await manager.wait_for((await manager.start(config, 'job', scope='s')).id)
    assert ours == [['_execute', 'drive']]


async def test_a_wait_on_many_tasks_holds_one_watch_per_task_and_leaves_none() -> None:
    gate = Gate()
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    blocked = SubAgentConfig(name='blocked', model=gate.model())
    most_watches = 0
    async with TaskManager(max_concurrent_tasks=3) as manager:
        runtimes = manager._settler.runtimes  # pyright: ignore[reportPrivateUsage]
        stuck = (await manager.start(blocked, 'stuck', scope='s')).id
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(30)]

        async def watch_the_watches() -> None:
            nonlocal most_watches
            while True:
                most_watches = max([most_watches, *(_watches(r.watchers) for r in runtimes.values())])
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_the_watches)
            records = await manager.wait(ids)
            assert [r.status for r in records] == [TaskStatus.COMPLETED] * 30
            await manager.wait([stuck], timeout=0.05)
            await manager.wait([stuck, ids[0]], mode='any')
            tg.cancel_scope.cancel()
        assert not runtimes[stuck].watchers
        gate.release.set()
        assert (await manager.wait_for(stuck)).status is TaskStatus.COMPLETED
    assert most_watches == 1


async def _into(out: list[Any], result: Any) -> None:
    out.append(await result)


def _watches(watchers: object) -> int:
    """How many watches a task holds: none, one watcher, or a list of them."""
    if watchers is None:
        return 0
    return len(watchers) if isinstance(watchers, list) else 1  # pyright: ignore[reportUnknownArgumentType]


async def test_a_wait_lets_go_of_each_finished_task_but_keeps_its_result() -> None:
    """A wait on many tasks keeps a finished task's final record, not the runtime its run needed; with retention
    dropping that record from the store, the wait still returns it."""
    gate = Gate()
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    blocked = SubAgentConfig(name='blocked', model=gate.model())
    async with TaskManager(max_concurrent_tasks=None, max_retained=0) as manager:
        runtimes = manager._settler.runtimes  # pyright: ignore[reportPrivateUsage]
        stuck = (await manager.start(blocked, 'stuck', scope='s')).id
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(20)]
        gone = [weakref.ref(runtimes[task_id]) for task_id in ids]
        async with anyio.create_task_group() as tg:

            async def wait_all() -> None:
                records = await manager.wait([*ids, stuck])
                assert [(r.status, r.result) for r in records] == [(TaskStatus.COMPLETED, 'ok')] * 20 + [
                    (TaskStatus.COMPLETED, 'child result')
                ]

            tg.start_soon(wait_all)
            await gate.entered.wait()
            while any(task_id in runtimes for task_id in ids):
                await anyio.sleep(0.001)
            await anyio.sleep(0)  # the wait has taken in every change
            gc.collect()
            assert [ref() for ref in gone] == [None] * 20
            assert all(manager.get(task_id) is None for task_id in ids)  # retention dropped them
            gate.release.set()


async def test_a_wait_on_many_tasks_and_the_store_keep_older_finished_records_as_plain_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a wait on many tasks goes on, a finished task past the newest few is no record object: the store keeps
    it packed, the wait keeps its final snapshot packed and no snapshot from its start. Each record is six objects
    for the collector's full passes (three per snapshot from the start); at 100,000 tasks they were a million."""
    from pydantic_ai_subagents import _memory_store

    monkeypatch.setattr(_memory_store, 'HOT_RECORDS', 8)
    gate = Gate()
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    blocked = SubAgentConfig(name='blocked', model=gate.model())
    n = 100
    async with TaskManager(max_concurrent_tasks=10, max_tasks_per_scope=n + 1) as manager:
        stuck = (await manager.start(blocked, 'stuck', scope='s')).id
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(n)]
        async with anyio.create_task_group() as tg:

            async def wait_all() -> None:
                records = await manager.wait([*ids, stuck])
                assert [(r.id, r.status, r.result) for r in records] == [
                    *((task_id, TaskStatus.COMPLETED, 'ok') for task_id in ids),
                    (stuck, TaskStatus.COMPLETED, 'child result'),
                ]

            tg.start_soon(wait_all)
            await gate.entered.wait()
            while manager.list(scope='s', active_only=True) != [manager.get(stuck)]:
                await anyio.sleep(0.001)
            await anyio.sleep(0)  # the wait has taken in every change
            gc.collect()
            mine = {*ids, stuck}
            records = [o for o in gc.get_objects() if isinstance(o, TaskRecord) and o.id in mine]
            assert len(records) <= 8 + 2, len(records)  # the newest finished, and the live task's record
            del records
            gate.release.set()


async def test_queued_tasks_get_an_asyncio_task_only_when_they_start_and_start_in_order() -> None:
    gate = Gate()
    order: list[str] = []

    def noting(name: str) -> FunctionModel:
        async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            order.append(name)
            return ModelResponse(parts=[TextPart('ok')])

        return FunctionModel(fn)

    async with TaskManager(max_concurrent_tasks=2) as manager:
        blockers = [(await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id]
        blockers.append((await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id)
        while gate.calls < 2:
            await anyio.sleep(0)
        with counting_tasks() as created:
            ids = [
                (await manager.start(SubAgentConfig(name=f'q{i}', model=noting(f'q{i}')), 'q', scope='s')).id
                for i in range(20)
            ]
        assert created[0] == 0
        assert [manager.queue_position(task_id) for task_id in ids] == list(range(1, 21))
        assert manager.soft_cancel(ids[3]) and manager.hard_cancel(ids[7])
        gate.release.set()
        records = await manager.wait([*blockers, *ids])
    statuses = [r.status for r in records]
    assert statuses.count(TaskStatus.CANCELLED) == 2 and statuses.count(TaskStatus.COMPLETED) == 20
    assert order == [f'q{i}' for i in range(20) if i not in (3, 7)]
    assert manager._settler.runtimes == {}  # pyright: ignore[reportPrivateUsage]


async def test_a_queued_task_is_a_few_objects_until_it_starts() -> None:
    """Tasks queued behind the concurrency limit get their cancellation token and cancel scope when they start: many
    queued tasks are many objects for the garbage collector to walk. Cancelling a queued one still works."""
    gate = Gate()
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    async with TaskManager(max_concurrent_tasks=1, max_tasks_per_scope=1000) as manager:
        first = (await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id
        await gate.entered.wait()
        await manager.start(config, 'warm up', scope='s')
        gc.collect()
        before = len(gc.get_objects())
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(200)]
        gc.collect()
        per_task = (len(gc.get_objects()) - before) / 200
        # Its record (with its history and first transition), runtime, job and usage: no event for its end, no
        # watcher list, no list of children or of held messages, no usage or limits object of its own.
        assert per_task <= 6.5, per_task
        async with anyio.create_task_group() as tg:

            async def wait_all() -> list[TaskRecord]:
                return await manager.wait([first, *ids])

            waited: list[list[TaskRecord]] = []
            tg.start_soon(lambda: _into(waited, wait_all()))
            await anyio.sleep(0.01)
            gc.collect()
            # A wait on them adds no object per task: it is itself the one watcher of them all (a watch object and
            # a watcher list per task before: 8.3).
            per_task = (len(gc.get_objects()) - before) / 200
            assert per_task <= 6.5, per_task
            assert manager.hard_cancel(ids[0]) and manager.soft_cancel(ids[1])
            gate.release.set()
        records = waited[0]
    statuses = [r.status for r in records]
    assert statuses[1:3] == [TaskStatus.CANCELLED] * 2
    assert statuses.count(TaskStatus.COMPLETED) == 199


async def test_the_toolset_builds_its_tool_definitions_once_per_run() -> None:
    toolset = create_subagent_toolset([SubAgentConfig(name='worker', model=child_text('ok'))])
    listed: list[int] = []
    inner = toolset._tools  # pyright: ignore[reportPrivateUsage]
    get_tools = inner.get_tools

    async def counted(ctx: Any) -> Any:
        listed.append(1)
        return await get_tools(ctx)

    inner.get_tools = counted  # type: ignore[method-assign]
    script = Script([[call('task', description=f'job {i}', subagent_type='worker')] for i in range(3)])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
    assert result.output == 'done'
    assert len(listed) == 1
    assert script.info is not None and 'task' in {t.name for t in script.info.function_tools}


async def test_the_parent_s_model_gets_the_same_definitions_at_every_request() -> None:
    """The tools reply in plain text, so their definitions carry no return schema: Pydantic AI sends the ones listed
    for the run as they are, where it would copy each definition at every request to drop the schema."""
    seen: list[list[ToolDefinition]] = []

    def parent(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info.function_tools)
        if len(seen) <= 3:
            return ModelResponse(parts=[call('task', description=f'job {len(seen)}', subagent_type='worker')])
        return ModelResponse(parts=[TextPart('done')])

    toolset = create_subagent_toolset([SubAgentConfig(name='worker', model=child_text('ok'))])
    async with toolset:
        assert (await Agent(FunctionModel(parent), toolsets=[toolset]).run('go')).output == 'done'
    first = seen[0]
    assert len(seen) == 4 and len(first) == 8
    assert all(d.return_schema is None for d in first)
    assert all(a is b for definitions in seen[1:] for a, b in zip(definitions, first, strict=True))


def _spy(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, note: Callable[[Any], Any]) -> list[Any]:
    """Wrap the one-argument function `module.name` for the test: each call still runs it, and `note(argument)` is
    appended to the list returned."""
    real = getattr(module, name)
    notes: list[Any] = []

    def spied(argument: Any) -> Any:
        notes.append(note(argument))
        return real(argument)

    monkeypatch.setattr(module, name, spied)
    return notes


async def test_task_events_are_built_only_when_someone_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    built = _spy(monkeypatch, _settle, 'event_for_change', lambda change: change.new.value)
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    async with TaskManager() as manager:
        await manager.wait_for((await manager.start(config, 'quiet', scope='s')).id)
        assert built == []
        seen: list[str] = []

        async def listen() -> None:
            async for event in manager.events():
                seen.append(type(event).__name__)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            while not manager.bus.stats().subscriptions:
                await anyio.sleep(0)
            await manager.wait_for((await manager.start(config, 'heard', scope='s')).id)
            await anyio.sleep(0)
            tg.cancel_scope.cancel()
    assert built == ['pending', 'running', 'completed']
    assert seen == ['TaskCreated', 'TaskStarted', 'TaskCompleted']


async def test_a_finished_task_leaves_its_record_and_nothing_else() -> None:
    """What the collector walks for each finished task kept by retention: the record, its history and its usage."""
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    async with TaskManager(max_concurrent_tasks=None, max_tasks_per_scope=1000, max_retained=1000) as manager:
        await manager.wait_for((await manager.start(config, 'warm up', scope='s')).id)
        gc.collect()
        before = len(gc.get_objects())
        ids = [(await manager.start(config, f'job {i}', scope='s')).id for i in range(200)]
        records = await manager.wait(ids)
        del records
        await anyio.sleep(0)
        assert manager._settler.runtimes == {}  # pyright: ignore[reportPrivateUsage]
        gc.collect()
        per_task = (len(gc.get_objects()) - before) / 200
        # The record, its history tuple, three transitions and the final usage (6); and the transcript kept so that
        # a follow-up task can continue it (9: the list, two messages, their parts lists, two parts, one usage).
        assert per_task <= 15.5, per_task
        assert [r.status for r in manager.list('s')].count(TaskStatus.COMPLETED) == 201


async def test_an_older_kept_conversation_is_nothing_for_the_collector() -> None:
    """Past the newest few hundred, a finished task's conversation is kept as JSON: what the collector walks for
    such a task is its record alone. At 100,000 tasks kept, conversations as objects made the fan-out 1.2x slower."""
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    async with TaskManager(max_concurrent_tasks=None, max_tasks_per_scope=1000, max_retained=1000) as manager:
        manager._settler.transcripts.hot = 0  # pyright: ignore[reportPrivateUsage]
        await manager.wait_for((await manager.start(config, 'warm up', scope='s')).id)
        gc.collect()
        before = len(gc.get_objects())
        records = await manager.wait([(await manager.start(config, f'job {i}', scope='s')).id for i in range(200)])
        del records
        await anyio.sleep(0)
        gc.collect()
        per_task = (len(gc.get_objects()) - before) / 200
        # The record, its history tuple, three transitions and the final usage.
        assert per_task <= 6.5, per_task
        assert len(manager._settler.transcripts) == 201  # pyright: ignore[reportPrivateUsage]


async def test_a_task_answered_in_one_turn_writes_its_record_three_times(monkeypatch: pytest.MonkeyPatch) -> None:
    """Created, running, completed: a response that ends the run is counted with the result, not in a write of its
    own (each write is a new record, which the collector may have to walk; `test_web` checks that a response that
    calls tools is counted while they run)."""
    writes: list[str] = []
    for name in ('create', 'transition', 'update'):
        method = getattr(InMemoryTaskStore, name)

        def counted(self: InMemoryTaskStore, *args: Any, _method: Any = method, _name: str = name, **kw: Any) -> Any:
            writes.append(_name)
            return _method(self, *args, **kw)

        monkeypatch.setattr(InMemoryTaskStore, name, counted)
    async with TaskManager() as manager:
        record = await manager.wait_for(
            (await manager.start(SubAgentConfig(name='w', model=child_text('ok')), 'job', scope='s')).id
        )
    assert record.status is TaskStatus.COMPLETED and record.usage.requests == 1
    assert writes == ['create', 'transition', 'transition']


async def _cyclic_garbage_of(work: Any) -> list[str]:
    """Run `work()` with the collector off, then name the objects of this library a collection finds unreachable."""
    gc.collect()
    gc.disable()
    try:
        await work()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        package = pydantic_ai_subagents.__name__
        found = [type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith(package)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    return found


async def test_a_finished_task_leaves_nothing_for_the_collector() -> None:
    """A task's own objects (runtime, job, observer, cancel scope, ...) go by reference counting as it ends, whatever
    the end: at 100,000 tasks, the collector's full passes over objects left in a reference cycle were a quarter of
    the fan-out's wall time."""

    async def fails(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError('boom')

    gate = Gate()
    done = SubAgentConfig(name='done', model=child_text('ok'))
    failed = SubAgentConfig(name='failed', model=FunctionModel(fails))
    blocked = SubAgentConfig(name='blocked', model=gate.model())
    async with TaskManager() as manager:
        for config in (done, failed):  # warm-up: imports, caches
            await manager.wait_for((await manager.start(config, 'warm up', scope='s')).id)

        async def tasks() -> None:
            ids = [(await manager.start(c, f'job {i}', scope='s')).id for i, c in enumerate([done, failed] * 5)]
            stopped = (await manager.start(blocked, 'job', scope='s')).id
            await gate.entered.wait()
            assert manager.hard_cancel(stopped)
            records = await manager.wait([*ids, stopped])
            assert {r.status for r in records} == {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}

        assert await _cyclic_garbage_of(tasks) == []

    toolset = create_subagent_toolset([SubAgentConfig(name='worker', model=child_text('ok'))])

    async def delegations(jobs: int) -> None:
        script = Script([[call('task', description=f'job {i}', subagent_type='worker')] for i in range(jobs)])
        assert (await Agent(script.model(), toolsets=[toolset]).run('go')).output == 'done'

    async with toolset:
        await delegations(1)  # warm-up
        assert await _cyclic_garbage_of(lambda: delegations(5)) == []


@pytest.mark.parametrize('end', ['hard cancel', 'failure'])
async def test_a_stopped_or_failed_run_is_freed_after_its_waiter_is_woken(
    end: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clearing the frames of a run that raised frees most of it at once (tens of microseconds): that waits for the
    loop's pass after the task is settled, so the status is written and who waits for it runs first; then the
    frames are cleared, nothing of them left for the collector."""
    order: list[str] = []
    real = Outcome.release

    def release(self: Outcome) -> None:
        order.append('released')
        real(self)
        assert self.raised is not None and self.raised.__traceback__ is None

    monkeypatch.setattr(Outcome, 'release', release)

    async def fails(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError('boom')

    gate = Gate()
    model = gate.model() if end == 'hard cancel' else FunctionModel(fails)
    async with TaskManager() as manager:
        task_id = (await manager.start(SubAgentConfig(name='w', model=model), 'job', scope='s')).id
        if end == 'hard cancel':
            await gate.entered.wait()
            assert manager.hard_cancel(task_id)
        record = await manager.wait_for(task_id)
        order.append(f'woken, {record.status.value}')
        await anyio.lowlevel.checkpoint()
    expected = 'cancelled' if end == 'hard cancel' else 'failed'
    assert order == [f'woken, {expected}', 'released']


async def test_a_task_runs_knowing_its_async_library() -> None:
    """A task runs in a fresh context (no parent run state) that still names the async library, so that the
    anyio calls of its run (dozens per model turn) find it at once rather than sniffing for it each time."""
    sniffio = pytest.importorskip('sniffio')
    seen: list[str | None] = []

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(sniffio.current_async_library_cvar.get())
        return ModelResponse(parts=[TextPart('ok')])

    token = sniffio.current_async_library_cvar.set('asyncio')
    try:
        async with TaskManager() as manager:
            config = SubAgentConfig(name='worker', model=FunctionModel(fn))
            record = await manager.wait_for((await manager.start(config, 'job', scope='s')).id)
    finally:
        sniffio.current_async_library_cvar.reset(token)
    assert record.status is TaskStatus.COMPLETED
    assert seen == ['asyncio']


async def test_a_task_makes_its_end_event_only_for_who_waits_on_it() -> None:
    """The event that says a task ended is made only when something waits on it (a grace or timeout timer, the
    manager closing); a task nobody waits on that way ends without one, and a late waiter finds it already set."""
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    async with TaskManager() as manager:
        task_id = (await manager.start(config, 'job', scope='s')).id
        runtime = manager._settler.runtimes[task_id]  # pyright: ignore[reportPrivateUsage]
        await manager.wait_for(task_id)
        await anyio.sleep(0)
        assert runtime.ended
        assert runtime._stopped is None  # pyright: ignore[reportPrivateUsage]
        with anyio.fail_after(1):
            await runtime.stopped.wait()


async def test_a_hard_cancel_allocates_little_and_keeps_no_transcript_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """The call itself makes a handful of objects for the collector (the new record and its cancel request here;
    the run's own cancellation makes the rest to stop it: the loop's handle that delivers the task's cancel, and what
    it carries), so that a collection seldom lands in it. At the run's exit the status is written without reading the transcript for a
    partial result, which a hard cancel does not keep."""
    read = _spy(monkeypatch, _settle, 'partial_from_messages', len)
    gate = Gate()
    async with TaskManager() as manager:
        task_id = (await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id
        await gate.entered.wait()
        gc.collect()
        gc.disable()
        try:
            before = gc.get_count()[0]
            assert manager.hard_cancel(task_id)
            allocated = gc.get_count()[0] - before
        finally:
            gc.enable()
        record = await manager.wait_for(task_id)
    assert record.status is TaskStatus.CANCELLED and record.partial_result is None
    assert read == []
    # 11 when the call went through the host with a `partial` and the run had a token of its own; 8 since.
    assert allocated <= 9, allocated


def _calls(profiler: cProfile.Profile) -> int:
    """The number of function calls `profiler` saw."""
    calls: int = getattr(pstats.Stats(profiler), 'total_calls')  # noqa: B009 - not in the type stubs
    return calls


def _calls_into(profiler: cProfile.Profile, package: str) -> int:
    """The number of calls `profiler` saw of functions defined under the directory `package`."""
    stats: dict[tuple[str, int, str], tuple[int, ...]] = getattr(pstats.Stats(profiler), 'stats')  # noqa: B009
    return sum(counts[1] for (filename, _, _), counts in stats.items() if filename.startswith(package))


async def test_a_task_costs_few_function_calls_over_its_plain_run() -> None:
    """Function calls (cProfile's count: coroutine resumptions included) of a task started and waited on, over the
    same agent's plain `run`. The run is driven with `AgentRun.next` in one coroutine frame, as `Agent.run` drives
    it, and with no tracer the task's coroutine is the one that settles it: each step of a run resumes every frame
    above it, so each frame and each check per node costs calls on every step."""
    model = child_text('ok')
    plain = Agent(model, instructions='Do it.')
    config = SubAgentConfig(name='worker', instructions='Do it.', model=model)
    n = 20
    async with TaskManager() as manager:
        for _ in range(2):  # warm-up: imports, schema caches
            await plain.run('warm up')
            await manager.wait_for((await manager.start(config, 'warm up', scope='s')).id)
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(n):
            await plain.run(f'job {i}')
        profiler.disable()
        floor = _calls(profiler) / n
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(n):
            await manager.wait_for((await manager.start(config, f'job {i}', scope='s')).id, until_question=False)
        profiler.disable()
        ours = _calls(profiler) / n
        own = _calls_into(profiler, str(Path(pydantic_ai_subagents.__file__).parent)) / n
    # 1,083 before the run was driven with `AgentRun.next` in one frame, 882 after, 868 once the task's coroutine
    # with no tracer became the one that settles it, 811 once a task's start stopped waking its waiters, 720 once a
    # store write copied its record in one generated function and the run had no token of its own, 589 once the
    # `ask_parent` definition was made once, the drive loop became the executor's coroutine and the hot paths lost
    # a few property calls.
    assert ours - floor <= 650, (ours, floor, ours - floor)
    # Of those, the calls of this library's own functions: 177 before the last of these changes, 129 after.
    assert own <= 142, own


async def test_no_collection_and_no_event_lands_in_a_hard_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the collector due at every allocation, none runs inside `hard_cancel()`: it runs at the first
    allocation after the call. The event announcing the request of a running task is built after the call, and a
    listener still reads it before the task's end."""
    from pydantic_ai_subagents._manager import _cancelling

    built = _spy(monkeypatch, _cancelling, 'cancel_requested_event', lambda record: record.id)
    collections: list[bool] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        # Whether the collection runs inside the cancel's work. The call's first line is left out: the collector's
        # count is shared with every thread of the process, so another thread can make one due just as it begins.
        if phase == 'start':
            frame = sys._getframe(1)  # pyright: ignore[reportPrivateUsage]
            inside = False
            while frame is not None and not inside:
                inside = frame.f_code is _cancelling.Cancelling.hard.__code__
                frame = frame.f_back
            collections.append(inside)

    gate = Gate()
    seen: list[str] = []
    task_id = ''
    record = None
    async with TaskManager() as manager:

        async def listen() -> None:
            async for event in manager.events():
                seen.append(type(event).__name__)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            while not manager.bus.stats().subscriptions:
                await anyio.sleep(0)
            task_id = (await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id
            await gate.entered.wait()
            thresholds = gc.get_threshold()
            gc.callbacks.append(on_gc)
            gc.set_threshold(1, 1, 1)
            try:
                assert manager.hard_cancel(task_id)
                in_call = (collections.count(True), list(built))
                _: list[object] = [[]]  # allocations after the call: a collection is due at each
                after = collections.count(False)
            finally:
                gc.set_threshold(*thresholds)
                gc.callbacks.remove(on_gc)
            assert gc.isenabled()
            assert in_call == (0, [])
            assert after >= 1
            record = await manager.wait_for(task_id)
            await anyio.sleep(0)
            tg.cancel_scope.cancel()
    assert record is not None and record.status is TaskStatus.CANCELLED
    assert built == [task_id]
    assert seen[-2:] == ['TaskCancelRequested', 'TaskCancelled'], seen


async def test_a_sync_wait_wakes_once_for_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wait is woken only by what can end it (the task finished or asks a question), not by the task's start:
    a sync delegation's tool call wakes once, for its result."""
    from pydantic_ai_subagents._manager import _waiting  # pyright: ignore[reportPrivateUsage]

    woken: list[str] = []
    real = _waiting._Waiter.changed  # pyright: ignore[reportPrivateUsage]

    def counted(self: Any, task_id: str) -> None:
        woken.append(task_id)
        real(self, task_id)

    monkeypatch.setattr(_waiting._Waiter, 'changed', counted)  # pyright: ignore[reportPrivateUsage]
    seen: list[list[str]] = []
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    asking = SubAgentConfig(name='asking', model=asks_once(seen))
    async with TaskManager() as manager:
        task_id = (await manager.start(config, 'job', scope='s', mode='sync')).id
        assert (await manager.wait_for(task_id)).status is TaskStatus.COMPLETED
        assert woken == [task_id]
        woken.clear()
        task_id = (await manager.start(asking, 'job', scope='s', mode='sync')).id
        assert (await manager.wait_for(task_id)).status is TaskStatus.WAITING_FOR_ANSWER
        assert manager.answer(task_id, '1969')
        record = await manager.wait_for(task_id, until_question=False)
    assert record.result == 'Year 1969'
    assert woken == [task_id, task_id]  # the question, then the result: not the start, nor the answer taken


async def test_a_wait_on_a_few_tasks_packs_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync task's wait, on its one task, keeps the final record as it is: packing it only to unpack it at once
    is work for nothing. Only a wait on many tasks packs what it keeps (it may keep thousands)."""
    from pydantic_ai_subagents._manager import _waiting  # pyright: ignore[reportPrivateUsage]

    packed = _spy(monkeypatch, _waiting, 'pack_record', lambda record: record.id)
    config = SubAgentConfig(name='worker', model=child_text('ok'))
    gate = Gate()
    async with TaskManager(max_concurrent_tasks=1) as manager:
        record = await manager.wait_for((await manager.start(config, 'job', scope='s', mode='sync')).id)
        assert (record.status, record.result, packed) == (TaskStatus.COMPLETED, 'ok', [])
        # Many tasks, none finished before the wait starts: the first holds the only slot until the gate opens.
        first = (await manager.start(SubAgentConfig(name='blocked', model=gate.model()), 'first', scope='s')).id
        ids = [first, *[(await manager.start(config, f'job {i}', scope='s')).id for i in range(_waiting.PACKED_FROM)]]
        await gate.entered.wait()
        out: list[list[TaskRecord]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_into, out, manager.wait(ids))
            await anyio.wait_all_tasks_blocked()  # the wait watches every task
            gate.release.set()
    [records] = out
    assert [(r.id, r.result) for r in records] == [(first, 'child result'), *((i, 'ok') for i in ids[1:])]
    assert sorted(packed) == sorted(ids)


def test_a_store_write_copies_its_record_in_a_few_calls() -> None:
    """Each store write copies the task's record (records are immutable): one generated function per record class,
    which sets every field in straight-line code, not a call or two per field (23 calls for the copy alone before)."""
    from pydantic_ai_subagents import InMemoryTaskStore, TaskRecord

    store = InMemoryTaskStore()
    store.create(TaskRecord(id='t', subagent='w', description='d', mode='async', scope='s'))
    store.update('t', note='warm up')
    profiler = cProfile.Profile()
    profiler.enable()
    record = store.update('t', note='noted')
    profiler.disable()
    # `update`, its lookup of the record, the lock's enter and exit, the copy and its `object.__new__`.
    assert _calls(profiler) <= 6, _calls(profiler)
    assert record.note == 'noted' and record.revision == 3 and record.description == 'd'
    assert store.transition('t', TaskStatus.RUNNING).record.note == 'noted'


async def test_a_hard_cancel_stops_the_run_through_its_own_cancellation_in_few_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An in-process run is stopped through the cancellation it already has: no `CancellationToken` is made for a
    task. On the loop's thread `hard_cancel()` calls `Cancelling.hard` itself, with no layer between."""
    from pydantic_ai import CancellationToken

    tokens: list[object] = []
    real_init = CancellationToken.__init__

    def counted(self: CancellationToken) -> None:
        tokens.append(self)
        real_init(self)

    monkeypatch.setattr(CancellationToken, '__init__', counted)
    calls: list[int] = []
    async with TaskManager() as manager:
        for _ in range(3):
            gate = Gate()
            task_id = (await manager.start(SubAgentConfig(name='b', model=gate.model()), 'b', scope='s')).id
            await gate.entered.wait()
            profiler = cProfile.Profile()
            profiler.enable()
            assert manager.hard_cancel(task_id)
            profiler.disable()
            calls.append(_calls(profiler))
            record = await manager.wait_for(task_id)
            assert record.status is TaskStatus.CANCELLED and gate.finished == 0
    assert tokens == []
    # 85 through the host with a `partial`, a token's cancel and a record copied field by field; 59 since.
    assert max(calls) <= 65, calls
