"""Workload 5, what the model pays: characters of the tool definitions, the instructions and the status replies.

Tool definitions are read from a real run: the parent `FunctionModel` gets `AgentInfo.function_tools` (name,
description and JSON schema of each tool, as the toolset's `get_tools` gives them), serialized as compact JSON.
Replies of `check_task` and `list_active_tasks` are measured with 50 live tasks (default `max_concurrent_tasks=8`, so
most are queued). Tokens are estimated as characters / 4.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import anyio
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.usage import UsageLimits

from _harness import Metric, Settings, WorkloadResult, ratio
from _models import blocked_child
from pydantic_ai_subagents import INSTRUCTIONS, SubAgentConfig, create_subagent_toolset

GOAL_TOOLS = 2500
GOAL_INSTRUCTIONS = 600
CHARS_PER_TOKEN = 4
DESCRIPTION = 'Find three recent sources on the history of the bicycle and summarise each in two sentences.'


def tool_chars(tool: ToolDefinition) -> int:
    data = {'name': tool.name, 'description': tool.description or '', 'parameters': tool.parameters_json_schema}
    return len(json.dumps(data, separators=(',', ':'), ensure_ascii=False))


def tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


async def measure(live: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def parent_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn == 0:
            seen['tools'] = info.function_tools
            seen['instructions'] = info.instructions or ''
            return ModelResponse(
                parts=[
                    ToolCallPart('task', {'description': DESCRIPTION, 'subagent_type': 'researcher', 'mode': 'async'})
                    for _ in range(live)
                ]
            )
        if turn == 1:
            returns = _returns(messages[-1])
            ids = [m.group(1) for r in returns if (m := re.search(r'ID: (\w+)', r))]
            seen['task_reply'] = returns[0]
            seen['ids'] = ids
            return ModelResponse(
                parts=[
                    ToolCallPart('list_active_tasks', {}),
                    ToolCallPart('check_task', {'task_id': ids[0]}),
                    ToolCallPart('check_task', {'task_id': ids[-1]}),
                ]
            )
        if turn == 2:
            seen['list'], seen['check_running'], seen['check_pending'] = _returns(messages[-1])
        return ModelResponse(parts=[TextPart('done')])

    toolset = create_subagent_toolset(
        [
            SubAgentConfig(
                name='researcher',
                instructions='You research a topic and report facts with sources.',
                model=blocked_child(lambda: None),
            )
        ]
    )
    parent = Agent(FunctionModel(parent_fn), toolsets=[toolset])
    async with toolset:
        await parent.run('Research the history of the bicycle.', usage_limits=UsageLimits(request_limit=None))

    floor_seen: dict[str, Any] = {}

    def floor_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        floor_seen['tools'] = info.function_tools
        return ModelResponse(parts=[TextPart('done')])

    floor = Agent(FunctionModel(floor_fn))

    @floor.tool
    async def delegate(ctx: RunContext[None], description: str) -> str:  # pyright: ignore[reportUnusedFunction]
        """Delegate a job to a helper."""
        return description

    await floor.run('Go.')
    seen['floor_tools'] = floor_seen['tools']
    return seen


def _returns(message: ModelMessage) -> list[str]:
    assert isinstance(message, ModelRequest)
    return [str(p.content) for p in message.parts if isinstance(p, ToolReturnPart)]


def run(settings: Settings) -> WorkloadResult:
    live = settings.model_cost_live
    seen = anyio.run(measure, live)
    result = WorkloadResult(
        'model_cost',
        f'What the parent model pays (tokens ~ chars/{CHARS_PER_TOKEN})',
        params={'live_tasks': live, 'subagents': ['researcher', 'general-purpose']},
    )
    per_tool = {t.name: tool_chars(t) for t in seen['tools']}
    total = sum(per_tool.values())
    floor_total = sum(tool_chars(t) for t in seen['floor_tools'])
    result.add(
        Metric(
            f'tool definitions ({len(per_tool)} tools)',
            'chars',
            total,
            floor_total,
            ratio(total, floor_total),
            f'<= {GOAL_TOOLS:,}',
            total <= GOAL_TOOLS,
            note=f'~{tokens(total)} tokens; floor = one plain `delegate` tool',
        )
    )
    for name, chars in per_tool.items():
        result.add(Metric(f'  {name}', 'chars', chars))
    result.series['tools'] = per_tool
    instructions = len(INSTRUCTIONS)
    result.add(
        Metric(
            'instructions added by the toolset',
            'chars',
            instructions,
            goal=f'<= {GOAL_INSTRUCTIONS}',
            met=instructions <= GOAL_INSTRUCTIONS,
            note=f'~{tokens(instructions)} tokens',
        )
    )
    received = INSTRUCTIONS in seen['instructions']
    result.add(
        Metric(
            '  ...reach the parent model',
            'yes/no',
            'yes' if received else 'no',
            goal='yes',
            met=received,
            note=f'{len(seen["instructions"])} chars of instructions received',
        )
    )
    if not received:
        result.notes.append(
            'BUG: the toolset instructions never reach the parent model (AgentInfo.instructions lacks them): '
            'SubAgentToolset.for_run returns a _RunToolset that wraps the inner FunctionToolset, and WrapperToolset '
            'relays the instructions of what it wraps (none), so SubAgentToolset.get_instructions is never called'
        )
    for key, label in (
        ('task_reply', 'task(mode="async") reply'),
        ('list', f'list_active_tasks reply, {live} live'),
        ('check_running', 'check_task reply, running task'),
        ('check_pending', 'check_task reply, queued task'),
    ):
        chars = len(seen[key])
        result.add(Metric(label, 'chars', chars, note=f'~{tokens(chars)} tokens'))
    result.series['samples'] = {
        'list_first_line': seen['list'].splitlines()[0],
        'check_running': seen['check_running'],
        'check_pending': seen['check_pending'],
    }
    return result
