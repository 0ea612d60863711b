"""Steering a running task: the parent's model (`message_task`), the application and the races around a task's end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset

from .conftest import Gate, Script, call, leftover_tasks, task_id_from
from .remembering import prompts_of

pytestmark = pytest.mark.anyio


def worker(model: Any, **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name='worker', instructions='You work.', model=model, **kw)


async def start_async(toolset: Any, description: str = 'long job') -> str:
    script = Script([[call('task', description=description, subagent_type='worker', mode='async')]])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    return task_id_from(script.replies[1][0])


async def model_says(toolset: Any, *calls: Any, conversation_id: str = 'c1') -> list[str]:
    script = Script([list(calls)])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id=conversation_id)
    return script.replies[1]


class Steerable:
    """A child that blocks in its first request until released, then answers with every prompt it has read."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.seen: list[list[str]] = []

    async def fn(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompts = prompts_of(messages)
        self.seen.append(prompts)
        if len(self.seen) == 1:
            self.entered.set()
            await self.release.wait()
        return ModelResponse(parts=[TextPart(' | '.join(prompts))])

    def model(self) -> FunctionModel:
        return FunctionModel(self.fn)


async def test_the_model_steers_a_running_task_and_the_subagent_reads_it_before_it_ends() -> None:
    child = Steerable()
    toolset = create_subagent_toolset([worker(child.model())])
    async with toolset:
        tid = await start_async(toolset, 'count the files')
        await child.entered.wait()
        replies = await model_says(toolset, call('message_task', task_id=tid, message='only the .py files'))
        child.release.set()
        record = await toolset.manager.wait_for(tid)
    assert replies == [f'Message sent to task {tid}; the subagent reads it at its next step.']
    # The run was about to end with its first answer: the message gave it one more turn, which read it.
    assert record.status is TaskStatus.COMPLETED
    assert record.result == ('count the files | Message from the agent that gave you this task: only the .py files')
    assert record.messages == ('only the .py files',)
    assert len(child.seen) == 2
    assert leftover_tasks() == []


async def test_a_message_to_a_queued_task_is_held_and_read_as_it_starts() -> None:
    first, second = Gate(), Steerable()
    toolset = create_subagent_toolset(
        [worker(first.model()), SubAgentConfig(name='second', instructions='x', model=second.model())],
        max_concurrent_tasks=1,
    )
    async with toolset:
        manager = toolset.manager
        blocker = await start_async(toolset)
        await first.entered.wait()
        script = Script([[call('task', description='queued job', subagent_type='second', mode='async')]])
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        queued = task_id_from(script.replies[1][0])
        assert manager.get(queued) is not None and manager.get(queued).status is TaskStatus.PENDING  # type: ignore[union-attr]
        replies = await model_says(toolset, call('message_task', task_id=queued, message='be brief'))
        first.release.set()
        await second.entered.wait()
        second.release.set()
        record = await manager.wait_for(queued)
        await manager.wait_for(blocker)
    assert replies == [f'Message queued for task {queued}: it has not started yet and reads it when it starts.']
    # Held on the job and enqueued as the run began: the very first request carries it.
    assert second.seen[0] == ['queued job', 'Message from the agent that gave you this task: be brief']
    assert record.status is TaskStatus.COMPLETED


async def test_replies_follow_the_states_table() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([worker(gate.model())], soft_cancel_grace=60)
    async with toolset:
        manager = toolset.manager
        tid = await start_async(toolset)
        await gate.entered.wait()
        unknown = await model_says(toolset, call('message_task', task_id='nope', message='hi'))
        foreign = await model_says(toolset, call('message_task', task_id=tid, message='hi'), conversation_id='other')
        assert manager.soft_cancel(tid)
        cancelling = await model_says(toolset, call('message_task', task_id=tid, message='hi'))
        gate.release.set()
        record = await manager.wait_for(tid)
        finished = await model_says(toolset, call('message_task', task_id=tid, message='hi'))
        empty = Script([[call('message_task', task_id=tid, message='  ')]])
        await Agent(empty.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    assert unknown == [f"No task with ID 'nope' in this conversation. Your active tasks: {tid} (worker, running)."]
    assert foreign == [f'No task with ID {tid!r} in this conversation. You have no active tasks: start one with task.']
    assert cancelling == [f'Message not sent to task {tid}: it is being cancelled (soft).']
    assert record.status is TaskStatus.CANCELLED
    assert finished == [
        f'Message not sent: task {tid} has already finished and cannot be steered (for a follow-up, start a task '
        f'with continue_task_id). {manager.describe(record, 8000)}'
    ]
    assert empty.replies[1] == ['{"error":"message is empty: write what the subagent should know."}']
    assert record.messages == ()


async def test_a_finished_task_says_so_with_its_result() -> None:
    toolset = create_subagent_toolset([worker(FunctionModel(lambda m, i: ModelResponse(parts=[TextPart('42')])))])
    async with toolset:
        tid = await start_async(toolset)
        await toolset.manager.wait_for(tid)
        replies = await model_says(toolset, call('message_task', task_id=tid, message='and 43?'))
        assert toolset.manager.message_task(tid, 'and 43?') is False
    assert replies[0].startswith(f'Message not sent: task {tid} has already finished and cannot be steered')
    assert replies[0].endswith('completed. Result:\n42')


async def test_the_application_steers_from_another_thread() -> None:
    child = Steerable()
    toolset = create_subagent_toolset([worker(child.model())])
    async with toolset:
        manager = toolset.manager
        tid = await start_async(toolset)
        await child.entered.wait()
        taken = await anyio.to_thread.run_sync(manager.message_task, tid, 'use metric units')
        assert threading.current_thread() is threading.main_thread()
        child.release.set()
        record = await manager.wait_for(tid)
    assert taken is True
    assert record.result.endswith('Message from the agent that gave you this task: use metric units')
    assert record.messages == ('use metric units',)


async def test_steer_while_the_task_finishes_is_taken_or_refused_never_lost() -> None:
    """The message lands somewhere in the run's last step: the run takes one more turn for it, or refuses it."""
    outcomes: list[bool] = []
    for delay in range(0, 80, 4):
        async with TaskManager() as manager:
            answered = anyio.Event()

            async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
                answered.set()
                return ModelResponse(parts=[TextPart(' | '.join(prompts_of(messages)))])

            record = await manager.start(worker(FunctionModel(fn)), 'job', scope='s')
            await answered.wait()
            for _ in range(delay):
                await anyio.sleep(0)
            taken = manager.message_task(record.id, 'late news')
            final = await manager.wait_for(record.id)
        assert final.status is TaskStatus.COMPLETED
        if taken:
            assert final.result == 'job | Message from the agent that gave you this task: late news', delay
            assert final.messages == ('late news',)
        else:
            assert final.result == 'job', delay
            assert final.messages == ()
        outcomes.append(taken)
    # Early, the message makes the run take one more turn; late, the run (or the task) has ended and refuses it.
    assert outcomes[0] is True
    assert outcomes[-1] is False


def _pause() -> str:
    """A step of work in the child (a module-level tool, so the child process can import it)."""
    time.sleep(0.05)
    return 'paused'


def _steerable_in_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Works in short steps until a message from the parent arrives, then answers with every prompt it read."""
    prompts = prompts_of(messages)
    if any(p.startswith('Message from') for p in prompts):
        return ModelResponse(parts=[TextPart(' | '.join(prompts))])
    Path(prompts[0]).touch()
    return ModelResponse(parts=[ToolCallPart('_pause', {})])


STEERABLE_IN_CHILD = FunctionModel(_steerable_in_child)
PAUSE_TOOLS = FunctionToolset([_pause])


async def test_steering_a_task_in_its_own_process(tmp_path: Path) -> None:
    marker = tmp_path / 'working'
    config = worker(STEERABLE_IN_CHILD, isolation='process', toolsets=[PAUSE_TOOLS])
    async with TaskManager() as manager:
        record = await manager.start(config, str(marker), scope='s')
        with anyio.fail_after(30):
            while not marker.exists():
                await anyio.sleep(0.02)
        assert manager.message_task(record.id, 'more') is True
        final = await manager.wait_for(record.id, timeout=30)
    assert final.status is TaskStatus.COMPLETED, final.error
    assert final.result == f'{marker} | Message from the agent that gave you this task: more'
    assert final.messages == ('more',)


async def test_http_message_route_steers_refuses_and_needs_auth() -> None:
    import httpx
    from fastapi import Header, HTTPException

    from pydantic_ai_subagents.web import create_app

    def auth(authorization: str | None = Header(default=None)) -> None:
        if authorization != 'Bearer ok':
            raise HTTPException(401, 'no')

    child = Steerable()
    async with TaskManager() as manager:
        app = create_app(manager, auth=auth)
        headers = {'authorization': 'Bearer ok'}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://t') as client:
            record = await manager.start(worker(child.model()), 'job', scope='c1')
            await child.entered.wait()
            path = f'/tasks/{record.id}/message'
            refused = await client.post(path, json={'message': 'x'})
            blank = await client.post(path, json={'message': '  '}, headers=headers)
            unknown = await client.post('/tasks/nope/message', json={'message': 'x'}, headers=headers)
            other_scope = await client.post(path, params={'scope': 'c2'}, json={'message': 'x'}, headers=headers)
            sent = await client.post(path, json={'message': 'in French'}, headers=headers)
            child.release.set()
            final = await manager.wait_for(record.id)
            late = await client.post(path, json={'message': 'x'}, headers=headers)
    assert refused.status_code == 401
    assert blank.status_code == 422
    assert unknown.status_code == 404 and other_scope.status_code == 404
    assert sent.status_code == 200, sent.text
    assert sent.json()['accepted'] is True and sent.json()['task']['messages'] == ['in French']
    assert sent.json()['task']['attempts'] == 1 and sent.json()['task']['continued_from'] is None
    assert final.result == 'job | Message from the agent that gave you this task: in French'
    assert late.status_code == 409 and 'already completed' in late.json()['detail']
