"""`SubAgents` in a Pydantic AI agent spec, and manager options that a type checker and the constructor both check."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.agent.spec import AgentSpec

from pydantic_ai_subagents import (
    ManagerOptions,
    SubAgentConfig,
    SubAgents,
    SubAgentSpec,
    SubAgentToolset,
    TaskManager,
    create_subagent_toolset,
)

from .conftest import Script, call, sync_reply

pytestmark = pytest.mark.anyio

SPEC: dict[str, Any] = {
    'name': 'coordinator',
    'capabilities': [
        {
            'SubAgents': {
                'subagents': [
                    {
                        'name': 'researcher',
                        'description': 'Finds sources on a topic.',
                        'instructions': 'You research the topic you are given.',
                        'model': 'test',
                        'can_ask_questions': False,
                        'usage_limits': {'request_limit': 5},
                        'timeout': 30,
                    },
                    {'name': 'writer', 'description': 'Writes drafts.', 'model': 'test', 'can_ask_questions': False},
                ],
                'general_purpose': False,
                'max_concurrent_tasks': 2,
                'soft_cancel_grace': 5,
                'on_run_end': 'cancel',
            }
        }
    ],
}

YAML = """\
name: coordinator
capabilities:
  - SubAgents:
      subagents:
        - name: researcher
          description: Finds sources on a topic.
          instructions: You research the topic you are given.
          model: test
          can_ask_questions: false
          usage_limits: {request_limit: 5}
          timeout: 30
        - name: writer
          description: Writes drafts.
          model: test
          can_ask_questions: false
      general_purpose: false
      max_concurrent_tasks: 2
      soft_cancel_grace: 5
      on_run_end: cancel
"""


def subagents_of(agent: Agent[Any, Any]) -> SubAgents:
    found: list[SubAgents] = []
    agent.root_capability.apply(lambda c: found.append(c) if isinstance(c, SubAgents) else None)
    (capability,) = found
    return capability


@pytest.mark.parametrize('source', ['dict', 'yaml file'])
async def test_an_agent_built_from_a_spec_delegates(source: str, tmp_path: Path) -> None:
    script = Script(
        [
            [call('task', description='tide pools', subagent_type='researcher', mode='sync')],
            [call('task', description='an outline', subagent_type='writer', mode='sync')],
        ]
    )
    if source == 'dict':
        agent = Agent.from_spec(SPEC, model=script.model(), custom_capability_types=[SubAgents])
    else:
        path = tmp_path / 'coordinator.yaml'
        path.write_text(YAML)
        agent = Agent.from_file(path, model=script.model(), custom_capability_types=[SubAgents])
    capability = subagents_of(agent)
    manager = capability.manager
    assert (manager.max_concurrent_tasks, manager.soft_cancel_grace) == (2, 5)
    assert capability.toolset.on_run_end == 'cancel'
    researcher = capability.toolset.subagents['researcher']
    assert researcher.model == 'test' and researcher.timeout == 30 and not researcher.can_ask_questions
    assert researcher.usage_limits is not None and researcher.usage_limits.request_limit == 5
    assert researcher.instructions == 'You research the topic you are given.'
    async with manager:
        result = await agent.run('Research tide pools, then outline a talk.')
    assert result.output == 'done'
    assert script.info is not None
    assert sorted(t.name for t in script.info.function_tools) == [
        'answer_subagent',
        'check_task',
        'hard_cancel_task',
        'list_active_tasks',
        'message_task',
        'soft_cancel_task',
        'task',
        'wait_tasks',
    ]
    # Each subagent ran on the model the spec named (TestModel's reply), and its task is on the record.
    researched, written = manager.list()
    assert script.replies[1] == [sync_reply('success (no tool calls)', researched.id)]
    assert script.replies[2] == [sync_reply('success (no tool calls)', written.id)]
    assert [researched.subagent, written.subagent] == ['researcher', 'writer']


def test_the_spec_schema_describes_the_capability() -> None:
    schema = json.dumps(AgentSpec.model_json_schema_with_capabilities([SubAgents]))
    for expected in ('"SubAgents"', '"SubAgentSpec"', '"max_concurrent_tasks"', '"worker_queue"', '"on_run_end"'):
        assert expected in schema, expected


@pytest.mark.parametrize(
    ('capability', 'message'),
    [
        (
            {'SubAgents': {'subagents': [{'name': 'researcher', 'modle': 'test'}]}},
            "subagent 'researcher' in the agent spec: modle: Extra inputs are not permitted",
        ),
        (
            {'SubAgents': {'subagents': [{'name': 'researcher', 'timeout': 'soon'}]}},
            "subagent 'researcher' in the agent spec: timeout: Input should be a valid number, unable to parse string "
            'as a number',
        ),
        (
            {'SubAgents': {'subagents': [{'description': 'No name.'}]}},
            'subagents[0] in the agent spec: name: Field required',
        ),
        (
            {'SubAgents': {'subagents': [{'name': 'researcher', 'model': 'gpt-4o'}]}},
            "subagent 'researcher': model 'gpt-4o' cannot be used: Unknown model: gpt-4o",
        ),
        (
            {'SubAgents': {'subagents': [{'name': 'researcher', 'usage_limits': {'requests': 3}}]}},
            "subagent 'researcher' in the agent spec: usage_limits: UsageLimits.__init__() got an unexpected keyword "
            "argument 'requests'",
        ),
        (
            {'SubAgents': {'subagents': 'researcher'}},
            "`subagents` in the agent spec must be a list of subagents, got 'researcher'",
        ),
        (
            {'SubAgents': {'subagents': [{'name': 'researcher'}], 'max_concurrent_tasks': 0}},
            'max_concurrent_tasks must be at least 1 (or None)',
        ),
    ],
)
def test_a_bad_spec_is_refused_when_the_agent_is_built(capability: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        Agent.from_spec({'capabilities': [capability]}, model='test', custom_capability_types=[SubAgents])
    assert str(excinfo.value) == f"Failed to instantiate capability 'SubAgents': {message}"


def test_from_spec_takes_every_option_that_is_a_plain_value() -> None:
    spec_options = set(inspect.signature(SubAgents.from_spec).parameters)
    options = set(inspect.signature(SubAgents).parameters) - {'manager', 'manager_options'}
    plain_manager_options = ManagerOptions.__optional_keys__ - {'store', 'bus', 'before_task', 'after_task'}
    assert spec_options == options | plain_manager_options
    assert set(SubAgentSpec.model_fields) == {
        f
        for f in SubAgentConfig.__dataclass_fields__
        if f not in ('toolsets', 'output_type', 'capabilities', 'agent', 'deps')
    }


# ---------------------------------------------------------------------------------------------------- options


def test_manager_options_are_exactly_the_managers_parameters() -> None:
    assert ManagerOptions.__optional_keys__ == set(inspect.signature(TaskManager).parameters)


@pytest.mark.parametrize(
    ('build', 'where'),
    [
        (lambda **o: create_subagent_toolset(**o), 'create_subagent_toolset()'),
        (lambda **o: SubAgentToolset([], **o), 'SubAgentToolset()'),
        (lambda **o: SubAgents(**o), 'SubAgents()'),
    ],
)
def test_a_misspelt_option_is_a_type_error_naming_the_closest(build: Any, where: str) -> None:
    with pytest.raises(TypeError) as excinfo:
        build(max_concurent_tasks=4)
    assert (
        str(excinfo.value)
        == f"{where} got an unknown option 'max_concurent_tasks'; did you mean 'max_concurrent_tasks'?"
    )
    with pytest.raises(TypeError) as excinfo:
        build(max_result_char=100)
    assert str(excinfo.value) == f"{where} got an unknown option 'max_result_char'; did you mean 'max_result_chars'?"
    with pytest.raises(TypeError) as excinfo:
        build(colour='blue')
    assert str(excinfo.value) == (
        f"{where} got an unknown option 'colour'; the manager options are after_task, before_task, bus, "
        'default_timeout, forward_subagent_events, hard_cancel_wait, max_concurrent_tasks, max_nesting_depth, max_retained, '
        'max_tasks_per_scope, question_timeout, retention_seconds, soft_cancel_grace, soft_cancel_grace_turns, store'
    )


def test_good_options_reach_the_manager() -> None:
    toolset = create_subagent_toolset(max_concurrent_tasks=4, soft_cancel_grace=1.5, default_timeout=60)
    assert (toolset.manager.max_concurrent_tasks, toolset.manager.soft_cancel_grace) == (4, 1.5)
    capability = SubAgents(max_nesting_depth=2, question_timeout=10)
    assert (capability.manager.max_nesting_depth, capability.manager.question_timeout) == (2, 10)


def test_the_type_checker_catches_a_misspelt_option(tmp_path: Path) -> None:
    snippet = tmp_path / 'snippet.py'
    snippet.write_text(
        textwrap.dedent(
            """\
            from pydantic_ai_subagents import SubAgents, SubAgentToolset, TaskManager, create_subagent_toolset

            create_subagent_toolset(max_concurent_tasks=4)
            SubAgentToolset([], max_concurent_tasks=4)
            SubAgents(max_concurent_tasks=4)
            TaskManager(max_concurent_tasks=4)
            create_subagent_toolset(max_concurrent_tasks='4')
            create_subagent_toolset(max_concurrent_tasks=4, soft_cancel_grace=1.5)
            SubAgents(max_concurrent_tasks=None, on_run_end='wait', forward_subagent_events=True)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, '-m', 'pyright', '--outputjson', '--pythonpath', sys.executable, str(snippet)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stdout)
    errors = [
        (d['range']['start']['line'] + 1, d['message'].splitlines()[0])
        for d in report['generalDiagnostics']
        if d['severity'] == 'error'
    ]
    assert errors == [
        (3, 'No parameter named "max_concurent_tasks"'),
        (4, 'No parameter named "max_concurent_tasks"'),
        (5, 'No parameter named "max_concurent_tasks"'),
        (6, 'No parameter named "max_concurent_tasks"'),
        (
            7,
            'Argument of type "Literal[\'4\']" cannot be assigned to parameter "max_concurrent_tasks" of type "int | None" in function "create_subagent_toolset"',
        ),
    ], errors
