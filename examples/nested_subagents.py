"""Subagents that delegate in turn: a "lead" subagent has the subagent tools itself.

The lead's tasks run at depth 2 and record the lead's task as their parent. Hard-cancelling the lead's task stops
the tasks it started too, at any depth.

    uv run python examples/nested_subagents.py
"""

from __future__ import annotations

import asyncio

import anyio
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import (
    History,
    call,
    child,
    demo_model,
    parent,
    print_events,
    print_table,
    researcher_model,
    say,
    scripted_model,
    search_toolset,
    section,
)
from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStarted, create_subagent_toolset

manager = TaskManager(max_nesting_depth=2)  # one manager for every level, so one table shows them all

researcher = SubAgentConfig(
    name='researcher',
    instructions='You research a topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=2, delay=0.05)),
)
deep_researcher = SubAgentConfig(
    name='deep-researcher',
    instructions='You research a topic in depth: run at least five searches, then report.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=8, delay=0.2)),
)


def lead_script(h: History) -> ModelResponse:
    """The lead hands the work to a researcher (a deep one if asked for depth), waits, and passes the result up."""
    if not h.task_ids():
        kind = 'deep-researcher' if 'in depth' in h.prompt else 'researcher'
        return call('task', description=h.prompt, subagent_type=kind, mode='async')
    if not h.returns('wait_tasks'):
        return call('wait_tasks', task_ids=h.task_ids(), timeout=30)
    return say(f'My team reports: {h.last_return("wait_tasks").splitlines()[-1]}')


team_tools = create_subagent_toolset([researcher, deep_researcher], manager=manager, general_purpose=False)
lead = SubAgentConfig(
    name='lead',
    instructions='You lead a research team: delegate the research to a researcher subagent, then report.',
    toolsets=[team_tools],
    model=child(scripted_model('scripted-lead', lead_script, delay=0.05)),
)
toolset = create_subagent_toolset([lead], manager=manager, general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


async def show_tree_when_nested() -> None:
    """Application code: once a depth-2 task is running, print every live task with its depth and parent."""
    with anyio.move_on_after(10):
        async for event in manager.events():
            if isinstance(event, TaskStarted) and event.parent_task_id is not None:
                break
    print('  [application] live tasks:')
    for r in manager.list(active_only=True):
        under = f'under {r.parent_task_id[:8]}' if r.parent_task_id else 'started by the parent agent'
        print(f'    {"  " * (r.depth - 1)}{r.id[:8]} {r.subagent} depth={r.depth} {r.status.value}, {under}')


async def main() -> None:
    async with manager:
        section('Two levels: the lead delegates to a researcher and reports back')
        result = await agent.run(
            'Ask the lead (sync) for two facts about tide pools.',
            model=parent(
                lambda h: call('task', description='Two facts about tide pools', subagent_type='lead'),
                lambda h: say(h.last_return('task')),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('Hard-cancelling the lead stops its researcher too')
        watcher = asyncio.create_task(show_tree_when_nested())
        await asyncio.sleep(0)  # let it subscribe to the events
        result = await agent.run(
            'Start an async lead task to study tide-pool ecology in depth, wait about a second, then hard-cancel it.',
            model=parent(
                lambda h: call('task', description='Tide-pool ecology, in depth', subagent_type='lead', mode='async'),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=1.0),
                lambda h: call('hard_cancel_task', task_id=h.task_ids()[0]),
                lambda h: say('The lead and its team are stopped.'),
            ),
            event_stream_handler=print_events,
        )
        await watcher
        print(f'parent: {result.output}')

        section('All tasks')
        print_table(manager)


if __name__ == '__main__':
    asyncio.run(main())
