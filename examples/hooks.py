"""The application's say over delegation: a hook before each task starts and one after each run ends.

`before_task` refuses a task the application does not allow (the parent's model reads the reason as the tool's
reply) and sends production work to a careful subagent instead of the one asked for. `after_task` redacts an API
key from a result before the parent, the records or anyone else can read it.

    uv run python examples/hooks.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import History, calls, child, demo_model, parent, print_events, say, scripted_model, section
from pydantic_ai_subagents import RefuseTask, SubAgentConfig, TaskEnd, TaskRequest, create_subagent_toolset


def work(h: History) -> ModelResponse:
    return say(f'Done: {h.prompt} (config read: api_key=sk-live-4242)')


worker = SubAgentConfig(name='worker', instructions='You do chores.', model=child(scripted_model('w', work)))
careful = SubAgentConfig(
    name='careful-worker', instructions='You change nothing, you only look.', model=child(scripted_model('c', work))
)


def before_task(request: TaskRequest) -> TaskRequest | RefuseTask | None:
    if 'delete' in request.description.lower():
        return RefuseTask(reason='deleting is not allowed here; archive instead.')
    if 'production' in request.description.lower():
        return dataclasses.replace(request, config=careful, description=f'[read only] {request.description}')
    return None


async def after_task(end: TaskEnd) -> TaskEnd | None:
    if end.kind == 'completed':
        return dataclasses.replace(end, output=re.sub(r'sk-[\w-]+', '[redacted]', str(end.output)))
    return None


toolset = create_subagent_toolset(
    [worker, careful], general_purpose=False, before_task=before_task, after_task=after_task
)
agent = Agent(demo_model(), toolsets=[toolset])


async def main() -> None:
    async with toolset:
        section('One task allowed, one refused, one rewritten; every result redacted')
        result = await agent.run(
            'Tidy the logs, delete the old backups, and check the production config.',
            model=parent(
                lambda h: calls(
                    ('task', {'description': 'Tidy the logs', 'subagent_type': 'worker'}),
                    ('task', {'description': 'Delete the old backups', 'subagent_type': 'worker'}),
                    ('task', {'description': 'Check the production config', 'subagent_type': 'worker'}),
                ),
                lambda h: say('Two chores done; deleting was refused.'),
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')
        for record in toolset.manager.list():
            print(f'{record.subagent:<15} {record.description!r}: {record.result}')


if __name__ == '__main__':
    asyncio.run(main())
