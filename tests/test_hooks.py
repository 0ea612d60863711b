"""The application's hooks: before a task starts (allow, refuse, rewrite) and after its run ends (see, redact)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    RefuseTask,
    SubAgentConfig,
    TaskEnd,
    TaskManager,
    TaskRefusedError,
    TaskRequest,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import Script, call, child_text, sync_reply, task_id_from

pytestmark = pytest.mark.anyio


def worker(model: Any = None, name: str = 'worker', **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name=name, instructions='You work.', model=model or child_text(f'{name} did it'), **kw)


async def model_says(toolset: Any, *calls: Any) -> list[str]:
    script = Script([list(calls)])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    return script.replies[1]


async def test_before_task_allows_refuses_and_rewrites() -> None:
    seen: list[TaskRequest] = []
    careful = worker(name='careful')

    async def before_task(request: TaskRequest) -> TaskRequest | RefuseTask | None:
        seen.append(request)
        if 'delete' in request.description:
            return RefuseTask(reason='deleting is not allowed in this workspace.')
        if request.config.name == 'worker' and 'prod' in request.description:
            return dataclasses.replace(request, config=careful, description=f'[read-only] {request.description}')
        return None

    toolset = create_subagent_toolset([worker(), careful], before_task=before_task)
    async with toolset:
        replies = await model_says(
            toolset,
            call('task', description='sum the logs', subagent_type='worker'),
            call('task', description='delete the logs', subagent_type='worker'),
            call('task', description='check prod', subagent_type='worker'),
        )
        records = toolset.manager.list()
    assert replies == [
        sync_reply('worker did it', records[0].id),
        'Task not started: deleting is not allowed in this workspace.',
        sync_reply('careful did it', records[1].id),
    ]
    assert [(r.subagent, r.description) for r in records] == [
        ('worker', 'sum the logs'),
        ('careful', '[read-only] check prod'),
    ]
    assert [r.scope for r in seen] == ['c1', 'c1', 'c1'] and seen[0].parent_task_id is None


async def test_before_task_rewrites_mode_and_limits() -> None:
    def before_task(request: TaskRequest) -> TaskRequest:
        return dataclasses.replace(request, mode='async', usage_limits=UsageLimits(request_limit=1), timeout=30.0)

    looping = Script([[call('nothing')]] * 5)
    toolset = create_subagent_toolset([worker(looping.model())], before_task=before_task)
    async with toolset:
        (reply,) = await model_says(toolset, call('task', description='x', subagent_type='worker', mode='sync'))
        record = await toolset.manager.wait_for(task_id_from(reply))
    # Asked for sync, started async: the tool follows the task as started.
    assert record.mode == 'async'
    assert record.status is TaskStatus.FAILED and record.error is not None and 'request_limit' in record.error


async def test_a_before_task_hook_that_raises_refuses_the_task_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def before_task(request: TaskRequest) -> None:
        raise RuntimeError('policy service down')

    toolset = create_subagent_toolset([worker()], before_task=before_task)
    async with toolset:
        with caplog.at_level(logging.ERROR, logger='pydantic_ai_subagents'):
            replies = await model_says(toolset, call('task', description='x', subagent_type='worker'))
        with pytest.raises(TaskRefusedError, match='policy service down'):
            await toolset.manager.start(worker(), 'x', scope='app')
        assert toolset.manager.list() == []
    assert replies == [
        'Task not started: the application could not check it (its before_task hook failed: RuntimeError: policy '
        'service down)'
    ]
    assert 'the before_task hook failed' in caplog.text


async def test_after_task_redacts_the_result_before_the_parent_reads_it() -> None:
    ends: list[TaskEnd] = []

    async def after_task(end: TaskEnd) -> TaskEnd | None:
        ends.append(end)
        if end.kind == 'completed' and 'sk-' in str(end.output):
            return dataclasses.replace(end, output=str(end.output).replace('sk-12345', '[redacted]'))
        return None

    toolset = create_subagent_toolset(
        [worker(child_text('the key is sk-12345')), worker(name='plain')], after_task=after_task
    )
    async with toolset:
        replies = await model_says(
            toolset,
            call('task', description='find the key', subagent_type='worker'),
            call('task', description='say hi', subagent_type='plain'),
        )
        secret, plain = toolset.manager.list()
        secret_transcript = toolset.manager.transcript(secret.id)
        plain_transcript = toolset.manager.transcript(plain.id)
    assert replies == [sync_reply('the key is [redacted]', secret.id), sync_reply('plain did it', plain.id)]
    assert secret.result == 'the key is [redacted]'
    assert sorted(e.task.id for e in ends) == sorted([secret.id, plain.id])
    assert all(not e.task.is_terminal for e in ends)
    # The unredacted conversation is not kept for a follow-up; an unchanged one is.
    assert secret_transcript is None and plain_transcript is not None


async def test_an_after_task_hook_that_raises_withholds_the_result_and_fails_only_that_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def after_task(end: TaskEnd) -> None:
        if end.task.subagent == 'worker':
            raise ValueError('redactor crashed')

    toolset = create_subagent_toolset([worker(child_text('secret sk-1')), worker(name='plain')], after_task=after_task)
    async with toolset:
        with caplog.at_level(logging.ERROR, logger='pydantic_ai_subagents'):
            replies = await model_says(
                toolset,
                call('task', description='a', subagent_type='worker'),
                call('task', description='b', subagent_type='plain'),
            )
        failed, ok = toolset.manager.list()
    assert failed.status is TaskStatus.FAILED and ok.status is TaskStatus.COMPLETED
    assert failed.error == 'its result was withheld: the after_task hook failed (ValueError: redactor crashed)'
    assert 'sk-1' not in replies[0] and replies[1] == sync_reply('plain did it', ok.id)
    assert 'the after_task hook failed' in caplog.text


async def test_a_plain_hook_on_a_manager_the_application_drives() -> None:
    requests: list[TaskRequest] = []

    def before_task(request: TaskRequest) -> None:
        requests.append(request)

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('leaf')])

    async with TaskManager(before_task=before_task) as manager:
        record = await manager.start(worker(FunctionModel(child)), 'top', scope='s', mode='sync')
        record = await manager.wait_for(record.id)
    assert record.result == 'leaf' and [r.description for r in requests] == ['top']
