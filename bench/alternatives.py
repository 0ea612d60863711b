"""Workloads 1 (delegation) and 5 (tool definitions) for an alternative library, run inside that library's own venv.

    <venv>/bin/python bench/alternatives.py sapa|harness TURNS REPS

`run.py --alternatives` creates the venvs under bench/.venvs/ and runs this script there. It imports only the
standard library, pydantic_ai, anyio and the alternative (not this project), and prints one JSON object on stdout.

* sapa: `subagents-pydantic-ai`, the `task` tool of `create_subagent_toolset` (mode='sync').
* harness: `pydantic-ai-harness`, the `delegate_task` tool of the `SubAgents` capability.

The floor is the same plain `delegate` tool as in w_delegation.py, run in the same process, so each alternative
is compared with a floor on its own Pydantic AI version.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import anyio
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import UsageLimits

CHILD_INSTRUCTIONS = 'You do small jobs and reply with the result.'
PACKAGES = {'sapa': 'subagents-pydantic-ai', 'harness': 'pydantic-ai-harness'}


def instant_child() -> FunctionModel:
    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('ok')])

    return FunctionModel(answer)


def looping_parent(turns: int, tool_name: str, args: dict[str, Any]) -> FunctionModel:
    state = {'calls': 0}

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if state['calls'] < turns:
            state['calls'] += 1
            return ModelResponse(parts=[ToolCallPart(tool_name, dict(args))])
        return ModelResponse(parts=[TextPart('done')])

    return FunctionModel(respond)


@dataclass
class Deps:
    """What `subagents-pydantic-ai` asks of the parent's deps: a `clone_for_subagent` method."""

    def clone_for_subagent(self, max_depth: int = 0) -> Deps:
        return Deps()


def sapa_parent(model: FunctionModel, general_purpose: bool) -> tuple[Agent[Any, str], Any]:
    from subagents_pydantic_ai import SubAgentConfig, create_subagent_toolset

    config = SubAgentConfig(
        name='worker', description='Does small jobs.', instructions=CHILD_INSTRUCTIONS, model=instant_child()
    )
    toolset = create_subagent_toolset(
        [config], default_model=instant_child() if general_purpose else None, include_general_purpose=general_purpose
    )
    return Agent(model, deps_type=Deps, toolsets=[toolset]), toolset


def harness_parent(model: FunctionModel) -> Agent[Any, str]:
    from pydantic_ai_harness.subagents import SubAgent, SubAgents

    child = Agent(instant_child(), name='worker', description='Does small jobs.', instructions=CHILD_INSTRUCTIONS)
    # Without a task owner, the harness runs the child on the parent's shared usage but with the default limits
    # (50 requests), so a long parent run trips them; a child budget of its own (request_limit=None) avoids that.
    sub = SubAgent(child, usage_limits=UsageLimits(request_limit=None))
    return Agent(model, capabilities=[SubAgents(agents=[sub])])


async def one_run(lib: str, variant: str, turns: int) -> float:
    """Seconds per delegation of one parent run with `turns` delegations."""
    limits = UsageLimits(request_limit=None)
    if variant == 'floor':
        child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
        parent = Agent(looping_parent(turns, 'delegate', {'description': 'Do job x.'}))

        @parent.tool
        async def delegate(ctx: RunContext[None], description: str) -> str:  # pyright: ignore[reportUnusedFunction]
            """Delegate a job to a helper."""
            return (await child.run(description, usage=ctx.usage, usage_limits=ctx.usage_limits)).output

        started = time.perf_counter()
        result = await parent.run('Go.', usage_limits=limits)
    elif lib == 'sapa':
        model = looping_parent(turns, 'task', {'description': 'Do job x.', 'subagent_type': 'worker', 'mode': 'sync'})
        agent, toolset = sapa_parent(model, general_purpose=False)
        async with toolset:
            started = time.perf_counter()
            result = await agent.run('Go.', deps=Deps(), usage_limits=limits)
    else:
        model = looping_parent(turns, 'delegate_task', {'agent_name': 'worker', 'task': 'Do job x.'})
        agent = harness_parent(model)
        started = time.perf_counter()
        result = await agent.run('Go.', usage_limits=limits)
    elapsed = time.perf_counter() - started
    assert result.output == 'done', result.output
    return elapsed / turns


async def delegation(lib: str, turns: int, reps: int) -> dict[str, Any]:
    variants = ('alt', 'floor')
    for variant in variants:  # warm-up: imports, schema caches
        await one_run(lib, variant, 3)
    samples: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(reps):  # ABBA order, as the harness does
        order = variants if i % 2 == 0 else variants[::-1]
        for variant in order:
            samples[variant].append(await one_run(lib, variant, turns) * 1e3)
    return {v: {'median': statistics.median(s), 'min': min(s), 'max': max(s), 'n': len(s)} for v, s in samples.items()}


async def model_cost(lib: str) -> dict[str, Any]:
    """Characters of the parent's tool definitions and instructions, as the parent model receives them."""
    seen: dict[str, Any] = {}

    def parent_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen['tools'] = info.function_tools
        seen['instructions'] = info.instructions or ''
        return ModelResponse(parts=[TextPart('done')])

    if lib == 'sapa':
        agent, toolset = sapa_parent(FunctionModel(parent_fn), general_purpose=True)
        async with toolset:
            await agent.run('Go.', deps=Deps())
    else:
        await harness_parent(FunctionModel(parent_fn)).run('Go.')
    per_tool = {
        t.name: len(
            json.dumps(
                {'name': t.name, 'description': t.description or '', 'parameters': t.parameters_json_schema},
                separators=(',', ':'),
                ensure_ascii=False,
            )
        )
        for t in seen['tools']
    }
    return {'tools': per_tool, 'tools_total': sum(per_tool.values()), 'instructions': len(seen['instructions'])}


async def main(lib: str, turns: int, reps: int) -> dict[str, Any]:
    return {
        'library': lib,
        'versions': {
            PACKAGES[lib]: version(PACKAGES[lib]),
            'pydantic_ai': version('pydantic-ai-slim'),
            'anyio': version('anyio'),
            'python': sys.version.split()[0],
        },
        'turns': turns,
        'delegation_ms': await delegation(lib, turns, reps),
        'model_cost': await model_cost(lib),
    }


if __name__ == '__main__':
    if len(sys.argv) != 4 or sys.argv[1] not in PACKAGES:
        raise SystemExit(f'usage: alternatives.py {"|".join(PACKAGES)} TURNS REPS')
    print(json.dumps(anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
