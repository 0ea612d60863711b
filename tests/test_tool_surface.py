"""The tool surface a model reads: schemas, size budget, and replies that lead to the next step."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from pydantic_ai_subagents import SubAgentConfig, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents._tools import CONTINUE_TASK_ID, INSTRUCTIONS, REPEAT_NOTE

from .conftest import Gate, Script, answered_reply, call, child_text, split_sync_reply, sync_reply, task_id_from

pytestmark = pytest.mark.anyio


def researcher(model: Any = None) -> SubAgentConfig:
    return SubAgentConfig(name='researcher', instructions='You research.', model=model or child_text('42 facts'))


# Five subagents with one-line descriptions, as in the delegation evals: the budget is measured on them.
TEAM = [
    SubAgentConfig(name='researcher', description='Looks up facts and answers research questions.'),
    SubAgentConfig(name='translator', description='Translates a short text into one language.'),
    SubAgentConfig(name='card_writer', description='Writes greeting cards.'),
    SubAgentConfig(name='surveyor', description='Surveys a large field item by item; slow.'),
    SubAgentConfig(name='forecaster', description='Gives the weather forecast for a city.'),
]


async def tool_definitions(configs: list[SubAgentConfig], **options: Any) -> tuple[list[Any], str]:
    model = TestModel(call_tools=[])
    toolset = create_subagent_toolset(configs, **options)
    async with toolset:
        await Agent(model, toolsets=[toolset]).run('hi')
    params = model.last_model_request_parameters
    assert params is not None
    return params.function_tools, params.instruction_parts[0].content if params.instruction_parts else ''


async def test_tool_definitions_and_instructions_stay_within_their_budget() -> None:
    tools, _ = await tool_definitions(TEAM, general_purpose=False)
    text = json.dumps(
        [{'name': t.name, 'description': t.description, 'parameters': t.parameters_json_schema} for t in tools]
    )
    assert [t.name for t in tools] == [
        'task',
        'check_task',
        'list_active_tasks',
        'soft_cancel_task',
        'hard_cancel_task',
        'answer_subagent',
        'wait_tasks',
        'message_task',
    ]
    # 2,500 before `continue_task_id` had a description (about 90 characters): it turned the follow-up evaluation from
    # failing to passing on the evaluations' small model.
    assert len(text) <= 2_600, len(text)
    assert len(INSTRUCTIONS) <= 600, len(INSTRUCTIONS)


async def test_continue_task_id_says_what_it_is_in_the_schema() -> None:
    """Without a description of its own, a small model (Qwen2.5-Coder-1.5B in the evals) never passed
    continue_task_id, even when asked to continue a task: it started the job again in a new task."""
    tools, _ = await tool_definitions(TEAM)
    task = next(t for t in tools if t.name == 'task')
    assert task.parameters_json_schema['properties']['continue_task_id'] == {
        'default': '',
        'description': CONTINUE_TASK_ID,
        'type': 'string',
    }


async def test_subagent_type_is_an_enum_of_the_configured_names() -> None:
    tools, _ = await tool_definitions(TEAM)
    task = next(t for t in tools if t.name == 'task')
    subagent_type = task.parameters_json_schema['properties']['subagent_type']
    assert subagent_type['enum'] == [
        'researcher',
        'translator',
        'card_writer',
        'surveyor',
        'forecaster',
        'general-purpose',
    ]
    # What a parameter means is said once, in the instructions, to keep the tool text small.
    assert 'A description is the whole job: the subagent sees nothing else.' in INSTRUCTIONS


async def test_a_name_outside_the_enum_still_gets_a_retry_naming_the_valid_ones() -> None:
    script = Script([[call('task', description='x', subagent_type='research_bot')]])
    toolset = create_subagent_toolset([researcher(child_text('ok'))], general_purpose=False)
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    assert "Unknown subagent_type 'research_bot'. Valid: researcher." in script.replies[1][0]


async def test_an_async_start_names_the_call_that_gets_its_result() -> None:
    gate = Gate()
    script = Script([[call('task', description='job', subagent_type='researcher', mode='async')]])
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        gate.release.set()
    reply = script.replies[1][0]
    tid = task_id_from(reply)
    assert reply.startswith(f'Task started with ID: {tid}\n')
    assert f'wait_tasks(task_ids=["{tid}"])' in reply
    assert 'result is not here yet' in reply


def asking_child(questions: list[str], result: str) -> FunctionModel:
    """A child that asks each question in turn, then answers with `result` and the answers it got."""

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answers = [str(p.content) for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
        if len(answers) < len(questions):
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': questions[len(answers)]})])
        return ModelResponse(parts=[TextPart(f'{result} ({", ".join(answers)})')])

    return FunctionModel(child)


def paused_id(reply: str) -> str:
    assert ' paused: the subagent asks: ' in reply, reply
    return reply.split('Task ', 1)[1].split(' ', 1)[0]


async def test_answering_a_sync_task_waits_for_its_next_question_then_its_result() -> None:
    script = Script(
        [
            [call('task', description='card', subagent_type='researcher')],
            lambda s: [call('answer_subagent', task_id=paused_id(s.reply()), answer='Alice')],
            lambda s: [call('answer_subagent', task_id=paused_id(s.reply()), answer='warm')],
        ]
    )
    toolset = create_subagent_toolset([researcher(asking_child(['Who is it for?', 'Which tone?'], 'Card'))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert 'asks: Who is it for?' in script.replies[1][0]
    assert 'asks: Which tone?' in script.replies[2][0]
    assert 'answer_subagent' in script.replies[2][0]
    assert script.replies[3] == [answered_reply('Card (Alice, warm)', record.id)]
    assert record.status is TaskStatus.COMPLETED
    # The parent saw the result in the reply: no notice about the task is owed to it.
    assert all('[subagents]' not in r for replies in script.replies for r in replies)


async def test_the_parent_stopping_while_answering_a_sync_task_stops_the_task() -> None:
    gate = Gate()

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, 'parts', [])):
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which?'})])
        gate.entered.set()
        await gate.release.wait()
        return ModelResponse(parts=[TextPart('never')])

    script = Script(
        [
            [call('task', description='job', subagent_type='researcher')],
            lambda s: [call('answer_subagent', task_id=paused_id(s.reply()), answer='that one')],
        ]
    )
    toolset = create_subagent_toolset([researcher(FunctionModel(child))])
    async with toolset:
        async with anyio.create_task_group() as tg:
            tg.start_soon(Agent(script.model(), toolsets=[toolset]).run, 'go')
            await gate.entered.wait()
            tg.cancel_scope.cancel()
        (record,) = toolset.manager.list()
        record = await toolset.manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.requested_by == 'parent'


async def test_an_answer_moves_the_task_on_at_once() -> None:
    gate = Gate()

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, 'parts', [])):
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which?'})])
        await gate.release.wait()
        return ModelResponse(parts=[TextPart('done')])

    toolset = create_subagent_toolset([researcher(FunctionModel(child))])
    async with toolset:
        manager = toolset.manager
        record = await manager.start(toolset.subagents['researcher'], 'job', scope='c')
        record = await manager.wait_for(record.id)
        assert record.status is TaskStatus.WAITING_FOR_ANSWER
        assert manager.answer(record.id, 'this')
        # Running again as soon as the answer is handed over, not when the subagent next reports in.
        assert (now := manager.get(record.id)) is not None and now.status is TaskStatus.RUNNING
        assert not manager.answer(record.id, 'again')
        gate.release.set()
        assert (await manager.wait_for(record.id)).result == 'done'


async def test_every_reply_about_a_finished_task_carries_its_result() -> None:
    script = Script(
        [
            [call('task', description='job', subagent_type='researcher', mode='async')],
            lambda s: [call('wait_tasks', task_ids=[task_id_from(s.replies[1][0])])],
            lambda s: [
                call('answer_subagent', task_id=task_id_from(s.replies[1][0]), answer='x'),
                call('soft_cancel_task', task_id=task_id_from(s.replies[1][0])),
                call('hard_cancel_task', task_id=task_id_from(s.replies[1][0])),
                call('check_task', task_id=task_id_from(s.replies[1][0])),
            ],
        ]
    )
    toolset = create_subagent_toolset([researcher(child_text('The answer is 42.'))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    tid = task_id_from(script.replies[1][0])
    finished = f'Task {tid} (researcher) completed. Result:\nThe answer is 42.'
    no_question = 'To answer the user, write your answer as plain text, without a tool call.'
    assert script.replies[3] == [
        f'Task {tid} asks nothing now. {finished}\n{no_question}',
        finished,
        finished,
        finished,
    ]


async def test_a_repeated_identical_call_is_told_that_repeating_changes_nothing() -> None:
    loop = [call('task', description='How far is the Moon?', subagent_type='researcher')]
    wrong = [call('answer_subagent', task_id='12345', answer='384,400 km')]
    listing = [call('list_active_tasks')]
    script = Script([wrong, wrong, loop, wrong, loop, listing, listing, listing, listing, wrong])
    toolset = create_subagent_toolset([researcher(child_text('384,400 km'))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (first,) = toolset.manager.list()
    no_question = (
        "No task with ID '12345' asks you anything. To answer the user, write your answer as plain text, without a "
        'tool call.'
    )
    assert script.replies[1] == [no_question]
    assert script.replies[2] == [f'{no_question}\n{REPEAT_NOTE}']
    # A cycle of calls is caught too: the same call between other calls.
    assert script.replies[3] == [sync_reply('384,400 km', first.id)]
    assert script.replies[4] == [f'{no_question}\n{REPEAT_NOTE}']
    # The same job again is not run again: the reply is the first one's result.
    assert script.replies[5] == [done_before('researcher', first.id, '384,400 km')]
    # Four other calls later, the call is no longer recent.
    assert script.replies[10] == [no_question]


def done_before(subagent: str, task_id: str, result: str) -> str:
    return (
        f'Not started: you gave this same job to {subagent} as task {task_id}, and it completed. Result:\n{result}\n'
        'Use this result. To run the job anew, change the description.'
    )


async def test_a_job_the_run_already_saw_completed_is_not_run_again() -> None:
    def moon(**more: str) -> ToolCallPart:
        return call('task', description='How far is the Moon?', subagent_type='researcher', **more)

    def first_id(s: Script) -> str:
        return s.replies[1][0].rpartition('continue_task_id="')[2].split('"', 1)[0]

    script = Script(
        [
            [moon()],
            [moon()],
            # Another description, or a follow-up on the first task, is new work.
            [call('task', description='How far is the Moon? Again, please.', subagent_type='researcher')],
            lambda s: [moon(continue_task_id=first_id(s))],
        ]
    )
    toolset = create_subagent_toolset([researcher(child_text('384,400 km'))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        first, *others = toolset.manager.list()
        assert len(others) == 2
        # In a later run the same job runs again: what the model saw completed was in another run.
        later = Script([[moon()]])
        await Agent(later.model(), toolsets=[toolset]).run('again')
        assert len(toolset.manager.list()) == 4
    assert script.replies[2] == [done_before('researcher', first.id, '384,400 km')]
    assert [split_sync_reply(r[0])[0] for r in (script.replies[3], script.replies[4], later.replies[1])] == [
        '384,400 km'
    ] * 3


async def test_the_same_job_started_twice_at_once_runs_twice() -> None:
    gate = Gate()

    def job() -> ToolCallPart:
        return call('task', description='Roll a die', subagent_type='researcher', mode='async')

    async def release(s: Script) -> list[Any]:
        gate.release.set()
        return [call('wait_tasks', task_ids=[task_id_from(r) for r in s.replies[1]])]

    script = Script([[job(), job()], release])
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        assert len(toolset.manager.list()) == 2
    assert [r.startswith('Task started with ID: ') for r in script.replies[1]] == [True, True]


async def test_a_wait_that_times_out_spells_out_how_to_stop_the_task() -> None:
    gate = Gate()
    script = Script(
        [
            [call('task', description='long job', subagent_type='researcher', mode='async')],
            lambda s: [call('wait_tasks', task_ids=[task_id_from(s.replies[1][0])], timeout=0)],
        ]
    )
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        gate.release.set()
    tid = task_id_from(script.replies[1][0])
    assert script.replies[2][0].endswith(
        f'Still running. To wait more, call wait_tasks again. To stop it: soft_cancel_task(task_id="{tid}") keeps '
        f'its partial result, hard_cancel_task(task_id="{tid}") stops it at once.'
    )


async def test_a_repeat_whose_reply_changed_is_not_flagged() -> None:
    gate = Gate()

    def check(s: Script) -> list[Any]:
        return [call('check_task', task_id=task_id_from(s.replies[1][0]))]

    async def check_once_finished(s: Script) -> list[Any]:
        gate.release.set()
        await toolset.manager.wait_for(task_id_from(s.replies[1][0]))
        return check(s)

    script = Script(
        [[call('task', description='job', subagent_type='researcher', mode='async')], check, check_once_finished]
    )
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    assert 'is running' in script.replies[2][0]
    assert script.replies[3][0].endswith('completed. Result:\nchild result')
    assert REPEAT_NOTE not in script.replies[3][0]


async def test_unknown_ids_by_the_thousand_get_a_bounded_reply() -> None:
    ids = [f'{k:024x}' for k in range(10_000)]
    script = Script([[call('wait_tasks', task_ids=ids, timeout=0)]])
    toolset = create_subagent_toolset([researcher()])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    (reply,) = script.replies[1]
    assert len(reply) < 500, len(reply)
    assert 'and 9995 more' in reply
    assert ids[0] in reply and ids[9_999] not in reply


async def test_an_unknown_id_reply_lists_the_conversations_live_tasks() -> None:
    gate = Gate()
    script = Script(
        [
            [call('task', description='job', subagent_type='researcher', mode='async')],
            [call('check_task', task_id='made-up')],
        ]
    )
    toolset = create_subagent_toolset([researcher(gate.model())])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        gate.release.set()
    tid = task_id_from(script.replies[1][0])
    assert script.replies[2] == [
        f"No task with ID 'made-up' in this conversation. Your active tasks: {tid} (researcher, running)."
    ]
