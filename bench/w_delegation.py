"""Workload 1, delegation overhead: a parent that makes one sync delegation per turn, N turns.

ours: the `task` tool of `create_subagent_toolset` (mode='sync').
floor: a plain tool `delegate(ctx, description)` that awaits `child.run(...)` with the parent's usage and limits.
Both parent runs get `usage_limits=UsageLimits(request_limit=None)` so neither trips the default request limit.
"""

from __future__ import annotations

import time

import anyio
from pydantic_ai import Agent, RunContext
from pydantic_ai.usage import UsageLimits

from _harness import VARIANTS, Metric, Settings, Variant, WorkloadResult, alternate, noise_note, ratio, spread
from _models import CHILD_INSTRUCTIONS, instant_child, looping_parent
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

GOAL = 1.05


async def one_run(variant: Variant, turns: int) -> float:
    """Seconds per delegation of one parent run with `turns` delegations."""
    limits = UsageLimits(request_limit=None)
    if variant == 'ours':
        config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=instant_child())
        toolset = create_subagent_toolset([config])
        parent = Agent(
            looping_parent(turns, 'task', {'description': 'Do job x.', 'subagent_type': 'worker', 'mode': 'sync'}),
            toolsets=[toolset],
        )
        async with toolset:
            started = time.perf_counter()
            result = await parent.run('Go.', usage_limits=limits)
            elapsed = time.perf_counter() - started
    else:
        child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
        parent = Agent(looping_parent(turns, 'delegate', {'description': 'Do job x.'}))

        @parent.tool
        async def delegate(ctx: RunContext[None], description: str) -> str:  # pyright: ignore[reportUnusedFunction]
            """Delegate a job to a helper."""
            return (await child.run(description, usage=ctx.usage, usage_limits=ctx.usage_limits)).output

        started = time.perf_counter()
        result = await parent.run('Go.', usage_limits=limits)
        elapsed = time.perf_counter() - started
    assert result.output == 'done', result.output
    return elapsed / turns


def run(settings: Settings) -> WorkloadResult:
    turns = settings.delegation_turns
    result = WorkloadResult(
        'delegation',
        'Delegation overhead (one sync delegation per parent turn)',
        params={'turns': turns, 'reps': settings.reps},
    )

    async def main() -> dict[Variant, list[float]]:
        for variant in VARIANTS if settings.warmup else ():  # warm-up: imports, schema caches
            await one_run(variant, 3)
        return await alternate(settings.reps, VARIANTS, lambda v: one_run(v, turns))

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
    result.notes.append(
        'Both variants pay Pydantic AI costs that grow with the parent history, so the per-delegation time grows '
        'with N; the ratio and the extra ms per delegation are the numbers to compare.'
    )
    return result
