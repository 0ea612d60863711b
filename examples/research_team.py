"""A research team: fan out three researchers in parallel, wait for all of them, then hand the notes to a writer.

uv run python examples/research_team.py
"""

from __future__ import annotations

import asyncio
import re

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import (
    History,
    call,
    calls,
    child,
    demo_model,
    event_printer,
    parent,
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
    instructions='You research one topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=1, delay=0.4)),
)
writer = SubAgentConfig(
    name='writer',
    instructions='You write short, clear texts from the notes you are given.',
    model=child(writer_model(delay=0.1)),
)
toolset = create_subagent_toolset([researcher, writer], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])

TOPICS = ('anemones', 'hermit crabs', 'sea stars')


def fan_out(h: History) -> ModelResponse:
    return calls(
        *(('task', {'description': topic, 'subagent_type': 'researcher', 'mode': 'async'}) for topic in TOPICS)
    )


def hand_to_writer(h: History) -> ModelResponse:
    findings = re.findall(r'Findings: (.+?)\.?$', h.last_return('wait_tasks'), flags=re.MULTILINE)
    notes = '; '.join(findings)
    return call('task', description=f'A short intro for a family audience. Notes: {notes}', subagent_type='writer')


async def main() -> None:
    async with toolset:
        section('Fan out, wait for all, then write')
        result = await agent.run(
            'Research anemones, hermit crabs and sea stars in parallel with async researcher tasks, wait for all '
            'three, then have the writer turn the findings into a short intro for a family audience.',
            model=parent(
                fan_out,
                lambda h: call('wait_tasks', task_ids=h.task_ids(), mode='all', timeout=30),
                hand_to_writer,
                lambda h: say(h.last_return('task')),
            ),
            event_stream_handler=event_printer(clock=True),
        )
        print(f'parent: {result.output}')

        section('The team')
        print_table(toolset.manager)


if __name__ == '__main__':
    asyncio.run(main())
