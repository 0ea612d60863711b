"""Three ways a task ends early: soft cancel, hard cancel, and a soft cancel that turns hard.

- soft: the subagent is told to stop and replies with what it has: "Task cancelled. Partial results: ...";
- hard: the subagent's run is stopped at once; nothing reaches the parent, but the application can still read the
  stopped run's messages with `TaskManager.transcript()`;
- escalation: a subagent that ignores the soft request is stopped hard after `soft_cancel_grace` seconds (0.2 here);
  what its transcript holds becomes the partial result.

    uv run python examples/cancellation.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent

from _scripted import (
    Step,
    call,
    child,
    demo_model,
    parent,
    print_events,
    print_table,
    researcher_model,
    say,
    search_toolset,
    section,
)
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

INSTRUCTIONS = 'You research a topic in depth: run at least five searches, one at a time, then report.'
researcher = SubAgentConfig(
    name='researcher',
    instructions=INSTRUCTIONS,
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=25, delay=0.04)),  # quick turns: it wraps up within the grace
)
stubborn = SubAgentConfig(
    name='stubborn-researcher',
    instructions=INSTRUCTIONS,
    toolsets=[search_toolset()],
    cancel_instructions=None,  # not told how to react to a cancel request, and it ignores it
    model=child(researcher_model(searches=20, delay=0.1, stubborn=True)),
)
toolset = create_subagent_toolset([researcher, stubborn], general_purpose=False, soft_cancel_grace=0.2)
agent = Agent(demo_model(), toolsets=[toolset])


def start(subagent: str) -> Step:
    return lambda h: call('task', description='Tide-pool ecology', subagent_type=subagent, mode='async')


def let_it_work(seconds: float) -> Step:
    return lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=seconds)


async def main() -> None:
    async with toolset:
        section('Soft cancel: the subagent wraps up and returns partial results')
        result = await agent.run(
            'Start an async researcher task on tide-pool ecology, let it work for a second, soft-cancel it, then wait '
            'for its partial results.',
            model=parent(
                start('researcher'),
                let_it_work(0.7),
                lambda h: call('soft_cancel_task', task_id=h.task_ids()[0]),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: say('Stopped early with partial results.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('Hard cancel: the subagent is stopped at once, with no partial results')
        result = await agent.run(
            'Start an async researcher task on tide-pool ecology, let it work briefly, hard-cancel it, then check it.',
            model=parent(
                start('researcher'),
                let_it_work(0.6),
                lambda h: call('hard_cancel_task', task_id=h.task_ids()[0]),
                lambda h: call('check_task', task_id=h.task_ids()[0]),
                lambda h: say('Stopped.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')
        hard = toolset.manager.list()[-1]
        transcript = toolset.manager.transcript(hard.id) or []
        print(f'  [application] the stopped run left a transcript of {len(transcript)} messages')

        section('Soft cancel ignored: after the 0.2 s grace it turns hard')
        result = await agent.run(
            'Start an async stubborn-researcher task on tide-pool ecology, let it work briefly, soft-cancel it, then '
            'wait for it.',
            model=parent(
                start('stubborn-researcher'),
                let_it_work(0.3),
                lambda h: call('soft_cancel_task', task_id=h.task_ids()[0]),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: say('It ignored the request and was stopped.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('All tasks')
        print_table(toolset.manager)


if __name__ == '__main__':
    asyncio.run(main())
