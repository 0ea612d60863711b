"""A subagent asks its parent a question with `ask_parent`; the parent replies with `answer_subagent`.

- async mode: `wait_tasks` returns as soon as the task asks; the parent answers and waits again;
- sync mode: `task` itself returns early with the question; after the answer the task goes on in the background;
- from application code: `TaskManager.answer()` answers on the model's behalf (for a human in the loop).

    uv run python examples/questions.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent

from _scripted import call, child, demo_model, parent, print_events, say, section, writer_model
from pydantic_ai_subagents import SubAgentConfig, TaskQuestionAsked, create_subagent_toolset

writer = SubAgentConfig(
    name='writer',
    instructions='You write short, clear texts. If the audience is not given, ask your parent with ask_parent.',
    model=child(writer_model(delay=0.1)),
)
toolset = create_subagent_toolset([writer], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])

TAGLINE = {'description': 'A tagline for our tide-pool guide', 'subagent_type': 'writer'}


async def main() -> None:
    async with toolset:
        section('Async mode: wait_tasks returns with the question')
        result = await agent.run(
            'Start an async writer task for a tagline for our tide-pool guide, wait for it, answer its question '
            'with "school classes, playful tone", and wait for the result.',
            model=parent(
                lambda h: call('task', **TAGLINE, mode='async'),
                lambda h: call('wait_tasks', task_ids=h.task_ids()),
                lambda h: call('answer_subagent', task_id=h.task_ids()[0], answer='school classes, playful tone'),
                lambda h: call('wait_tasks', task_ids=h.task_ids()),
                lambda h: say('Tagline received.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('Sync mode: task returns early with the question')
        result = await agent.run(
            'Run a sync writer task for a tagline for our tide-pool guide; answer its question with "retired '
            'birdwatchers, calm tone", then wait for the result.',
            model=parent(
                lambda h: call('task', **TAGLINE, mode='sync'),
                lambda h: call('answer_subagent', task_id=h.task_ids()[0], answer='retired birdwatchers, calm tone'),
                lambda h: call('wait_tasks', task_ids=h.task_ids()),
                lambda h: say('Tagline received.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('From application code: TaskManager.answer()')
        manager = toolset.manager
        answered: list[str] = []

        async def answer_questions() -> None:
            # A human in the loop would be asked here; this one always gives the same reply.
            async for event in manager.events():
                if isinstance(event, TaskQuestionAsked):
                    accepted = manager.answer(event.task_id, 'marine biology students')
                    print(f'  [application] question {event.question!r} answered: {accepted}')
                    answered.append(event.task_id)
                    return

        watcher = asyncio.create_task(answer_questions())
        await asyncio.sleep(0)  # let the watcher subscribe before the task starts
        record = await manager.start(writer, TAGLINE['description'], scope='app', model=writer.model or demo_model())
        record = await manager.wait_for(record.id, until_question=False, timeout=10)
        await watcher
        print(f'  task {record.id[:8]}... {record.status.value}: {record.result}')


if __name__ == '__main__':
    asyncio.run(main())
