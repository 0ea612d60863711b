"""The delegation eval suite runs end to end: the scripted stand-in passes every case, bad parents fail the right checks.

This keeps `make eval` from rotting: the harness, the cases, the evaluators and the report are exercised with
scripted parents in place of a real model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from evals.cases import SCENARIOS
from evals.harness import ParentModel, parent_model_from_env
from evals.suite import markdown_table, run_suite, write_report
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

pytestmark = pytest.mark.anyio

ROW_KEYS = {
    'name',
    'covers',
    'passed',
    'seconds',
    'requests',
    'input_tokens',
    'output_tokens',
    'error',
    'checks',
    'answer',
    'said',
    'trajectory',
    'tasks',
}


def failed_checks(row: dict[str, Any]) -> list[str]:
    return [c['name'] for c in row['checks'] if not c['passed']]


@pytest.mark.timeout(120)  # fourteen cases, each a few agent runs: seconds, unless the machine is very busy
async def test_the_scripted_stand_in_passes_every_case(tmp_path: Path) -> None:
    report = await run_suite(ParentModel(name='scripted stand-in', work_seconds=0.05))

    assert report['suite'] == 'delegation'
    assert report['scripted_stand_in'] is True
    assert [row['name'] for row in report['cases']] == list(SCENARIOS)
    assert len(report['cases']) >= 12
    for row in report['cases']:
        assert set(row) == ROW_KEYS
        assert row['passed'], (row['name'], failed_checks(row), row['error'], row['trajectory'])
        assert row['checks'] and all(set(c) == {'name', 'passed', 'reason'} for c in row['checks'])
        assert row['seconds'] > 0
        assert row['requests'] >= 1 and row['input_tokens'] > 0 and row['output_tokens'] > 0
    summary = report['summary']
    assert summary['cases'] == summary['passed'] == len(SCENARIOS)
    assert summary['pass_rate'] == 1.0
    assert summary['input_tokens'] == sum(r['input_tokens'] for r in report['cases'])

    by_name = {row['name']: row for row in report['cases']}
    assert [c['tool'] for c in by_name['question_async']['trajectory']] == [
        'task',
        'wait_tasks',
        'answer_subagent',
        'wait_tasks',
    ]
    assert by_name['hard_cancel']['tasks'][0]['cancel'] == 'hard by model'
    assert by_name['wrong_subagent']['trajectory'][0]['retry'] is True
    first, follow_up = by_name['follow_up']['tasks']
    assert follow_up['continued_from'] is not None and first['continued_from'] is None

    path = tmp_path / 'out' / 'report.json'
    write_report(report, path)
    assert json.loads(path.read_text()) == json.loads(json.dumps(report, default=str))
    table = markdown_table(report)
    assert table.count('\n') == len(SCENARIOS) + 2
    assert f'**{len(SCENARIOS)}/{len(SCENARIOS)}** (100%)' in table


def scripted_parent(respond: Any) -> ParentModel:
    return ParentModel(name='scripted parent', model=FunctionModel(respond), work_seconds=0.05, case_timeout=10)


async def test_a_parent_that_answers_without_waiting_fails_async_then_wait() -> None:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if not any(isinstance(m, ModelResponse) for m in messages):
            args = {'description': 'Count the primes below 100.', 'subagent_type': 'researcher', 'mode': 'async'}
            return ModelResponse(parts=[ToolCallPart('task', args)])
        return ModelResponse(parts=[TextPart('I started the task; it is running in the background.')])

    report = await run_suite(scripted_parent(respond), ['async_then_wait'])

    (row,) = report['cases']
    assert not row['passed']
    assert failed_checks(row) == ['task then wait_tasks|check_task', 'answer mentions 25']
    assert [c['tool'] for c in row['trajectory']] == ['task']
    assert report['summary']['pass_rate'] == 0.0


async def test_a_parent_that_loops_on_answer_subagent_fails_question_sync() -> None:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        replies = [
            p.model_response_str()
            for m in messages
            for p in getattr(m, 'parts', [])
            if isinstance(p, ToolReturnPart) and p.tool_name == 'task'
        ]
        if not replies:
            args = {'description': 'Write a birthday card.', 'subagent_type': 'card_writer'}
            return ModelResponse(parts=[ToolCallPart('task', args)])
        task_id = replies[0].split()[1]
        return ModelResponse(parts=[ToolCallPart('answer_subagent', {'task_id': task_id, 'answer': 'Alice'})])

    report = await run_suite(scripted_parent(respond), ['question_sync'])

    (row,) = report['cases']
    assert not row['passed']
    assert row['error'].startswith('Looping: stopped: the same call 3 times in a row: answer_subagent(')
    assert [c['tool'] for c in row['trajectory']] == ['task'] + ['answer_subagent'] * 3
    assert {'Answered', 'answer_subagent(answer~alice) x1..2'} <= set(failed_checks(row))


async def test_a_parent_that_starts_a_new_task_instead_of_continuing_fails_follow_up() -> None:
    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        run_id = messages[-1].run_id
        if not any(isinstance(m, ModelResponse) and m.run_id == run_id for m in messages):
            description = 'Revise the haiku: set it at night.' if len(messages) > 1 else 'Write a haiku about the sea.'
            return ModelResponse(parts=[ToolCallPart('task', {'description': description, 'subagent_type': 'poet'})])
        reply = [p.model_response_str() for p in getattr(messages[-1], 'parts', []) if isinstance(p, ToolReturnPart)]
        return ModelResponse(parts=[TextPart(f'The poet says: {reply[0]}')])

    report = await run_suite(scripted_parent(respond), ['follow_up'])

    (row,) = report['cases']
    assert not row['passed']
    assert failed_checks(row) == ['1+ poet tasks continued', 'answer mentions moonlit']
    assert [t['continued_from'] for t in row['tasks']] == [None, None]


def test_parent_model_from_env() -> None:
    assert parent_model_from_env({}).scripted
    assert parent_model_from_env({'SUBAGENTS_EVAL_MODEL': 'scripted'}).scripted

    served = parent_model_from_env(
        {'SUBAGENTS_EVAL_MODEL': 'openai-compatible:http://127.0.0.1:1/v1', 'SUBAGENTS_EVAL_MODEL_NAME': 'some-model'}
    )
    assert served.name == 'some-model at http://127.0.0.1:1/v1'
    assert served.model is not None and served.model.model_name == 'some-model'
    assert served.settings.get('temperature') == 0.0 and served.settings.get('max_tokens') == 200
    assert served.case_timeout == 150 and served.work_seconds == 10

    by_base_url = parent_model_from_env(
        {
            'SUBAGENTS_EVAL_BASE_URL': 'http://127.0.0.1:1/v1',
            'SUBAGENTS_EVAL_MODEL_NAME': 'other',
            'SUBAGENTS_EVAL_CASE_TIMEOUT': '30',
        }
    )
    assert by_base_url.name == 'other at http://127.0.0.1:1/v1' and by_base_url.case_timeout == 30

    named = parent_model_from_env({'SUBAGENTS_EVAL_MODEL': 'test'})
    assert named.name == 'test' and not named.scripted
