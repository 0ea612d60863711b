"""Steering a running task: the parent sends its subagent a correction while it works, without cancelling it.

The researcher runs in the background, one search at a time. The parent changes its mind and calls
`message_task`: the message enters the subagent's run and is read at its next step, so the report follows the new
focus. The application can do the same from any thread with `TaskManager.message_task`. A finished task cannot be
steered: the reply says so, with its result.

    uv run python examples/steering.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import (
    History,
    call,
    child,
    demo_model,
    parent,
    print_events,
    say,
    scripted_model,
    search_toolset,
    section,
)
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

STEER = 'Message from the agent that gave you this task: '


def research(h: History) -> ModelResponse:
    """Searches until told where to focus, then reports on that focus."""
    focus = [text.removeprefix(STEER) for text in h.user_texts()[1:] if text.startswith(STEER)]
    if focus:
        return say(f'Report ({focus[-1]}): hermit crabs swap shells as they grow.')
    if h.turn < 20:
        return call('search', query=f'{h.prompt} #{h.turn + 1}')
    return say('Report: a general survey of tide-pool life.')


researcher = SubAgentConfig(
    name='researcher',
    instructions='You research a topic one search at a time, then report.',
    toolsets=[search_toolset()],
    model=child(scripted_model('researcher', research, delay=0.05)),
)
toolset = create_subagent_toolset([researcher], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


async def main() -> None:
    async with toolset:
        section('The parent starts a task, then steers it')
        result = await agent.run(
            'Research tide-pool animals in the background; after a moment, tell the researcher to focus on hermit '
            'crabs only, then wait for the report.',
            model=parent(
                lambda h: call('task', description='Tide-pool animals', subagent_type='researcher', mode='async'),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=0.2),
                lambda h: call('message_task', task_id=h.task_ids()[0], message='focus on hermit crabs only'),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: call('message_task', task_id=h.task_ids()[0], message='and add sea stars'),
                lambda h: say('The researcher refocused on hermit crabs.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')
        (record,) = toolset.manager.list()
        print(f'messages recorded on the task: {list(record.messages)}')


if __name__ == '__main__':
    asyncio.run(main())
