"""Watch tasks through their events: `TaskCreated`, `TaskQuestionAsked`, `TaskCompleted`, `TaskCancelled`, ...

With the `SubAgents` capability every task event of a run appears in the parent's own event stream (here through
`event_stream_handler`, also `run_stream_events`). Independently, `TaskManager.events()` gives application code
the events of every conversation, for a dashboard or a log.

    uv run python examples/streaming_events.py
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import AgentStreamEvent, FunctionToolCallEvent

from _scripted import (
    call,
    calls,
    child,
    demo_model,
    format_call,
    format_event,
    parent,
    researcher_model,
    say,
    search_toolset,
    section,
    writer_model,
)
from pydantic_ai_subagents import SubAgentConfig, SubAgents, TaskEvent

researcher = SubAgentConfig(
    name='researcher',
    instructions='You research a topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=6, delay=0.15)),
)
writer = SubAgentConfig(
    name='writer',
    instructions='You write short texts. If the audience is not given, ask your parent with ask_parent.',
    model=child(writer_model(delay=0.1)),
)
subagents = SubAgents([researcher, writer], general_purpose=False, soft_cancel_grace=5)
agent = Agent(demo_model(), capabilities=[subagents])


async def show_events(ctx: RunContext[Any], events: AsyncIterator[AgentStreamEvent]) -> None:
    """Print the parent's tool calls and, between them, the task events of its run."""
    async for event in events:
        if isinstance(event, FunctionToolCallEvent):
            print(f'  -> {format_call(event.part)}')
        elif isinstance(event, TaskEvent):
            print(f'     [stream] {format_event(event)}')


async def log_events(seen: Counter[str]) -> None:
    """Application code: count every task event of every conversation."""
    async for event in subagents.manager.events():
        seen[type(event).__name__] += 1


async def main() -> None:
    section("Task events in the parent run's event stream")
    seen: Counter[str] = Counter()
    logger = asyncio.create_task(log_events(seen))
    await asyncio.sleep(0)  # let the logger subscribe
    result = await agent.run(
        'Start an async researcher task on limpets and an async writer task for a tagline, wait for them, '
        'answer the writer\'s question with "hikers", soft-cancel the researcher, and wait for both.',
        model=parent(
            lambda h: calls(
                ('task', {'description': 'Limpets', 'subagent_type': 'researcher', 'mode': 'async'}),
                ('task', {'description': 'A tagline', 'subagent_type': 'writer', 'mode': 'async'}),
            ),
            lambda h: call('wait_tasks', task_ids=h.task_ids(), mode='any'),
            lambda h: call('answer_subagent', task_id=h.task_ids()[1], answer='hikers'),
            lambda h: call('soft_cancel_task', task_id=h.task_ids()[0]),
            lambda h: call('wait_tasks', task_ids=h.task_ids(), mode='all'),
            lambda h: say('All done.'),
        ),
        event_stream_handler=show_events,
    )
    print(f'parent: {result.output}')
    await subagents.manager.aclose()  # ends the events() iterator too
    await logger

    section('What TaskManager.events() saw')
    for name, count in sorted(seen.items()):
        print(f'  {name}: {count}')


if __name__ == '__main__':
    asyncio.run(main())
