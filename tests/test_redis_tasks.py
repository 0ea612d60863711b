"""Tasks shared through Redis: two managers, each with its own bus, store and connections (two processes as far as
Redis can tell), and real OS processes where a process must die or restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import SubAgentConfig, TaskCompleted, TaskManager, TaskStatus
from pydantic_ai_subagents.redis import redis_task_manager

from . import redis_server

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url

FAST: dict[str, Any] = {
    'lease_seconds': 1.0,
    'heartbeat_interval': 0.1,
    'bus_options': {'refresh_interval': 0.05, 'lease_seconds': 2.0, 'read_block': 0.2},
}


@pytest.fixture
def namespace() -> str:
    return f'test-{uuid.uuid4().hex[:12]}'


async def blocked_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep_forever()
    raise AssertionError('unreachable')


async def asking_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
    return ModelResponse(parts=[TextPart(f'Report for {returns[-1].content}')])


@pytest.fixture
async def two(redis_url: str, namespace: str) -> AsyncIterator[tuple[TaskManager, TaskManager]]:
    async with (
        redis_task_manager(redis_url, namespace=namespace, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        await b.bus.wait_for_participant(a.participant)  # type: ignore[attr-defined]
        await a.bus.wait_for_participant(b.participant)  # type: ignore[attr-defined]
        yield a, b


async def until(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_task_started_in_one_process_is_seen_and_hard_cancelled_from_another(
    two: tuple[TaskManager, TaskManager],
) -> None:
    a, b = two
    config = SubAgentConfig(name='worker', instructions='Work.', model=FunctionModel(blocked_child))
    started = await a.start(config, 'block', scope='conv')
    await a.wait_for(started.id, timeout=0.05)
    await until(lambda: (r := b.get(started.id)) is not None and r.status is TaskStatus.RUNNING)
    seen = b.get(started.id)
    assert seen is not None and seen.owner == a.participant
    assert [r.id for r in b.list('conv', active_only=True)] == [started.id]

    assert b.hard_cancel(started.id)
    final = await b.wait_for(started.id, timeout=10)
    assert final.status is TaskStatus.CANCELLED
    assert final.cancel is not None and final.cancel.kind == 'hard'
    assert (await a.wait_for(started.id, timeout=1)).status is TaskStatus.CANCELLED
    assert not b.hard_cancel(started.id)  # finished: refused, in both processes
    assert not a.hard_cancel(started.id)


async def test_question_answered_from_another_process(two: tuple[TaskManager, TaskManager]) -> None:
    a, b = two
    config = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
    started = await a.start(config, 'report', scope='conv')
    await until(lambda: (r := b.get(started.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
    waiting = b.get(started.id)
    assert waiting is not None and waiting.question == 'Which year?'
    assert b.answer(started.id, '1999')
    final = await b.wait_for(started.id, until_question=False, timeout=10)
    assert final.status is TaskStatus.COMPLETED
    assert final.result == 'Report for 1999'


async def test_events_of_one_process_reach_the_other(two: tuple[TaskManager, TaskManager]) -> None:
    a, b = two
    seen: list[Any] = []

    async def watch() -> None:
        async for event in b.events('conv'):
            seen.append(event)
            if event.is_terminal:
                return

    config = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.sleep(0.1)
        started = await a.start(config, 'report', scope='conv')
        await until(lambda: (r := a.get(started.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
        assert a.answer(started.id, '2001')
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ['TaskCreated', 'TaskStarted', 'TaskQuestionAsked', 'TaskAnswered', 'TaskCompleted']
    assert isinstance(seen[-1], TaskCompleted) and seen[-1].result == 'Report for 2001'


def quick_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = ''.join(str(getattr(p, 'content', '')) for m in messages for p in getattr(m, 'parts', []))
    return ModelResponse(parts=[TextPart(f'done: {prompt[-20:]}')])


async def test_task_runs_on_a_worker(redis_url: str, namespace: str) -> None:
    from pydantic_ai_subagents.redis import Worker

    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(quick_child))
    worker = Worker(
        [on_worker],
        url=redis_url,
        namespace=namespace,
        queue='q1',
        lease_seconds=1.0,
        heartbeat_interval=0.1,
        bus_options=FAST['bus_options'],
    )
    async with anyio.create_task_group() as tg, redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        tg.start_soon(worker.run)
        await worker.wait_ready()
        started = await parent.start(on_parent, 'the job', scope='conv')
        final = await parent.wait_for(started.id, timeout=10)
        assert final.status is TaskStatus.COMPLETED, final
        assert final.result == 'done: the job'
        assert final.owner == parent.participant
        assert final.usage.requests == 1
        worker.stop()
    assert worker.jobs_done == 1
