"""Continuing a finished task: a follow-up question to the same subagent, with its earlier conversation.

The parent asks the researcher for three tide-pool animals, then asks a follow-up with
`task(..., continue_task_id=...)`: the new task runs on the same subagent and starts from the first task's
conversation, so "them" still means the three animals. The new record links to the old one (`continued_from`).

    uv run python examples/follow_up.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import History, call, child, demo_model, parent, print_events, say, scripted_model, section
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset


def answer(h: History) -> ModelResponse:
    """Answers the latest question; a follow-up can refer to what it said before."""
    questions = h.user_texts()
    if len(questions) == 1:
        return say('Three tide-pool animals: hermit crabs, sea stars, anemones.')
    return say(f'Of the three I named before ({len(questions) - 1} earlier question), sea stars live longest.')


researcher = SubAgentConfig(
    name='researcher', instructions='You answer questions about tide pools.', model=child(scripted_model('r', answer))
)
toolset = create_subagent_toolset([researcher], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


async def main() -> None:
    async with toolset:
        section('A task, then a follow-up that continues it')
        result = await agent.run(
            'Ask the researcher for three tide-pool animals, then ask which of them lives longest.',
            model=parent(
                lambda h: call(
                    'task', description='Name three tide-pool animals.', subagent_type='researcher', mode='async'
                ),
                lambda h: call('wait_tasks', task_ids=h.task_ids(), timeout=10),
                lambda h: call(
                    'task',
                    description='Which of them lives longest?',
                    subagent_type='researcher',
                    continue_task_id=h.task_ids()[0],
                ),
                lambda h: say(h.last_return('task')),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')
        first, follow_up = toolset.manager.list()
        print(f'follow-up continues the first task: {follow_up.continued_from == first.id}')


if __name__ == '__main__':
    asyncio.run(main())
