"""Soft and hard cancellation, from the model and from the application, with the races that matter."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import (
    SubAgentConfig,
    TaskCancelled,
    TaskCancelRequested,
    TaskEvent,
    TaskManager,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import Gate, Script, call, leftover_tasks, task_id_from

pytestmark = pytest.mark.anyio


def worker(model: Any, **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name='worker', instructions='You work.', model=model, **kw)


async def start_async(toolset: Any, description: str = 'long job') -> str:
    script = Script([[call('task', description=description, subagent_type='worker', mode='async')]])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    return task_id_from(script.replies[1][0])


async def model_says(toolset: Any, *calls: Any) -> list[str]:
    script = Script([list(calls)])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    return script.replies[1]


async def test_soft_cancel_reaches_the_subagent_and_keeps_its_wrap_up_answer() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        manager = toolset.manager
        tid = await start_async(toolset)
        await gate.entered.wait()
        assert await model_says(toolset, call('soft_cancel_task', task_id=tid)) == [
            f'Cancellation requested for task {tid}. wait_tasks(task_ids=["{tid}"]) returns its partial result.'
        ]
        gate.release.set()  # the in-flight request finishes; the notice arrives with the next one
        record = await manager.wait_for(tid)
        replies = await model_says(toolset, call('check_task', task_id=tid))
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.kind == 'soft' and record.cancel.requested_by == 'model'
    assert record.partial_result == 'Cancelled. Partial findings: 3 sources found.'
    assert any('CANCELLATION REQUEST' in p for p in gate.seen_prompts)
    assert replies == [
        f'Task {tid} (worker): Task cancelled. Partial results: Cancelled. Partial findings: 3 sources found.'
    ]
    assert leftover_tasks() == []


async def test_soft_cancel_works_even_with_no_retries_configured() -> None:
    gate = Gate()
    agent = Agent(gate.model(), retries=0, name='strict')
    toolset = create_subagent_toolset([SubAgentConfig(name='worker', agent=agent)])
    async with toolset:
        tid = await start_async(toolset)
        await gate.entered.wait()
        assert toolset.manager.soft_cancel(tid) is True
        gate.release.set()
        record = await toolset.manager.wait_for(tid)
    assert record.status is TaskStatus.CANCELLED
    assert record.partial_result is not None


async def test_soft_cancel_escalates_to_hard_after_the_grace_period() -> None:
    gate = Gate()  # never released: the subagent ignores the notice
    tool_done = anyio.Event()

    async def search() -> str:
        tool_done.set()
        return 'found 2 papers'

    calls = 0

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return ModelResponse(parts=[TextPart('Searching now.'), ToolCallPart('search', {})])
        await anyio.sleep(3600)
        raise AssertionError('unreachable')

    toolset = create_subagent_toolset(
        [worker(FunctionModel(model), toolsets=[FunctionToolset([search])])], soft_cancel_grace=0.05
    )
    async with toolset:
        tid = await start_async(toolset)
        await tool_done.wait()
        await anyio.sleep(0.01)
        assert toolset.manager.soft_cancel(tid) is True
        with anyio.fail_after(5):
            record = await toolset.manager.wait_for(tid)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.kind == 'hard' and record.cancel.requested_by == 'escalation'
    assert record.partial_result == 'Searching now.\nTool results: search: found 2 papers'
    del gate


async def test_soft_cancel_escalates_after_too_many_turns() -> None:
    async def stubborn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.sleep(0.005)
        return ModelResponse(parts=[ToolCallPart('step', {})])

    async def step() -> str:
        return 'more'

    toolset = create_subagent_toolset(
        [worker(FunctionModel(stubborn), toolsets=[FunctionToolset([step])])],
        soft_cancel_grace=60,
        soft_cancel_grace_turns=2,
    )
    async with toolset:
        tid = await start_async(toolset)
        await anyio.sleep(0.02)
        toolset.manager.soft_cancel(tid)
        with anyio.fail_after(5):
            record = await toolset.manager.wait_for(tid)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.requested_by == 'escalation'


async def test_hard_cancel_stops_the_run_now_and_nothing_starts_after_it() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        tid = await start_async(toolset)
        await gate.entered.wait()
        replies = await model_says(toolset, call('hard_cancel_task', task_id=tid))
        record = toolset.manager.get(tid)
        calls_at_cancel = gate.calls
        await anyio.sleep(0.05)
        transcript = toolset.manager.transcript(tid)
    assert replies == [f'Task {tid} stopped.']
    assert record is not None and record.status is TaskStatus.CANCELLED
    assert record.partial_result is None
    assert gate.finished == 0  # the in-flight model request was abandoned
    assert gate.calls == calls_at_cancel == 1
    assert transcript is not None  # kept for the application


async def test_cancel_replies_follow_the_states_table() -> None:
    gate = Gate()

    async def fail(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ValueError('bad')

    configs = [
        worker(gate.model()),
        SubAgentConfig(name='done', model=FunctionModel(lambda m, i: ModelResponse(parts=[TextPart('ok')]))),
        SubAgentConfig(name='broken', model=FunctionModel(fail)),
    ]
    toolset = create_subagent_toolset(configs)
    async with toolset:
        manager = toolset.manager
        script = Script(
            [
                [
                    call('task', description='a', subagent_type='done'),
                    call('task', description='b', subagent_type='broken'),
                    call('task', description='c', subagent_type='worker', mode='async'),
                ]
            ]
        )
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        done, broken, running = manager.list()
        await gate.entered.wait()
        replies = await model_says(
            toolset,
            call('soft_cancel_task', task_id=done.id),
            call('hard_cancel_task', task_id=broken.id),
            call('soft_cancel_task', task_id=running.id),
            call('soft_cancel_task', task_id=running.id),
            call('hard_cancel_task', task_id=running.id),
        )
        again = await model_says(
            toolset, call('soft_cancel_task', task_id=running.id), call('hard_cancel_task', task_id=running.id)
        )
    assert replies == [
        # A task that has ended cannot be cancelled: the reply says how it ended, with its result.
        f'Task {done.id} (done) completed. Result:\nok',
        f'Task {broken.id} (broken) failed: {broken.error}',
        f'Cancellation requested for task {running.id}. wait_tasks(task_ids=["{running.id}"]) returns its partial '
        'result.',
        f'Cancellation already requested for task {running.id} (soft). '
        f'wait_tasks(task_ids=["{running.id}"]) returns its result.',
        f'Task {running.id} stopped.',
    ]
    assert again == [f'Task {running.id} (worker): Task cancelled. No partial results.'] * 2


async def test_pending_task_is_cancelled_at_once() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())], max_concurrent_tasks=1)
    async with toolset:
        first = await start_async(toolset)
        second = await start_async(toolset)
        third = await start_async(toolset)
        assert toolset.manager.get(second).status is TaskStatus.PENDING  # type: ignore[union-attr]
        replies = await model_says(
            toolset, call('soft_cancel_task', task_id=second), call('hard_cancel_task', task_id=third)
        )
        assert toolset.manager.get(second).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
        assert toolset.manager.get(third).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
        gate.release.set()
        record = await toolset.manager.wait_for(first)
    assert replies == [f'Task {second} was queued and is now cancelled.', f'Task {third} stopped.']
    assert record.status is TaskStatus.COMPLETED
    assert gate.calls == 1  # the cancelled ones never started


async def test_cancel_while_waiting_for_an_answer_releases_the_question() -> None:
    answers: list[str] = []

    async def asker(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        from pydantic_ai.messages import ToolReturnPart

        returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Go on?'})])
        answers.append(str(returns[-1].content))
        return ModelResponse(parts=[TextPart('Stopped early; had 1 of 3 parts.')])

    toolset = create_subagent_toolset([worker(FunctionModel(asker))])
    async with toolset:
        manager = toolset.manager
        tid = await start_async(toolset)
        await manager.wait_for(tid)
        assert manager.get(tid).status is TaskStatus.WAITING_FOR_ANSWER  # type: ignore[union-attr]
        assert manager.soft_cancel(tid) is True
        record = await manager.wait_for(tid, until_question=False)
        assert manager.answer(tid, 'too late') is False
    assert record.status is TaskStatus.CANCELLED
    assert record.partial_result == 'Stopped early; had 1 of 3 parts.'
    assert answers[0].startswith('CANCELLATION REQUEST')

    # hard cancel of a waiting task
    toolset = create_subagent_toolset([worker(FunctionModel(asker))])
    async with toolset:
        tid = await start_async(toolset)
        await toolset.manager.wait_for(tid)
        assert toolset.manager.hard_cancel(tid) is True
        record = await toolset.manager.wait_for(tid, until_question=False)
    assert record.status is TaskStatus.CANCELLED
    assert [t.status for t in record.history][-2:] == [TaskStatus.WAITING_FOR_ANSWER, TaskStatus.CANCELLED]


async def test_hard_cancel_cascades_to_nested_tasks() -> None:
    inner_gate = Gate()
    inner = SubAgentConfig(name='inner', model=inner_gate.model())
    nested = create_subagent_toolset([inner], general_purpose=False)
    middle_script = Script([[call('task', description='deep work', subagent_type='inner')]])
    middle = SubAgentConfig(name='worker', model=middle_script.model(), toolsets=[nested])
    toolset = create_subagent_toolset([middle])
    async with toolset, nested:
        tid = await start_async(toolset)
        await inner_gate.entered.wait()
        (child,) = nested.manager.list()
        assert child.parent_task_id == tid
        assert toolset.manager.hard_cancel(tid) is True
        top = await toolset.manager.wait_for(tid)
        child = await nested.manager.wait_for(child.id)
    assert top.status is TaskStatus.CANCELLED
    assert child.status is TaskStatus.CANCELLED
    assert child.cancel is not None and child.cancel.requested_by == 'parent'
    assert inner_gate.finished == 0


async def test_cancelled_parent_run_stops_its_sync_task() -> None:
    gate = Gate()
    script = Script([[call('task', description='x', subagent_type='worker')]])
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        agent = Agent(script.model(), toolsets=[toolset])
        with anyio.move_on_after(0.1):
            await agent.run('go')
        (record,) = toolset.manager.list()
        record = await toolset.manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.requested_by == 'parent'

    # a run timeout does the same
    gate = Gate()
    script = Script([[call('task', description='x', subagent_type='worker')]])
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        with pytest.raises(Exception, match=r'timed out|Timed out|timeout'):
            await Agent(script.model(), toolsets=[toolset]).run('go', timeout=0.1)
        (record,) = toolset.manager.list()
        record = await toolset.manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED


async def test_two_threads_cancelling_the_same_task() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        tid = await start_async(toolset)
        await gate.entered.wait()
        results: list[bool] = []
        barrier = threading.Barrier(2)

        def cancel(kind: str) -> None:
            barrier.wait()
            method = toolset.manager.hard_cancel if kind == 'hard' else toolset.manager.soft_cancel
            results.append(method(tid))

        threads = [threading.Thread(target=cancel, args=(k,)) for k in ('hard', 'hard')]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            await anyio.sleep(0.001)
        record = await toolset.manager.wait_for(tid)
    assert sorted(results) == [False, True]
    assert record.status is TaskStatus.CANCELLED
    assert [t.status for t in record.history].count(TaskStatus.CANCELLED) == 1


async def test_cancel_while_the_task_completes_gives_one_terminal_state() -> None:
    for _ in range(20):
        gate = Gate()
        toolset = create_subagent_toolset([worker(gate.model())])
        events: list[TaskEvent] = []
        async with toolset:
            manager = toolset.manager

            async def collect() -> None:
                async for event in manager.events():
                    events.append(event)

            async with anyio.create_task_group() as tg:
                tg.start_soon(collect)
                tid = await start_async(toolset)
                await gate.entered.wait()
                gate.release.set()
                await anyio.sleep(0)
                manager.hard_cancel(tid)
                manager.soft_cancel(tid)
                record = await manager.wait_for(tid)
                await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        terminal = [e for e in events if e.task_id == tid and e.is_terminal]
        assert len(terminal) == 1
        assert record.status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED)
        assert terminal[0].status is record.status


async def test_application_cancel_from_another_thread_returns_accepted() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())])
    async with toolset:
        manager = toolset.manager
        tid = await start_async(toolset)
        await gate.entered.wait()
        outcome: dict[str, bool] = {}

        def from_thread() -> None:
            outcome['first'] = manager.hard_cancel(tid)
            outcome['second'] = manager.hard_cancel(tid)
            outcome['unknown'] = manager.soft_cancel('nope')

        thread = threading.Thread(target=from_thread)
        thread.start()
        while thread.is_alive():
            await anyio.sleep(0.001)
        record = await manager.wait_for(tid)
    assert outcome == {'first': True, 'second': False, 'unknown': False}
    assert record.status is TaskStatus.CANCELLED


async def test_one_cancelled_event_per_task_in_the_event_stream() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())])
    seen: list[TaskEvent] = []
    async with toolset:
        manager = toolset.manager

        async def collect() -> None:
            async for event in manager.events():
                seen.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            tid = await start_async(toolset)
            await gate.entered.wait()
            manager.soft_cancel(tid)
            manager.hard_cancel(tid)
            await manager.wait_for(tid)
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    kinds = [type(e).__name__ for e in seen if e.task_id == tid]
    assert kinds == [
        'TaskCreated',
        'TaskStarted',
        'TaskCancelRequested',
        'TaskCancelRequested',
        'TaskCancelled',
    ]
    cancelled = [e for e in seen if isinstance(e, TaskCancelled)]
    assert cancelled[0].cancel_kind == 'hard'
    requested = [e for e in seen if isinstance(e, TaskCancelRequested)]
    assert [r.cancel_kind for r in requested] == ['soft', 'hard']


async def test_sync_tool_in_a_thread_is_noted_and_its_late_result_discarded() -> None:
    started = threading.Event()
    release = threading.Event()

    def blocking() -> str:
        started.set()
        release.wait(5)
        return 'late'

    calls = 0

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return ModelResponse(parts=[ToolCallPart('blocking', {})])
        return ModelResponse(parts=[TextPart('should not happen')])

    toolset = create_subagent_toolset([worker(FunctionModel(model), toolsets=[FunctionToolset([blocking])])])
    async with toolset:
        tid = await start_async(toolset)
        while not started.is_set():
            await anyio.sleep(0.001)
        toolset.manager.hard_cancel(tid)
        record = await toolset.manager.wait_for(tid)
        release.set()
        await anyio.sleep(0.05)
    assert record.status is TaskStatus.CANCELLED
    assert calls == 1
    final = toolset.manager.get(tid)
    assert final is not None and final.note is not None and 'blocking' in final.note


async def test_closing_the_manager_mid_flight_stops_everything() -> None:
    gates = [Gate() for _ in range(3)]
    configs = [SubAgentConfig(name=f'w{i}', model=g.model()) for i, g in enumerate(gates)]
    manager = TaskManager(max_concurrent_tasks=2)
    toolset = create_subagent_toolset(configs, manager=manager)
    script = Script([[call('task', description='j', subagent_type=f'w{i}', mode='async') for i in range(3)]])
    await Agent(script.model(), toolsets=[toolset]).run('go')
    await gates[0].entered.wait()
    ids = [r.id for r in manager.list()]
    closing = anyio.Event()

    async def cancel_during_close() -> None:
        await closing.wait()
        manager.soft_cancel(ids[1])

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_during_close)
        closing.set()
        await manager.aclose()
    assert all(manager.get(i).status is TaskStatus.CANCELLED for i in ids)  # type: ignore[union-attr]
    assert leftover_tasks() == []
    assert manager.soft_cancel(ids[0]) is False
    with pytest.raises(Exception, match='closed'):
        await model_says(toolset, call('task', description='x', subagent_type='w0'))


async def test_a_subagents_background_tasks_stop_when_its_task_ends() -> None:
    inner_gate = Gate()
    nested = create_subagent_toolset([SubAgentConfig(name='inner', model=inner_gate.model())], general_purpose=False)
    lead_script = Script(
        [[call('task', description='background', subagent_type='inner', mode='async')]], final='lead done'
    )
    toolset = create_subagent_toolset([SubAgentConfig(name='worker', model=lead_script.model(), toolsets=[nested])])
    async with toolset, nested:
        tid = await start_async(toolset)
        lead = await toolset.manager.wait_for(tid)
        (child,) = nested.manager.list()
        child = await nested.manager.wait_for(child.id)
    assert lead.status is TaskStatus.COMPLETED
    assert child.status is TaskStatus.CANCELLED
    assert child.cancel is not None and child.cancel.requested_by == 'parent'


def test_application_calls_from_threads_after_the_loop_is_gone_return_false() -> None:
    import asyncio

    gate = Gate()
    manager = TaskManager()
    config = SubAgentConfig(name='worker', model=gate.model())

    async def start() -> str:
        record = await manager.start(config, 'job', scope='s')
        await gate.entered.wait()
        return record.id

    loop = asyncio.new_event_loop()
    tid = loop.run_until_complete(start())
    # The loop is idle (not running): the request is taken directly, and acted on when the loop runs again.
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(manager.hard_cancel(tid)))
    thread.start()
    thread.join(5)
    record = loop.run_until_complete(manager.wait_for(tid))
    loop.run_until_complete(manager.aclose())
    loop.close()
    thread = threading.Thread(target=lambda: outcome.append(manager.soft_cancel(tid)))
    thread.start()
    thread.join(5)
    assert outcome == [True, False]
    assert record.status is TaskStatus.CANCELLED


def test_one_toolset_across_run_sync_and_asyncio_run() -> None:
    import asyncio

    toolset = create_subagent_toolset([worker(child_text_model('ok'))])
    script = Script([[call('task', description='x', subagent_type='worker')]] * 1)
    agent = Agent(script.model(), toolsets=[toolset])
    agent.run_sync('one')
    agent.run_sync('two', model=Script([[call('task', description='x', subagent_type='worker')]]).model())

    async def once() -> None:
        await agent.run('three', model=Script([[call('task', description='x', subagent_type='worker')]]).model())

    asyncio.run(once())
    asyncio.run(once())
    records = toolset.manager.list()
    assert [r.status for r in records] == [TaskStatus.COMPLETED] * 4


def child_text_model(answer: str) -> Any:
    from .conftest import child_text

    return child_text(answer)


async def test_a_hard_cancel_during_a_thread_run_tool_says_so_in_the_note() -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow_lookup() -> str:
        """Look something up, slowly (a plain function: Pydantic AI runs it in a worker thread)."""
        entered.set()
        release.wait(10)
        return 'late'

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart('slow_lookup', {})])
        return ModelResponse(parts=[TextPart('done')])

    config = SubAgentConfig(name='w', model=FunctionModel(model), toolsets=[FunctionToolset([slow_lookup])])
    async with TaskManager() as manager:
        record = await manager.start(config, 'go', scope='s')
        await anyio.to_thread.run_sync(entered.wait, 10)
        assert manager.hard_cancel(record.id)
        final = await manager.wait_for(record.id, timeout=10)
        release.set()
    assert final.status is TaskStatus.CANCELLED
    assert final.note is not None
    assert 'a sync tool (slow_lookup) was still running in a worker thread' in final.note


async def test_an_in_process_run_is_stopped_through_the_cancellation_agent_run_cancel_uses() -> None:
    """A hard cancel stops an in-process run with the cancellation the run already has, read where
    `AgentRun.cancel` reads it but without building `run.ctx` (see `run_stopper`). This fails if Pydantic AI moves
    it, or if `AgentRun.cancel` starts doing more than that."""
    import inspect

    from pydantic_ai import RunCancelled
    from pydantic_ai.run import AgentRun

    from pydantic_ai_subagents._run._inprocess import run_stopper  # pyright: ignore[reportPrivateUsage]

    code = [line.strip() for line in inspect.getsource(AgentRun.cancel).splitlines() if line.strip()]
    assert code[-1] == 'self.ctx.deps.cancellation.cancel()'
    gate = Gate()
    runs: list[AgentRun[Any, Any]] = []
    outcome: list[str] = []

    async def drive() -> None:
        try:
            async with Agent(gate.model()).iter('go') as run:
                runs.append(run)
                async for _ in run:
                    pass
        except RunCancelled:
            outcome.append('cancelled')

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            await gate.entered.wait()
            run = runs[0]
            graph_run = run._graph_run  # pyright: ignore[reportPrivateUsage]
            assert graph_run.deps.cancellation is run.ctx.deps.cancellation
            stopper = run_stopper(run)
            assert stopper is run.ctx.deps.cancellation
            stopper.cancel()
    assert outcome == ['cancelled'] and gate.finished == 0
