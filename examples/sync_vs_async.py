"""Sync and async tasks side by side, with the time each step takes.

- sync: `task(..., mode='sync')` blocks the parent until the subagent is done, so two tasks take twice as long;
- async: `task(..., mode='async')` returns a task ID at once; two tasks run in parallel and `wait_tasks` collects
  them;
- async without waiting: the parent does its own work and the result is delivered to it as a notice.

    uv run python examples/sync_vs_async.py
"""

from __future__ import annotations

import asyncio

import anyio
from pydantic_ai import Agent

from _scripted import (
    call,
    calls,
    child,
    demo_model,
    event_printer,
    parent,
    researcher_model,
    say,
    search_toolset,
    section,
)
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

researcher = SubAgentConfig(
    name='researcher',
    instructions='You research a topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=2, delay=0.2)),  # about 0.6 s per task
)
toolset = create_subagent_toolset([researcher])


async def draft_outline(topic: str) -> str:
    """Draft the outline of the article yourself (takes a moment).

    Args:
        topic: The article's topic.
    """
    await anyio.sleep(1.0)
    return f'Outline for {topic}: 1. what a tide pool is, 2. who lives there, 3. how to visit.'


agent = Agent(demo_model(), toolsets=[toolset], tools=[draft_outline])
show = event_printer(clock=True)

ANEMONES = {'description': 'Anemones', 'subagent_type': 'researcher'}
CRABS = {'description': 'Hermit crabs', 'subagent_type': 'researcher'}


async def main() -> None:
    async with toolset:
        section('Sync: each task blocks the parent until it is done')
        result = await agent.run(
            'Research anemones, then hermit crabs, each with a sync researcher task.',
            model=parent(
                lambda h: call('task', **ANEMONES, mode='sync'),
                lambda h: call('task', **CRABS, mode='sync'),
                lambda h: say('Both topics researched, one after the other.'),
            ),
            event_stream_handler=show,
        )
        print(f'parent: {result.output}')

        section('Async: both tasks start at once, run in parallel, and wait_tasks collects them')
        result = await agent.run(
            'Research anemones and hermit crabs with two async researcher tasks started together, then wait.',
            model=parent(
                lambda h: calls(('task', {**ANEMONES, 'mode': 'async'}), ('task', {**CRABS, 'mode': 'async'})),
                lambda h: call('wait_tasks', task_ids=h.task_ids()),
                lambda h: say('Both topics researched in parallel.'),
            ),
            event_stream_handler=show,
        )
        print(f'parent: {result.output}')

        section('Async without waiting: the parent works on, and the result arrives as a notice')
        result = await agent.run(
            'Start an async researcher task on sea stars, draft the outline yourself meanwhile, then sum up.',
            model=parent(
                lambda h: call('task', description='Sea stars', subagent_type='researcher', mode='async'),
                lambda h: call('draft_outline', topic='tide pools'),
                lambda h: say('Outline drafted, and the sea-star research came in while I worked.'),
            ),
            event_stream_handler=show,
        )
        print(f'parent: {result.output}')


if __name__ == '__main__':
    asyncio.run(main())
