"""What the multi-process Redis tests run in their other OS processes: subagent configs for worker processes
(`python -m pydantic_ai_subagents worker --subagents tests.redis_procs:WORKER_SUBAGENTS`), and an application
process (`python -m tests.redis_procs app URL NAMESPACE`) that starts tasks and prints their ids as JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from pydantic_ai import Tool
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import SubAgentConfig

STEP_SECONDS = 0.1
FAST_BUS = {'refresh_interval': 0.05, 'lease_seconds': 2.0, 'read_block': 0.2}


def _prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]


async def stepping(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Works in steps of `STEP_SECONDS` until `steps=N` in the task is reached; wraps up on a cancel notice."""
    await anyio.sleep(STEP_SECONDS)
    prompts = _prompts(messages)
    steps = sum(1 for m in messages if isinstance(m, ModelResponse))
    if any('CANCELLATION REQUEST' in p for p in prompts):
        return ModelResponse(parts=[TextPart(f'partial: {steps} steps done')])
    wanted = int(prompts[0].split('steps=', 1)[1].split()[0]) if 'steps=' in prompts[0] else 1
    if steps >= wanted:
        return ModelResponse(parts=[TextPart(f'finished {steps} steps')])
    return ModelResponse(parts=[ToolCallPart('step', {})])


def step() -> str:
    """Do one step."""
    return 'ok'


async def asking(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Asks its parent which year, then reports for that year."""
    returns = [
        part
        for message in messages
        for part in getattr(message, 'parts', [])
        if isinstance(part, ToolReturnPart) and part.tool_name == 'ask_parent'
    ]
    if not returns:
        return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
    return ModelResponse(parts=[TextPart(f'Report for {returns[-1].content}')])


STEPPER = SubAgentConfig(
    name='stepper',
    instructions='Work in steps.',
    model=FunctionModel(stepping),
    toolsets=[FunctionToolset([Tool(step)])],
)
ASKER = SubAgentConfig(name='asker', instructions='Ask, then report.', model=FunctionModel(asking))
WORKER_SUBAGENTS = [STEPPER, ASKER]


async def app(url: str, namespace: str, lease_seconds: float) -> None:
    """Start one finished, one running and one questioning task, print their ids, then serve until killed."""
    from pydantic_ai_subagents.redis import redis_task_manager

    async with redis_task_manager(
        url,
        namespace=namespace,
        lease_seconds=lease_seconds,
        heartbeat_interval=lease_seconds / 10,
        bus_options=FAST_BUS,
        soft_cancel_grace=30.0,
    ) as manager:
        done = await manager.start(STEPPER, 'steps=1', scope='conv')
        await manager.wait_for(done.id, timeout=10)
        running = await manager.start(STEPPER, 'steps=100000', scope='conv')
        spare = await manager.start(STEPPER, 'steps=100000', scope='conv')
        question = await manager.start(ASKER, 'report', scope='conv')
        await manager.wait_for(question.id, timeout=10)
        store: Any = manager.store
        await store.flush()
        ids = {'done': done.id, 'running': running.id, 'spare': spare.id, 'question': question.id}
        print(json.dumps({'participant': manager.participant, **ids}), flush=True)
        await anyio.sleep_forever()


def make_subagents() -> list[SubAgentConfig]:
    """A function returning configs, as `--subagents module:function` accepts."""
    return [ASKER]


if __name__ == '__main__':  # pragma: no cover - runs in a child process
    command, url, namespace, *rest = sys.argv[1:]
    assert command == 'app'
    anyio.run(app, url, namespace, float(rest[0]) if rest else 1.0)
