"""The limits that keep a delegating model in bounds.

- `max_concurrent_tasks=1`: a second task waits `PENDING` in a queue until the first is done;
- `max_nesting_depth=1`: a subagent that has the subagent tools cannot start tasks of its own;
- `usage_limits` on a subagent: its task fails once it has used its budget of model requests;
- `timeout` on a subagent: its task fails after that many seconds.

Every refusal and failure reaches the parent's model as a plain reply it can act on; nothing crashes.

    uv run python examples/limits_and_budgets.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse
from pydantic_ai.usage import UsageLimits

from _scripted import (
    History,
    Step,
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
from pydantic_ai_subagents import SubAgentConfig, TaskManager, create_subagent_toolset

manager = TaskManager(max_concurrent_tasks=1, max_nesting_depth=1)
INSTRUCTIONS = 'You research a topic with the search tool and report short findings.'

researcher = SubAgentConfig(
    name='researcher',
    instructions=INSTRUCTIONS,
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=2, delay=0.1)),
)
budgeted = SubAgentConfig(
    name='budgeted-researcher',
    instructions=INSTRUCTIONS,
    toolsets=[search_toolset()],
    usage_limits=UsageLimits(request_limit=3),  # it would need 6 requests
    model=child(researcher_model(searches=5, delay=0.02)),
)
timed = SubAgentConfig(
    name='timed-researcher',
    instructions=INSTRUCTIONS,
    toolsets=[search_toolset()],
    timeout=0.5,  # it would need about 1.2 s
    model=child(researcher_model(searches=5, delay=0.2)),
)


def lead_script(h: History) -> ModelResponse:
    """The lead tries to delegate; when refused, it does the job itself."""
    if not h.returns('task'):
        return call('task', description=h.prompt, subagent_type='researcher', mode='sync')
    reason = h.last_return('task').split('. ')[0]
    return say(f'I could not delegate ({reason}), so I did it myself: sea stars can regrow lost arms.')


lead = SubAgentConfig(
    name='lead',
    instructions='You lead research: delegate it to a researcher subagent.',
    toolsets=[create_subagent_toolset([researcher], manager=manager, general_purpose=False)],
    model=child(scripted_model('scripted-lead', lead_script, delay=0.02)),
)
toolset = create_subagent_toolset([researcher, budgeted, timed, lead], manager=manager, general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


async def run(title: str, prompt: str, *steps: Step) -> None:
    section(title)
    result = await agent.run(prompt, model=parent(*steps), event_stream_handler=print_events)
    print(f'parent: {result.output}')


async def main() -> None:
    async with manager:
        await run(
            'max_concurrent_tasks=1: the second task is queued',
            'Start two async researcher tasks (anemones, crabs), check the second one, then wait for both.',
            lambda h: call('task', description='Anemones', subagent_type='researcher', mode='async'),
            lambda h: call('task', description='Crabs', subagent_type='researcher', mode='async'),
            lambda h: call('check_task', task_id=h.task_ids()[1]),
            lambda h: call('list_active_tasks'),
            lambda h: call('wait_tasks', task_ids=h.task_ids()),
            lambda h: say('Both done, one after the other.'),
        )
        await run(
            'max_nesting_depth=1: a subagent cannot delegate further',
            'Ask the lead (sync) to research sea stars.',
            lambda h: call('task', description='Sea stars', subagent_type='lead'),
            lambda h: say(h.last_return('task')),
        )
        await run(
            'usage_limits: the task fails when its budget is used up',
            'Ask the budgeted-researcher (sync) to research limpets.',
            lambda h: call('task', description='Limpets', subagent_type='budgeted-researcher'),
            lambda h: say('The budgeted researcher ran out of budget.'),
        )
        await run(
            'timeout: the task fails when it takes too long',
            'Ask the timed-researcher (sync) to research mussels.',
            lambda h: call('task', description='Mussels', subagent_type='timed-researcher'),
            lambda h: say('The timed researcher took too long.'),
        )
        section('All tasks')
        print_table(manager)


if __name__ == '__main__':
    asyncio.run(main())
