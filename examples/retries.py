"""Retries after transient model failures: a rate limit and a server error, then success.

The subagent's model answers `429 Too Many Requests` and then `503`; with `model_retries=3` the task waits a
little (doubling, with jitter) and goes on from where its run was, so the tool it already called is not called
again. Each retry is a `TaskRetrying` event and counts in the record's `attempts`.

    uv run python examples/retries.py
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
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
from pydantic_ai_subagents import SubAgentConfig, TaskRetrying, create_subagent_toolset

failures = [ModelHTTPError(429, 'demo-model', body='rate limited'), ModelHTTPError(503, 'demo-model', body='busy')]


def flaky(h: History) -> ModelResponse:
    if h.turn == 0:
        return call('search', query='hermit crabs')
    if failures:
        raise failures.pop(0)
    return say(f'Found: {h.last_return("search")}')


researcher = SubAgentConfig(
    name='researcher',
    instructions='You research one fact.',
    toolsets=[search_toolset()],
    model=child(scripted_model('flaky', flaky)),
    model_retries=3,
    retry_backoff=0.05,
)
toolset = create_subagent_toolset([researcher], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


async def main() -> None:
    async with toolset:
        manager = toolset.manager

        async def show_retries() -> None:
            async for event in manager.events():
                if isinstance(event, TaskRetrying):
                    print(f'  [retry] attempt {event.attempt} in {event.delay:.2f}s after: {event.error}')

        section('A task whose model is rate-limited, then busy')
        watcher = asyncio.create_task(show_retries())
        await asyncio.sleep(0)
        result = await agent.run(
            'Find one fact about hermit crabs.',
            model=parent(
                lambda h: call('task', description='One fact about hermit crabs', subagent_type='researcher'),
                lambda h: say(h.last_return('task')),
            ),
            event_stream_handler=print_events,
        )
        watcher.cancel()
        print(f'parent: {result.output}')
        (record,) = manager.list()
        print(f'status: {record.status.value}, attempts: {record.attempts}')


if __name__ == '__main__':
    asyncio.run(main())
