"""A parent on plain `TestModel` works with the toolset.

`TestModel` calls every tool once with arguments generated from the tool schemas, then answers. It is what users
reach for first in their own tests, so the tools must accept what it generates: a `subagent_type` it can only fill
from the schema has to be a choice the schema names.
"""

from __future__ import annotations

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.test import TestModel

from pydantic_ai_subagents import SubAgentConfig, TaskStatus, create_subagent_toolset

from .conftest import child_text, sync_reply

pytestmark = pytest.mark.anyio


async def test_a_testmodel_parent_delegates_to_a_configured_subagent() -> None:
    toolset = create_subagent_toolset(
        [SubAgentConfig(name='researcher', description='Finds facts.', model=child_text('42 facts'))],
        general_purpose=False,
    )
    async with toolset:
        result = await Agent(TestModel(), toolsets=[toolset]).run('Find some facts.')

        (record,) = toolset.manager.list()
        assert record.subagent == 'researcher'
        assert record.status is TaskStatus.COMPLETED
    calls = [p for m in result.all_messages() if isinstance(m, ModelResponse) for p in m.parts]
    assert sorted(p.tool_name for p in calls if isinstance(p, ToolCallPart)) == sorted(
        [
            'answer_subagent',
            'check_task',
            'hard_cancel_task',
            'list_active_tasks',
            'message_task',
            'soft_cancel_task',
            'task',
            'wait_tasks',
        ]
    )
    (task_return,) = [
        p
        for m in result.all_messages()
        for p in getattr(m, 'parts', [])
        if isinstance(p, ToolReturnPart) and p.tool_name == 'task'
    ]
    assert task_return.outcome == 'success'
    assert task_return.model_response_str() == sync_reply('42 facts', record.id)


async def test_a_testmodel_parent_with_only_the_general_purpose_subagent() -> None:
    # The general-purpose subagent runs on the parent's model: TestModel is the child too, and it calls its own
    # tool, ask_parent, so the sync task comes back paused on a question.
    toolset = create_subagent_toolset()
    async with toolset:
        result = await Agent(TestModel(), toolsets=[toolset]).run('Do something.')

        (record,) = toolset.manager.list()
        assert record.subagent == 'general-purpose'
        assert record.status is TaskStatus.WAITING_FOR_ANSWER
    (task_return,) = [
        p
        for m in result.all_messages()
        for p in getattr(m, 'parts', [])
        if isinstance(p, ToolReturnPart) and p.tool_name == 'task'
    ]
    assert task_return.outcome == 'success'
    assert 'the subagent asks' in task_return.model_response_str()
