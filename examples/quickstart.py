"""A tour of the subagent tools: sync and async tasks, a question, a soft cancel and a hard cancel.

Runs offline on scripted models:

    uv run python examples/quickstart.py        # or: make demo

On a real model (the parent and its subagents all use it; the provider's package, e.g. `pydantic-ai-slim[openai]`,
and its API key are needed):

    SUBAGENTS_DEMO_MODEL=openai:gpt-5-mini uv run python examples/quickstart.py

Each section is one run of the parent agent; every tool call the parent makes is printed with the reply it gets.
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.models.function import FunctionModel

from _scripted import (
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
    writer_model,
)
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

researcher = SubAgentConfig(
    name='researcher',
    description='Finds facts with the search tool.',
    instructions='You research a topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=2, delay=0.1)),
)
slow_researcher = SubAgentConfig(
    name='deep-researcher',
    description='Researches thoroughly; takes a while.',
    instructions='You research a topic in depth: run at least five searches, then report.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=5, delay=0.3)),
)
writer = SubAgentConfig(
    name='writer',
    description='Writes short texts.',
    instructions='You write short, clear texts. If the audience is not given, ask your parent with ask_parent.',
    model=child(writer_model(delay=0.2)),
)

toolset = create_subagent_toolset([researcher, slow_researcher, writer], soft_cancel_grace=5)
agent = Agent(demo_model(), toolsets=[toolset], instructions='You coordinate subagents. Follow the steps asked.')


async def step(title: str, prompt: str, model: FunctionModel | None) -> None:
    """One run of the parent. `model` is its scripted stand-in (`None` on a real model, which follows `prompt`).

    A script is one step per turn; each step reads the history `h` (e.g. the task IDs from earlier replies).
    """
    section(title)
    print(f'user: {prompt}')
    result = await agent.run(prompt, model=model, event_stream_handler=print_events)
    print(f'parent: {result.output}')


async def main() -> None:
    async with toolset:  # leaving the block stops whatever is still running
        await step(
            '1. A sync task: the parent waits for the result',
            'Use the researcher in sync mode to find two facts about tide pools, then tell me what it found.',
            parent(
                lambda h: call(
                    'task', description='Two facts about tide pools', subagent_type='researcher', mode='sync'
                ),
                lambda h: say(f'The researcher reports: {h.last_return("task")}'),
            ),
        )

        await step(
            '2. Two async tasks: checked, listed, then waited for',
            'Start two async tasks at once: the researcher on hermit crabs and anemones, and the writer on an intro '
            'for a general audience. Check the first with check_task, list the active tasks, then wait for both.',
            parent(
                lambda h: call(
                    'task', description='Hermit crabs and anemones', subagent_type='researcher', mode='async'
                ),
                lambda h: call(
                    'task',
                    description='A two-sentence intro to tide pools for a general audience',
                    subagent_type='writer',
                    mode='async',
                ),
                lambda h: call('check_task', task_id=h.task_ids()[0]),
                lambda h: call('list_active_tasks'),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), mode='all', timeout=10),
                lambda h: say('Both tasks are done; results above.'),
            ),
        )

        await step(
            '3. A subagent asks a question; the parent answers it',
            'Start an async writer task for a tagline for our tide-pool guide without naming the audience. When it '
            'asks, answer "families with young children", then wait for the result.',
            parent(
                lambda h: call(
                    'task', description='A tagline for our tide-pool guide', subagent_type='writer', mode='async'
                ),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: call('answer_subagent', task_id=h.task_ids()[0], answer='families with young children'),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: say('The writer delivered the tagline.'),
            ),
        )

        await step(
            '4. Soft cancel: the subagent stops and hands back partial results',
            'Start an async deep-researcher task on tide-pool ecology, let it work for about a second, then '
            'soft-cancel it and wait for its partial results.',
            parent(
                lambda h: call(
                    'task', description='Tide-pool ecology in depth', subagent_type='deep-researcher', mode='async'
                ),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=0.8),
                lambda h: call('soft_cancel_task', task_id=h.task_ids()[0]),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: say('Cancelled early; the partial results above are enough.'),
            ),
        )

        await step(
            '5. Hard cancel: the subagent is stopped at once',
            'Start an async deep-researcher task on the history of tide-pool science, then hard-cancel it at once '
            'and check its status.',
            parent(
                lambda h: call(
                    'task', description='History of tide-pool science', subagent_type='deep-researcher', mode='async'
                ),
                lambda h: call('hard_cancel_task', task_id=h.task_ids()[0]),
                lambda h: call('check_task', task_id=h.task_ids()[0]),
                lambda h: say('That task is stopped.'),
            ),
        )

        section('All tasks (TaskManager.list())')
        print_table(toolset.manager)
    print('\nManager closed.')


if __name__ == '__main__':
    asyncio.run(main())
