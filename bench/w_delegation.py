"""Workload 1, delegation overhead: a parent that makes one sync delegation per turn, N turns.

ours: the `task` tool of `create_subagent_toolset` (mode='sync').
floor: a plain tool `delegate(ctx, description)` that awaits `child.run(...)` with the parent's usage and limits.
surface: the floor's delegation behind a tool surface like ours (plain Pydantic AI): a second `FunctionToolset` with
our eight tools' names, parameters and descriptions (the definitions sent to the model are ours, checked before the
runs), whose `task` is the floor's delegation with a reply shaped as ours (the result, then the line with a task id)
and whose other tools are never called, and our toolset's instructions. The reply's length counts: every model
request of the parent reads the whole history again (`FunctionModel` also estimates its tokens from the text).
It measures what any toolset of this shape costs on Pydantic AI, so that ours/surface is the share of the library's
own code.
Both parent runs get `usage_limits=UsageLimits(request_limit=None)` so neither trips the default request limit.
ours+instructed and floor+instructed: the same two, with a parent agent that has instructions of its own, as most do.
On Pydantic AI 2.78 any instructions make each model request take one more pass over the history (looking for
instructions that changed), so the floor's parent, which has none, skips a cost that ours pays for its toolset's
instructions: with instructions on both parents, the pass is in both.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from dataclasses import replace
from typing import Literal

import anyio
from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_ai.usage import UsageLimits

from _harness import VARIANTS, Metric, Settings, WorkloadResult, alternate, noise_note, ratio, spread
from _models import CHILD_INSTRUCTIONS, instant_child, looping_parent
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset
from pydantic_ai_subagents._tools import CONTINUE_TASK_ID, SubagentTools, sync_reply, task_description
from pydantic_ai_subagents._toolset import INSTRUCTIONS

DelegationVariant = Literal['ours', 'floor', 'surface', 'ours+instructed', 'floor+instructed']

PARENT_INSTRUCTIONS = 'You are a helpful assistant. Delegate each job you are given.'

GOAL = 1.05


def _surface_toolset(child: Agent[None, str], subagents: dict[str, str]) -> FunctionToolset[None]:
    """Plain Pydantic AI tools with the names, parameters and descriptions of our eight; `task` delegates as the
    floor does, the others are never called. Like ours, `task` lists the subagents in its description and puts their
    names in its schema on each request, so the definitions sent to the model are ours, byte for byte (checked by
    `check_surface`). `subagents`: the name and summary of each subagent our toolset offers."""

    async def task(
        ctx: RunContext[None],
        description: str,
        subagent_type: str,
        mode: Literal['sync', 'async'] = 'sync',
        continue_task_id: str = '',
    ) -> str:
        output = (await child.run(description, usage=ctx.usage, usage_limits=ctx.usage_limits)).output
        return sync_reply(output, secrets.token_hex(12))

    async def check_task(ctx: RunContext[None], task_id: str) -> str:
        return task_id

    async def list_active_tasks(ctx: RunContext[None]) -> str:
        return ''

    async def soft_cancel_task(ctx: RunContext[None], task_id: str) -> str:
        return task_id

    async def hard_cancel_task(ctx: RunContext[None], task_id: str) -> str:
        return task_id

    async def answer_subagent(ctx: RunContext[None], task_id: str, answer: str) -> str:
        return answer

    async def wait_tasks(
        ctx: RunContext[None], task_ids: list[str], mode: Literal['all', 'any'] = 'all', timeout: float = 60
    ) -> str:
        return ''

    async def message_task(ctx: RunContext[None], task_id: str, message: str) -> str:
        return message

    others = (check_task, list_active_tasks, soft_cancel_task, hard_cancel_task, answer_subagent, wait_tasks)
    for function in (*others, message_task):
        function.__doc__ = getattr(SubagentTools, function.__name__).__doc__
    tool = Tool(task, name='task', description=task_description(subagents))
    schema = copy.deepcopy(tool.function_schema.json_schema)
    schema['properties']['subagent_type']['enum'] = list(subagents)
    schema['properties']['continue_task_id']['description'] = CONTINUE_TASK_ID

    async def with_names(ctx: RunContext[None], tool_def: ToolDefinition) -> ToolDefinition:
        return replace(tool_def, parameters_json_schema=schema)

    tool.prepare = with_names
    return FunctionToolset([tool, *others, message_task], max_retries=5, instructions=INSTRUCTIONS)


def _worker() -> SubAgentConfig:
    return SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=instant_child())


def _offered() -> dict[str, str]:
    """The subagents our toolset offers with the bench's one worker (it adds a general-purpose one): name, summary."""
    return {name: config.summary for name, config in create_subagent_toolset([_worker()]).subagents.items()}


async def _definitions(toolset: AbstractToolset[None]) -> list[tuple[str, str | None, str]]:
    """The tool definitions a model is sent with `toolset`: name, description and JSON schema of each."""
    seen: list[ToolDefinition] = []

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.extend(info.function_tools)
        return ModelResponse(parts=[TextPart('done')])

    await Agent(FunctionModel(respond), toolsets=[toolset]).run('Go.')
    return [(t.name, t.description, json.dumps(t.parameters_json_schema, sort_keys=True)) for t in seen]


async def check_surface() -> int:
    """Fail unless the surface floor sends the model the same tool definitions as ours; return their size (chars)."""
    ours = create_subagent_toolset([_worker()])
    async with ours:
        expected = await _definitions(ours)
    surface = await _definitions(_surface_toolset(Agent(instant_child()), _offered()))
    assert surface == expected, (surface, expected)
    return sum(len(name) + len(description or '') + len(schema) for name, description, schema in expected)


async def one_run(variant: DelegationVariant, turns: int) -> float:
    """Seconds per delegation of one parent run with `turns` delegations."""
    limits = UsageLimits(request_limit=None)
    instructions = PARENT_INSTRUCTIONS if variant.endswith('+instructed') else None
    if variant.startswith('ours'):
        toolset = create_subagent_toolset([_worker()])
        parent = Agent(
            looping_parent(turns, 'task', {'description': 'Do job {turn}.', 'subagent_type': 'worker', 'mode': 'sync'}),
            toolsets=[toolset],
            instructions=instructions,
        )
        async with toolset:
            started = time.perf_counter()
            result = await parent.run('Go.', usage_limits=limits)
            elapsed = time.perf_counter() - started
    elif variant == 'surface':
        child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
        args = {'description': 'Do job {turn}.', 'subagent_type': 'worker', 'mode': 'sync'}
        parent = Agent(looping_parent(turns, 'task', args), toolsets=[_surface_toolset(child, _offered())])
        started = time.perf_counter()
        result = await parent.run('Go.', usage_limits=limits)
        elapsed = time.perf_counter() - started
    else:
        child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
        parent = Agent(looping_parent(turns, 'delegate', {'description': 'Do job {turn}.'}), instructions=instructions)

        @parent.tool
        async def delegate(ctx: RunContext[None], description: str) -> str:  # pyright: ignore[reportUnusedFunction]
            """Delegate a job to a helper."""
            return (await child.run(description, usage=ctx.usage, usage_limits=ctx.usage_limits)).output

        started = time.perf_counter()
        result = await parent.run('Go.', usage_limits=limits)
        elapsed = time.perf_counter() - started
    assert result.output == 'done', result.output
    # Every turn ran its child (parent and children share the usage): a job answered from memory would measure nothing.
    assert result.usage.requests == 2 * turns + 1, (variant, result.usage.requests)
    return elapsed / turns


def run(settings: Settings) -> WorkloadResult:
    turns = settings.delegation_turns
    result = WorkloadResult(
        'delegation',
        'Delegation overhead (one sync delegation per parent turn)',
        params={'turns': turns, 'reps': settings.delegation_reps},
    )

    variants: tuple[DelegationVariant, ...] = (*VARIANTS, 'surface', 'ours+instructed', 'floor+instructed')

    async def main() -> dict[DelegationVariant, list[float]]:
        size = await check_surface()
        result.notes.append(
            f'The surface floor sends the model the same 8 tool definitions as ours ({size:,} characters).'
        )
        for variant in variants if settings.warmup else ():  # warm-up: imports, schema caches
            await one_run(variant, 3)
        return await alternate(settings.delegation_reps, variants, lambda v: one_run(v, turns))

    samples = anyio.run(main)
    ours = spread([s * 1e3 for s in samples['ours']])
    floor = spread([s * 1e3 for s in samples['floor']])
    r = ratio(ours['median'], floor['median'])
    result.add(
        Metric(
            'time per delegation',
            'ms',
            ours,
            floor,
            r,
            f'<= {GOAL}x',
            None if r is None else r <= GOAL,
            note=noise_note(ours, floor),
        )
    )
    result.add(Metric('extra time per delegation', 'ms', ours['median'] - floor['median']))
    surface = spread([s * 1e3 for s in samples['surface']])
    result.add(
        Metric(
            'floor behind a tool surface like ours (plain Pydantic AI)',
            'ms',
            surface,
            floor,
            ratio(surface['median'], floor['median']),
            note='what a second toolset of our 8 tool definitions plus instructions costs on Pydantic AI, without this '
            'library',
        )
    )
    result.add(
        Metric(
            'ours over that surface floor',
            'x',
            ratio(ours['median'], surface['median']),
            note="this library's own share of the delegation overhead",
        )
    )
    instructed = spread([s * 1e3 for s in samples['ours+instructed']])
    instructed_floor = spread([s * 1e3 for s in samples['floor+instructed']])
    result.add(
        Metric(
            'the same, a parent with instructions of its own',
            'ms',
            instructed,
            instructed_floor,
            ratio(instructed['median'], instructed_floor['median']),
            note='both parents have instructions, so both pay the history pass that instructions cause on each '
            f'model request; extra time per delegation {instructed["median"] - instructed_floor["median"]:.3f} ms',
        )
    )
    result.notes.append(
        'Both variants pay Pydantic AI costs that grow with the parent history, so the per-delegation time grows '
        'with N; the ratio and the extra ms per delegation are the numbers to compare.'
    )
    return result
