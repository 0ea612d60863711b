"""The parent's tools, driven through a real `Agent` whose scripted model calls them as an LLM would."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    INSTRUCTIONS,
    SubAgentConfig,
    SubAgents,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskStarted,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import (
    Gate,
    Script,
    answered_reply,
    call,
    child_text,
    leftover_tasks,
    split_sync_reply,
    sync_reply,
    task_id_from,
)

pytestmark = pytest.mark.anyio


def researcher(model: Any = None, **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name='researcher', instructions='You research.', model=model or child_text('42 facts'), **kw)


async def test_sync_task_returns_result_and_rolls_up_usage() -> None:
    script = Script([[call('task', description='find facts', subagent_type='researcher')]])
    toolset = create_subagent_toolset([researcher()])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
        assert script.replies[1] == [sync_reply('42 facts', record.id)]
        assert record.status is TaskStatus.COMPLETED
        assert record.mode == 'sync'
        assert record.usage.requests == 1
        # parent: 2 requests of its own + 1 of the child
        assert result.usage.requests == 3
    assert leftover_tasks() == []


async def test_async_task_wait_check_and_list() -> None:
    gate = Gate(answer='async result')

    async def release_then_wait(s: Script) -> list[Any]:
        tid = task_id_from(s.replies[1][0])
        listing = toolset.manager.list()
        assert listing[0].status is TaskStatus.RUNNING
        gate.release.set()
        return [call('wait_tasks', task_ids=[tid])]

    script = Script(
        [
            [call('task', description='long job', subagent_type='researcher', mode='async')],
            [call('list_active_tasks')],
            lambda s: [call('check_task', task_id=task_id_from(s.replies[1][0]))],
            release_then_wait,
            lambda s: [call('check_task', task_id=task_id_from(s.replies[1][0])), call('list_active_tasks')],
        ]
    )
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    tid = task_id_from(script.replies[1][0])
    assert script.replies[2][0].startswith(f'1 active task:\n{tid} researcher running')
    assert script.replies[3][0].startswith(f'Task {tid} (researcher) is running')
    assert script.replies[4][0] == f'Task {tid} (researcher) completed. Result:\nasync result'
    assert script.replies[5] == [f'Task {tid} (researcher) completed. Result:\nasync result', 'No active tasks.']


async def test_background_result_is_delivered_without_polling() -> None:
    gate = Gate(answer='background result')

    async def release(s: Script) -> list[Any]:
        gate.release.set()
        with anyio.fail_after(5):
            while not toolset.manager.list()[0].is_terminal:
                await anyio.sleep(0.001)
        return [call('list_active_tasks')]

    script = Script([[call('task', description='job', subagent_type='researcher', mode='async')], release])
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    notices = [p for p in script.prompts[-1] if p.startswith('<task_notice ')]
    assert len(notices) == 1
    assert 'completed. Result:\nbackground result' in notices[0]


async def test_result_of_a_finished_run_reaches_the_next_run_of_the_conversation() -> None:
    gate = Gate(answer='late result')
    first = Script([[call('task', description='job', subagent_type='researcher', mode='async')]])
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        agent = Agent(first.model(), toolsets=[toolset])
        result = await agent.run('go')
        (record,) = toolset.manager.list()
        assert record.status is TaskStatus.RUNNING  # on_run_end='keep'
        gate.release.set()
        await toolset.manager.wait_for(record.id)
        second = Script([])
        await agent.run('what happened?', message_history=result.all_messages(), model=second.model())
    assert any('late result' in p for p in second.prompts[0])


@pytest.mark.parametrize('mode', ['async', 'sync'])
async def test_question_answered(mode: str) -> None:
    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        from pydantic_ai.messages import ToolCallPart, ToolReturnPart

        returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
        return ModelResponse(parts=[TextPart(f'Report for {returns[-1].content}')])

    def answer(s: Script) -> list[Any]:
        reply = s.reply()
        tid = reply.split('Task ', 1)[1].split(' ', 1)[0]
        return [call('answer_subagent', task_id=tid, answer='1999')]

    def first_wait(s: Script) -> list[Any]:
        if mode == 'async':
            return [call('wait_tasks', task_ids=[task_id_from(s.reply())])]
        return answer(s)

    turns: list[Any] = [[call('task', description='report', subagent_type='researcher', mode=mode)], first_wait]
    if mode == 'async':
        turns.append(answer)
        turns.append(lambda s: [call('wait_tasks', task_ids=[toolset.manager.list()[0].id])])
    script = Script(turns)
    toolset = create_subagent_toolset([researcher(FunctionModel(child))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    asked = script.replies[2 if mode == 'async' else 1][0]
    assert 'asks: Which year?' in asked
    assert 'answer_subagent' in asked
    if mode == 'async':
        assert script.replies[-2] == [
            f'Answer delivered; task {record.id} goes on in the background. '
            f'wait_tasks(task_ids=["{record.id}"]) returns its result.'
        ]
        assert script.replies[-1][0].endswith('Result:\nReport for 1999')
    else:
        # Answering a sync task's question goes on waiting as `task` did: the reply is the result and the id.
        assert script.replies[-1] == [answered_reply('Report for 1999', record.id)]
    statuses = [t.status for t in record.history]
    assert statuses == [
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        TaskStatus.WAITING_FOR_ANSWER,
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
    ]


async def test_unanswered_question_times_out_with_a_clear_message() -> None:
    seen: list[str] = []

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        from pydantic_ai.messages import ToolCallPart, ToolReturnPart

        returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
        seen.append(str(returns[-1].content))
        return ModelResponse(parts=[TextPart('went on alone')])

    script = Script([[call('task', description='report', subagent_type='researcher', mode='async')]])
    toolset = create_subagent_toolset([researcher(FunctionModel(child))], question_timeout=0.05)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        record = await toolset.manager.wait_for(toolset.manager.list()[0].id, until_question=False)
    assert record.status is TaskStatus.COMPLETED
    assert seen[0].startswith('No answer came within 0.05 s.')


async def test_bad_input_gets_retries_and_plain_replies() -> None:
    script = Script(
        [
            [call('task', description='x', subagent_type='nobody')],
            [call('task', description='   ', subagent_type='researcher')],
            [call('task', description='x' * 101, subagent_type='researcher')],
            [call('check_task', task_id='no-such-id')],
            [call('task', description='x', subagent_type='researcher', mode='later')],
            [call('soft_cancel_task', task_id='no-such-id'), call('hard_cancel_task', task_id='')],
            [call('answer_subagent', task_id='no-such-id', answer='a'), call('wait_tasks', task_ids=[])],
        ]
    )
    toolset = create_subagent_toolset([researcher()], max_description_chars=100)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        assert toolset.manager.list() == []
    assert "Unknown subagent_type 'nobody'. Valid: researcher, general-purpose." in script.replies[1][0]
    assert 'description is empty' in script.replies[2][0]
    assert 'description has 101 characters; the limit is 100' in script.replies[3][0]
    unknown = "No task with ID 'no-such-id' in this conversation. You have no active tasks: start one with task."
    assert script.replies[4] == [unknown]
    assert "Input should be 'sync' or 'async'" in script.replies[5][0]
    assert script.replies[6][0] == unknown
    assert script.replies[6][1].startswith("No task with ID '' in this conversation.")
    assert script.replies[7][0] == (
        "No task with ID 'no-such-id' asks you anything. To answer the user, write your answer as plain text, without "
        'a tool call.'
    )
    assert 'task_ids is empty' in script.replies[7][1]


async def test_two_conversations_sharing_one_toolset_are_isolated() -> None:
    gate = Gate()
    toolset = create_subagent_toolset([researcher(gate.model())])
    first = Script([[call('task', description='mine', subagent_type='researcher', mode='async')]])
    async with toolset:
        agent = Agent(first.model(), toolsets=[toolset])
        await agent.run('go', conversation_id='alice')
        tid = toolset.manager.list()[0].id
        other = Script(
            [
                [
                    call('check_task', task_id=tid),
                    call('soft_cancel_task', task_id=tid),
                    call('hard_cancel_task', task_id=tid),
                    call('answer_subagent', task_id=tid, answer='x'),
                    call('wait_tasks', task_ids=[tid], timeout=0),
                    call('list_active_tasks'),
                ]
            ]
        )
        await agent.run('snoop', conversation_id='bob', model=other.model())
        record = toolset.manager.get(tid)
        assert record is not None
        assert record.status is TaskStatus.RUNNING
        assert record.cancel is None
        assert record.scope == 'alice'
        gate.release.set()
    unknown = f"No task with ID '{tid}' in this conversation. You have no active tasks: start one with task."
    no_question = (
        f"No task with ID '{tid}' asks you anything. To answer the user, write your answer as plain text, without a "
        'tool call.'
    )
    assert other.replies[1] == [unknown] * 3 + [no_question, unknown, 'No active tasks.']


async def test_deps_reach_the_subagent_unchanged_or_mapped() -> None:
    seen: list[Any] = []

    async def peek(ctx: RunContext[Any]) -> str:
        seen.append(ctx.deps)
        return 'ok'

    plain = SubAgentConfig(name='plain', model=TestModel(), toolsets=[FunctionToolset([peek])])
    mapped = SubAgentConfig(name='mapped', model=TestModel(), toolsets=[FunctionToolset([peek])], deps=lambda d: d['x'])
    script = Script(
        [[call('task', description='a', subagent_type='plain'), call('task', description='b', subagent_type='mapped')]]
    )
    toolset = create_subagent_toolset([plain, mapped])
    async with toolset:
        agent = Agent(script.model(), toolsets=[toolset], deps_type=dict)
        await agent.run('go', deps={'x': 7})
        seen_with_deps = list(seen)
        seen.clear()
        none_script = Script([[call('task', description='a', subagent_type='plain')]])
        await Agent(none_script.model(), toolsets=[toolset]).run('go')
    assert sorted(map(str, seen_with_deps)) == sorted(["{'x': 7}", '7'])
    assert seen == [None]


async def test_structured_output_reaches_the_parent_as_json() -> None:
    class Finding(BaseModel):
        title: str
        score: int

    config = SubAgentConfig(
        name='analyst',
        output_type=Finding,
        model=TestModel(call_tools=[], custom_output_args={'title': 'T', 'score': 3}),
    )
    script = Script([[call('task', description='analyse', subagent_type='analyst')]])
    toolset = create_subagent_toolset([config])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    result, task_id = split_sync_reply(script.replies[1][0])
    assert json.loads(result) == {'title': 'T', 'score': 3} and task_id == record.id
    assert record.result == Finding(title='T', score=3)


async def test_general_purpose_subagent_uses_the_parent_model_and_can_be_turned_off() -> None:
    script = Script([[call('task', description='anything', subagent_type='general-purpose')]], final='parent says hi')
    toolset = create_subagent_toolset([])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    # The child ran on the parent's scripted model, which answered its first turn with a tool call it lacks
    # and then... the general-purpose child has no tools, so the parent's script turn 0 is what it saw first.
    assert script.calls >= 3
    with pytest.raises(ValueError, match='no subagents'):
        create_subagent_toolset([], general_purpose=False)


async def test_subagent_failure_ends_failed_and_the_parent_goes_on() -> None:
    async def boom(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError('model exploded api_key=sk-secretsecretsecret')

    script = Script([[call('task', description='x', subagent_type='researcher')]], final='recovered')
    toolset = create_subagent_toolset([researcher(FunctionModel(boom))])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert result.output == 'recovered'
    assert record.status is TaskStatus.FAILED
    assert script.replies[1][0].startswith(f'Task {record.id} (researcher) failed: RuntimeError: model exploded')
    assert 'sk-secret' not in script.replies[1][0]
    assert 'Traceback' not in script.replies[1][0]


async def test_timeout_fails_the_task() -> None:
    gate = Gate()
    script = Script([[call('task', description='x', subagent_type='researcher')]])
    toolset = create_subagent_toolset([researcher(gate.model(), timeout=0.05)])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert record.status is TaskStatus.FAILED
    assert record.error == 'timed out after 0.05 s'
    assert script.replies[1][0] == f'Task {record.id} (researcher) failed: timed out after 0.05 s'


async def test_usage_limits_per_subagent_and_from_the_parent() -> None:
    async def peek() -> str:
        return 'ok'

    script = Script([[call('task', description='x', subagent_type='researcher')]])
    busy = researcher(
        TestModel(call_tools=['peek']), toolsets=[FunctionToolset([peek])], usage_limits=UsageLimits(request_limit=1)
    )
    toolset = create_subagent_toolset([busy])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.startswith('usage limit reached')
    # The parent's own budget bounds the child: 1 request allowed, and the parent used it before delegating.
    script = Script([[call('task', description='x', subagent_type='researcher')]])
    toolset = create_subagent_toolset([researcher(TestModel(call_tools=[]))])
    async with toolset:
        agent = Agent(script.model(), toolsets=[toolset])
        with pytest.raises(Exception, match='request_limit'):
            await agent.run('go', usage_limits=UsageLimits(request_limit=1))
        (record,) = toolset.manager.list()
    assert record.status is TaskStatus.FAILED
    assert record.usage.requests == 0
    assert record.error is not None and 'request_limit' in record.error


async def test_concurrency_limit_queues_tasks_in_order() -> None:
    gates = [Gate(answer=f'r{i}') for i in range(3)]
    configs = [SubAgentConfig(name=f'w{i}', model=g.model()) for i, g in enumerate(gates)]
    script = Script([[call('task', description=f'job {i}', subagent_type=f'w{i}', mode='async') for i in range(3)]])
    toolset = create_subagent_toolset(configs, max_concurrent_tasks=1)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        manager = toolset.manager
        records = manager.list()
        with anyio.fail_after(5):
            await gates[0].entered.wait()
        assert [r.status for r in manager.list()] == [TaskStatus.RUNNING, TaskStatus.PENDING, TaskStatus.PENDING]
        assert manager.describe(manager.list()[2], 100).endswith('is pending, position 2 in the queue.')
        for gate in gates:
            gate.release.set()
        await manager.wait([r.id for r in records])
        starts = sorted(records, key=lambda r: manager.get(r.id).started_at or 0)  # type: ignore[union-attr]
    assert [r.subagent for r in starts] == ['w0', 'w1', 'w2']


async def test_nesting_depth_and_parent_task_are_recorded() -> None:
    inner = SubAgentConfig(name='inner', model=child_text('deep'))
    nested_toolset = create_subagent_toolset([inner], general_purpose=False, max_nesting_depth=2)
    middle_script = Script([[call('task', description='go deeper', subagent_type='inner')]], final='middle done')
    middle = SubAgentConfig(name='middle', model=middle_script.model(), toolsets=[nested_toolset])
    script = Script([[call('task', description='start', subagent_type='middle')]])
    toolset = create_subagent_toolset([middle], max_nesting_depth=1)
    async with toolset, nested_toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (top,) = toolset.manager.list()
        (nested,) = nested_toolset.manager.list()
    assert top.depth == 1
    assert nested.depth == 2
    assert nested.parent_task_id == top.id
    assert nested.scope != top.scope

    # With depth 1 allowed, the middle subagent's own delegation is refused with a plain reply.
    middle_script = Script([[call('task', description='go deeper', subagent_type='inner')]], final='middle done')
    shared = create_subagent_toolset([inner], general_purpose=False, max_nesting_depth=1)
    middle = SubAgentConfig(name='middle', model=middle_script.model(), toolsets=[shared])
    toolset = create_subagent_toolset([middle], max_nesting_depth=1)
    async with toolset, shared:
        await Agent(Script([[call('task', description='s', subagent_type='middle')]]).model(), toolsets=[toolset]).run(
            'go'
        )
    assert middle_script.replies[1][0].startswith('Task not started: nesting depth limit reached (1)')


async def test_live_task_limit_per_conversation() -> None:
    gate = Gate()
    script = Script([[call('task', description=f'j{i}', subagent_type='researcher', mode='async') for i in range(3)]])
    toolset = create_subagent_toolset([researcher(gate.model())], max_tasks_per_scope=2)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        assert len(toolset.manager.list()) == 2
        gate.release.set()
    refusals = [r for r in script.replies[1] if r.startswith('Task not started')]
    assert refusals == [
        'Task not started: 2 tasks are live in this conversation; the limit is 2. '
        'Finish or cancel tasks first, or do this work yourself.'
    ]


async def test_two_hundred_delegations_in_one_run() -> None:
    script = Script([[call('task', description=f'step {i}', subagent_type='researcher')] for i in range(200)])
    toolset = create_subagent_toolset([researcher(TestModel(call_tools=[], custom_output_text='ok'))])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go', usage_limits=UsageLimits(request_limit=1000))
        records = toolset.manager.list()
    assert len(records) == 200
    assert all(r.status is TaskStatus.COMPLETED for r in records)
    assert result.usage.requests == 401


async def test_on_run_end_cancel_and_wait() -> None:
    gate = Gate()
    script = Script([[call('task', description='bg', subagent_type='researcher', mode='async')]])
    toolset = create_subagent_toolset([researcher(gate.model())], on_run_end='cancel')
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
        assert record.status is TaskStatus.CANCELLED

    gate = Gate()
    script = Script([[call('task', description='bg', subagent_type='researcher', mode='async')]])
    toolset = create_subagent_toolset([researcher(gate.model())], on_run_end='wait')

    async def release_soon() -> None:
        await gate.entered.wait()
        gate.release.set()

    async with toolset, anyio.create_task_group() as tg:
        tg.start_soon(release_soon)
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
        assert record.status is TaskStatus.COMPLETED


async def test_capability_adds_instructions_and_forwards_task_events_to_the_parent_stream() -> None:
    script = Script([[call('task', description='find', subagent_type='researcher')]])
    capability = SubAgents([researcher()])
    agent = Agent(script.model(), capabilities=[capability])
    events: list[TaskEvent] = []
    async with capability.toolset:
        async with agent.run_stream_events('go') as stream:
            async for event in stream:
                if isinstance(event, TaskEvent):
                    events.append(event)
    assert [type(e) for e in events] == [TaskCreated, TaskStarted, TaskCompleted]
    assert len({e.task_id for e in events}) == 1
    assert events[-1].result == '42 facts'
    assert script.info is not None
    assert INSTRUCTIONS in (script.info.instructions or '')


async def test_tool_definitions_stay_small() -> None:
    script = Script([])
    toolset = create_subagent_toolset(
        [
            SubAgentConfig(name='researcher', description='Finds and summarises sources.'),
            SubAgentConfig(name='writer', description='Drafts prose from notes.'),
        ]
    )
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    assert script.info is not None
    tools = script.info.function_tools
    assert sorted(t.name for t in tools) == sorted(
        [
            'task',
            'check_task',
            'list_active_tasks',
            'soft_cancel_task',
            'hard_cancel_task',
            'answer_subagent',
            'wait_tasks',
            'message_task',
        ]
    )
    size = sum(
        len(json.dumps({'name': t.name, 'description': t.description, 'parameters': t.parameters_json_schema}))
        for t in tools
    )
    assert size <= 2500, size
    assert len(INSTRUCTIONS) <= 600


async def test_a_notice_the_model_already_read_through_a_tool_is_taken_back() -> None:
    async def finish_then_check(s: Script) -> list[Any]:
        tid = task_id_from(s.reply())
        with anyio.fail_after(5):
            while not toolset.manager.list()[0].is_terminal:
                await anyio.sleep(0.001)
        return [call('check_task', task_id=tid)]

    script = Script([[call('task', description='job', subagent_type='researcher', mode='async')], finish_then_check])
    toolset = create_subagent_toolset([researcher()])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    assert script.last[0].endswith('completed. Result:\n42 facts')
    assert not [p for p in script.prompts[-1] if p.startswith('<task_notice ')]


async def test_long_results_are_truncated_for_the_model_but_kept_whole() -> None:
    script = Script([[call('task', description='x', subagent_type='researcher')]])
    toolset = create_subagent_toolset([researcher(child_text('y' * 500))], max_result_chars=100)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    # The id comes after the cut: it is never cut off.
    assert script.replies[1][0] == sync_reply('y' * 100 + '\n[... 400 more characters truncated]', record.id)
    assert record.result == 'y' * 500


async def test_pruned_tasks_are_reported_as_gone_not_unknown() -> None:
    script = Script(
        [
            [call('task', description=f'job {i}', subagent_type='researcher') for i in range(3)],
            lambda s: (
                [call('check_task', task_id=r.id) for r in toolset.manager.list()[:1]]
                + [call('check_task', task_id=first_id[0])]
            ),
        ]
    )
    first_id: list[str] = []
    toolset = create_subagent_toolset([researcher()], max_retained=1, retention_seconds=None)
    original_start = toolset.manager.start

    async def recording_start(*args: Any, **kwargs: Any) -> Any:
        record = await original_start(*args, **kwargs)
        first_id.append(record.id)
        return record

    toolset.manager.start = recording_start  # type: ignore[method-assign]
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        retained = toolset.manager.list()
    assert len(retained) <= 2
    assert script.replies[2][-1] == f'Task {first_id[0]} finished long ago; its record is no longer kept.'


async def test_subagent_run_events_are_forwarded_tagged_with_the_task_when_turned_on() -> None:
    from pydantic_ai.messages import PartDeltaEvent, TextPartDelta

    from pydantic_ai_subagents import TaskRunEvent

    async def child_stream(messages: list[ModelMessage], info: AgentInfo) -> Any:
        for piece in ('Sea ', 'stars ', 'regrow arms.'):
            yield piece

    child = SubAgentConfig(name='researcher', model=FunctionModel(stream_function=child_stream))
    script = Script([[call('task', description='find', subagent_type='researcher')]])
    capability = SubAgents([child], forward_subagent_events=True)
    events: list[TaskEvent] = []
    async with capability.toolset:
        agent = Agent(script.model(), capabilities=[capability])
        async with agent.run_stream_events('go') as stream:
            async for event in stream:
                if isinstance(event, TaskEvent):
                    events.append(event)
    kinds = [type(e).__name__ for e in events]
    assert kinds[:2] == ['TaskCreated', 'TaskStarted']
    assert kinds[-1] == 'TaskCompleted'
    run_events = [e for e in events if isinstance(e, TaskRunEvent)]
    assert run_events
    assert {e.task_id for e in run_events} == {events[0].task_id}
    deltas = [
        e.event.delta.content_delta
        for e in run_events
        if isinstance(e.event, PartDeltaEvent) and isinstance(e.event.delta, TextPartDelta)
    ]
    assert ''.join(deltas).endswith('regrow arms.')
    assert script.replies[1] == [sync_reply('Sea stars regrow arms.', events[0].task_id)]


async def test_subagent_run_events_are_not_forwarded_by_default() -> None:
    from pydantic_ai_subagents import TaskRunEvent

    script = Script([[call('task', description='find', subagent_type='researcher')]])
    capability = SubAgents([researcher()])
    seen: list[Any] = []
    async with capability.toolset:
        async with Agent(script.model(), capabilities=[capability]).run_stream_events('go') as stream:
            async for event in stream:
                seen.append(event)
    assert not [e for e in seen if isinstance(e, TaskRunEvent)]
    assert [type(e).__name__ for e in seen if isinstance(e, TaskEvent)] == [
        'TaskCreated',
        'TaskStarted',
        'TaskCompleted',
    ]


async def test_task_ids_with_stray_whitespace_are_understood_by_every_tool() -> None:
    gate = Gate()

    def padded(s: Script) -> list[Any]:
        tid = f'  {task_id_from(s.reply())}\n'
        return [call('check_task', task_id=tid), call('wait_tasks', task_ids=[tid], timeout=0)]

    def cancel(s: Script) -> list[Any]:
        tid = f' {toolset.manager.list()[0].id} '
        return [call('soft_cancel_task', task_id=tid)]

    script = Script([[call('task', description='job', subagent_type='researcher', mode='async')], padded, cancel])
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
        gate.release.set()
        record = await toolset.manager.wait_for(record.id)
    assert script.replies[2][0].startswith(f'Task {record.id} (researcher) is running')
    assert script.replies[2][1].startswith(f'Task {record.id} (researcher) is running')
    assert script.replies[3] == [
        f'Cancellation requested for task {record.id}. wait_tasks(task_ids=["{record.id}"]) returns its partial result.'
    ]
    assert record.cancel is not None
    assert record.status is TaskStatus.CANCELLED
