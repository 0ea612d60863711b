"""`pydantic_ai_subagents.testing`: scripted subagents and `run_parent`, driven through real agents and toolsets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import AgentStreamEvent, FunctionToolCallEvent
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import SubAgentConfig, SubAgents, TaskRunEvent, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents.testing import ParentRun, ToolReply, call, run_parent, scripted_subagent

from .conftest import answered_reply, sync_reply

pytestmark = pytest.mark.anyio


async def test_the_module_docstring_example() -> None:
    # The example at the top of the module, as written there.
    subagents = create_subagent_toolset(
        [scripted_subagent('researcher', answer='Found 3 sources on {prompt}.')], general_purpose=False
    )
    agent = Agent(toolsets=[subagents])
    async with subagents:
        run = await run_parent(agent, [call('task', description='bicycles', subagent_type='researcher')])
    assert run.texts[0].startswith('Found 3 sources on bicycles.')
    assert run.task_ids == [subagents.manager.list()[0].id]
    (record,) = subagents.manager.list()
    assert run.texts == [sync_reply('Found 3 sources on bicycles.', record.id)]
    assert run.output == 'Done.'
    assert [r.tool_name for r in run.replies] == ['task']
    assert run.replies[0].args == {'description': 'bicycles', 'subagent_type': 'researcher'}


async def test_a_subagent_that_asks_waits_for_the_answer_and_uses_it() -> None:
    writer = scripted_subagent(
        'writer', ask='Who is it for?', answer='Draft for {answer} after {steps} steps.', steps=2
    )
    subagents = create_subagent_toolset([writer], general_purpose=False)
    async with subagents:
        run = await run_parent(
            subagents,
            [
                call('task', description='Write it up', subagent_type='writer'),
                lambda run: call('answer_subagent', task_id=run.task_ids[0], answer='children'),
                lambda run: call('wait_tasks', task_ids=run.task_ids),
            ],
        )
        (record,) = subagents.manager.list()
    assert run.reply('task').startswith(f'Task {run.task_ids[0]} paused: the subagent asks: Who is it for?')
    # The task was started in sync mode: answering its question waits for its result as `task` did.
    assert run.reply('answer_subagent') == answered_reply('Draft for children after 2 steps.', record.id)
    assert record.status is TaskStatus.COMPLETED
    assert record.result == 'Draft for children after 2 steps.'
    assert 'Draft for children after 2 steps.' in run.reply('wait_tasks')


async def test_a_working_subagent_stops_on_a_soft_cancel_and_a_stubborn_one_is_escalated() -> None:
    subagents = create_subagent_toolset(
        [scripted_subagent('slow', steps=None), scripted_subagent('stubborn', steps=None, ignore_cancel=True)],
        general_purpose=False,
        soft_cancel_grace=1.0,  # room for the working one to stop on a loaded machine
    )
    async with subagents:
        run = await run_parent(
            subagents,
            [
                [
                    call('task', description='slowly', subagent_type='slow', mode='async'),
                    call('task', description='stubbornly', subagent_type='stubborn', mode='async'),
                ],
                lambda run: [call('soft_cancel_task', task_id=task_id) for task_id in run.task_ids],
                lambda run: call('wait_tasks', task_ids=run.task_ids),
            ],
        )
        slow, stubborn = (subagents.manager.get(task_id) for task_id in run.task_ids)
    assert slow.status is TaskStatus.CANCELLED and stubborn.status is TaskStatus.CANCELLED
    assert slow.cancel is not None and slow.cancel.requested_by == 'model'
    assert slow.partial_result is not None
    assert slow.partial_result.startswith('Stopped on request after ')
    assert slow.partial_result.endswith(' step(s); the rest was not started.')
    assert stubborn.cancel is not None and stubborn.cancel.requested_by == 'escalation'
    assert stubborn.partial_result is not None and 'Stopped on request' not in stubborn.partial_result


async def test_a_stalled_subagent_ends_only_when_stopped() -> None:
    subagents = create_subagent_toolset(
        [scripted_subagent('stuck', stall=True, timeout=0.2), scripted_subagent('hung', stall=True)],
        general_purpose=False,
    )
    async with subagents:
        run = await run_parent(
            subagents,
            [
                [
                    call('task', description='a', subagent_type='stuck', mode='async'),
                    call('task', description='b', subagent_type='hung', mode='async'),
                ],
                lambda run: call('hard_cancel_task', task_id=run.task_ids[1]),
                lambda run: call('wait_tasks', task_ids=run.task_ids),
            ],
        )
        stuck, hung = (subagents.manager.get(task_id) for task_id in run.task_ids)
    assert stuck.status is TaskStatus.FAILED and stuck.error == 'timed out after 0.2 s'
    assert hung.status is TaskStatus.CANCELLED
    assert hung.cancel is not None and hung.cancel.kind == 'hard'
    assert stuck.usage.requests == 0 and hung.usage.requests == 0  # neither model request ever returned


async def test_notices_and_retries_are_reported_as_the_model_read_them() -> None:
    subagents = create_subagent_toolset(
        [scripted_subagent('fast', answer='fast result'), scripted_subagent('slow', steps=20)],
        general_purpose=False,
    )
    async with subagents:
        run = await run_parent(
            subagents,
            [
                call('task', description='quick', subagent_type='fast', mode='async'),
                call('task', description='x', subagent_type='nobody'),
                call('task', description='takes a while', subagent_type='slow'),
            ],
        )
    assert [r.retry for r in run.replies] == [False, True, False]
    assert "Unknown subagent_type 'nobody'. Valid: fast, slow." in run.replies[1].content
    assert run.replies[2].content == sync_reply('Done.', run.task_ids[1])
    assert [r.subagent for r in map(subagents.manager.get, run.task_ids)] == ['fast', 'slow']
    # The fast task finished while the parent waited on the slow one: its notice came into the run.
    assert len(run.notices) == 1 and 'fast result' in run.notices[0] and run.task_ids[0] in run.notices[0]


async def test_run_parent_passes_deps_and_prompt_and_keeps_the_agents_own_tools() -> None:
    seen: list[object] = []

    def note(value: str) -> str:
        """Note a value."""
        seen.append(value)
        return 'noted'

    subagents = create_subagent_toolset(
        [scripted_subagent('echo', answer='{prompt}', deps=lambda deps: seen.append(deps))], general_purpose=False
    )
    agent = Agent(toolsets=[subagents, FunctionToolset([note])], deps_type=str)
    async with subagents:
        run = await run_parent(
            agent,
            [call('note', value='a'), call('task', description='hello', subagent_type='echo')],
            prompt='Please delegate.',
            final='All done.',
            deps='the deps',
        )
        (record,) = subagents.manager.list()
    assert run.texts == ['noted', sync_reply('hello', record.id)]
    assert seen == ['a', 'the deps']
    assert run.output == 'All done.'
    first_request = run.messages[0]
    assert 'Please delegate.' in str(first_request)


def test_scripted_subagent_refuses_what_it_cannot_honour() -> None:
    with pytest.raises(TypeError, match="scripted_subagent\\('x'\\): `model` is the script itself"):
        scripted_subagent('x', model='test')
    with pytest.raises(TypeError, match="scripted_subagent\\('x'\\): `agent` is the script itself"):
        scripted_subagent('x', agent=Agent('test'))
    with pytest.raises(ValueError, match="scripted_subagent\\('x'\\): steps must be >= 0 or None, got -1"):
        scripted_subagent('x', steps=-1)
    with pytest.raises(ValueError, match="scripted_subagent\\('x'\\): `ask` needs can_ask_questions=True"):
        scripted_subagent('x', ask='?', can_ask_questions=False)


def test_scripted_subagent_is_a_config_with_its_work_tool_after_the_users_tools() -> None:
    own = FunctionToolset[None]([])
    config = scripted_subagent('x', toolsets=[own], timeout=3.0)
    assert isinstance(config, SubAgentConfig)
    assert config.toolsets[0] is own and len(config.toolsets) == 2
    assert config.timeout == 3.0
    assert config.summary == 'Scripted subagent x.'


def test_a_parent_run_reads_its_replies_by_tool() -> None:
    run = ParentRun()
    assert run.texts == [] and run.task_ids == [] and run.notices == []
    with pytest.raises(IndexError):
        run.reply('task')


def test_a_parent_run_reads_task_ids_from_the_start_of_a_reply_or_a_finished_tasks_last_line() -> None:
    def task(content: str) -> ToolReply:
        return ToolReply(tool_name='task', args={}, content=content)

    run = ParentRun(
        replies=[
            task(sync_reply('Found: Task started with ID: t-in-the-result', 't1')),
            task(
                sync_reply(sync_reply('a result that quotes a reply', 'quoted'), 't0') + '\nYou made this call before.'
            ),
            task('Task started with ID: t2\nIts result is not here yet.'),
            task('Task t3 paused: the subagent asks: Task started with ID: no?'),
            ToolReply(tool_name='check_task', args={}, content='Task started with ID: t4'),
            task('Task not started: Task started with ID: t5 is only quoted here.'),
        ]
    )
    assert run.task_ids == ['t1', 't0', 't2', 't3']


async def test_scripted_models_stream_for_runs_that_stream() -> None:
    # With an event stream handler the parent's requests are streamed, and with forwarded subagent events the
    # subagent's are too: both scripted models answer the same way when streamed.
    events: list[Any] = []

    async def collect(ctx: RunContext[Any], stream: AsyncIterator[AgentStreamEvent]) -> None:
        async for event in stream:
            events.append(event)

    # With the capability, task events (and the forwarded subagent events) come into the parent's event stream.
    subagents = SubAgents(
        [scripted_subagent('researcher', answer='Found {steps} things.', steps=2)],
        general_purpose=False,
        forward_subagent_events=True,
    )
    try:
        run = await run_parent(
            Agent(capabilities=[subagents]),
            [call('task', description='look', subagent_type='researcher')],
            event_stream_handler=collect,
        )
        (record,) = subagents.manager.list()
    finally:
        await subagents.manager.aclose()
    assert run.texts == [sync_reply('Found 2 things.', record.id)]
    parent_calls = [e.part.tool_name for e in events if isinstance(e, FunctionToolCallEvent)]
    assert parent_calls == ['task']
    child_calls = [
        e.event.part.args_as_dict()
        for e in events
        if isinstance(e, TaskRunEvent) and isinstance(e.event, FunctionToolCallEvent)
    ]
    assert child_calls == [{'step': 1}, {'step': 2}]
