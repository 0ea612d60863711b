"""A live web dashboard of the subagents' tasks: watch them, answer their questions and cancel them in a browser.

The app from `pydantic_ai_subagents.web` runs under uvicorn on the same event loop as the agent, and shows the tasks
of the toolset's manager. Until you stop it, the scripted parent starts a new round of tasks every little while (each
round is a conversation of its own), so there is always work to watch: a lead that delegates to a slow deep
researcher (a nested task), a slow researcher, a writer that asks who the text is for and waits for your answer, and
a task whose description holds HTML (shown as plain text). A completed task's drawer has a box to continue it: a
follow-up on the same subagent, from the earlier task's conversation.

    uv run python examples/web_dashboard.py            # open the printed URL; Ctrl+C to stop
    PORT=8080 uv run python examples/web_dashboard.py
    SUBAGENTS_DEMO_ROUNDS=3 SUBAGENTS_DEMO_EVERY=5 uv run python examples/web_dashboard.py  # 3 rounds, 5 s apart
    uv run python examples/web_dashboard.py --check    # a short run: answers, cancels, lists, continues, exits

Needs the `web` extra (FastAPI and uvicorn). The app is served WITHOUT authentication, on 127.0.0.1 only: fine on
your own machine, never anywhere else (pass an `auth` dependency to `create_app` for that). Set
`SUBAGENTS_DEMO_MODEL` to run the agents on a real model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import urllib.request
from typing import Any

import anyio
import uvicorn
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import (
    History,
    call,
    calls,
    child,
    demo_model,
    parent,
    researcher_model,
    say,
    scripted_model,
    search_toolset,
    section,
    short,
    writer_model,
)
from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents.web import create_app

CHECK = '--check' in sys.argv[1:]
SLOW = 0.05 if CHECK else 1.5
"""Seconds each scripted model turn of the slow subagents takes."""
ROUNDS = int(os.environ.get('SUBAGENTS_DEMO_ROUNDS', '0'))
"""How many rounds of tasks the parent starts; 0 (the default) keeps starting them until the demo is stopped."""
EVERY = float(os.environ.get('SUBAGENTS_DEMO_EVERY', '20'))
"""Seconds between two rounds: long enough to watch one, short enough that a late visitor finds work going on."""

manager = TaskManager(max_nesting_depth=2)  # one manager for both levels, so the dashboard shows the whole tree

deep_researcher = SubAgentConfig(
    name='deep-researcher',
    instructions='You research a topic in depth: run many searches, then report.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=12, delay=SLOW)),
)
researcher = SubAgentConfig(
    name='researcher',
    instructions='You research a topic with the search tool and report short findings.',
    toolsets=[search_toolset()],
    model=child(researcher_model(searches=8, delay=SLOW)),
)
writer = SubAgentConfig(
    name='writer',
    instructions='You write short, clear texts. If the audience is not given, ask your parent with ask_parent.',
    model=child(writer_model(delay=0.2 if not CHECK else 0.01)),
)


def lead_script(h: History) -> ModelResponse:
    """The lead hands the work to the deep researcher, waits for it, and passes the result up."""
    if not h.task_ids():
        return call('task', description=h.prompt, subagent_type='deep-researcher', mode='async')
    if not h.returns('wait_tasks'):
        return call('wait_tasks', task_ids=h.task_ids(), timeout=120)
    return say(f'My team reports: {h.last_return("wait_tasks").splitlines()[-1]}')


team = create_subagent_toolset([deep_researcher], manager=manager, general_purpose=False)
lead = SubAgentConfig(
    name='lead',
    instructions='You lead a research team: delegate the research to the deep researcher, then report.',
    toolsets=[team],
    model=child(scripted_model('scripted-lead', lead_script, delay=0.05)),
)
toolset = create_subagent_toolset([lead, researcher, writer], manager=manager, general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset], instructions='You coordinate subagents. Follow the steps asked.')

# Local use only: anyone who can reach this server could read and cancel every task. It listens on 127.0.0.1, and
# `allowed_hosts` refuses requests made under another host name (a web page trying DNS rebinding). Given the
# toolset's subagents, the app can also continue their finished tasks (`POST /tasks/{task_id}/continue`).
app = create_app(
    manager,
    allow_unauthenticated=True,
    allowed_hosts=['127.0.0.1', 'localhost'],
    subagents=toolset.subagents.values(),
)

TASKS = (
    ('lead', 'Tide-pool ecology, in depth'),
    ('researcher', 'Hermit crabs and their shells'),
    ('writer', 'A tagline for our tide-pool guide'),
    ('researcher', 'Quote the page title <script>alert("not run")</script> and <b>check</b> it'),
)
TOPICS = ('sea stars', 'kelp forests', 'limpets', 'sea anemones', 'rock pools at night', 'barnacles')
"""What the later rounds are about, in turn."""


def round_tasks(number: int) -> tuple[tuple[str, str], ...]:
    """The tasks of round `number`: the first round is `TASKS`, later ones are about the next topic."""
    if number == 1:
        return TASKS
    topic = TOPICS[(number - 2) % len(TOPICS)]
    return (
        ('lead', f'{topic.capitalize()}, in depth'),
        ('researcher', f'Where to find {topic}'),
        ('writer', f'A tagline for our page on {topic}'),
    )


async def start_tasks(number: int = 1) -> None:
    """One run of the parent: it starts a round of tasks in the background and ends; the tasks go on."""
    tasks = round_tasks(number)
    prompt = 'Start these async tasks at once, then stop: ' + '; '.join(f'{s}: {d}' for s, d in tasks)
    result = await agent.run(
        prompt,
        model=parent(
            lambda h: calls(*(('task', {'description': d, 'subagent_type': s, 'mode': 'async'}) for s, d in tasks)),
            lambda h: say(f'{len(tasks)} tasks started; they run in the background.'),
        ),
    )
    print(f'parent (round {number}): {result.output}')


async def keep_working(rounds: int = ROUNDS, every: float = EVERY) -> None:
    """Start a round of tasks every `every` seconds: `rounds` rounds, or until the demo is stopped if `rounds` is 0."""
    number = 0
    while rounds == 0 or number < rounds:
        number += 1
        await start_tasks(number)
        await anyio.sleep(every)
    print(f'{number} rounds started; the dashboard stays up until you stop it.')


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A small JSON request with the standard library (run it in a thread)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


async def check(url: str) -> None:
    """The short scripted scenario of `--check`: answer and cancel over HTTP, list the tasks, continue one."""
    await start_tasks()
    writer_task = next(r for r in manager.list() if r.subagent == 'writer')
    record = await manager.wait_for(writer_task.id, timeout=10)
    assert record.status is TaskStatus.WAITING_FOR_ANSWER, record.status
    print(f'writer asks: {record.question}')
    status, answered = await anyio.to_thread.run_sync(
        http, 'POST', f'{url}tasks/{writer_task.id}/answer', {'answer': 'families with young children'}
    )
    print(f'POST /tasks/{{id}}/answer -> {status}, accepted: {answered["accepted"]}')
    lead_task = next(r for r in manager.list() if r.subagent == 'lead')
    with anyio.fail_after(10):  # until the lead has handed its work to the deep researcher
        async with contextlib.aclosing(manager.events()) as events:
            async for event in events:
                if event.parent_task_id == lead_task.id:
                    break
    status, cancelled = await anyio.to_thread.run_sync(
        http, 'POST', f'{url}tasks/{lead_task.id}/cancel', {'kind': 'hard'}
    )
    print(f'POST /tasks/{{id}}/cancel (hard, the lead) -> {status}, accepted: {cancelled["accepted"]}')
    for r in manager.list():
        await manager.wait_for(r.id, until_question=False, timeout=20)

    status, listing = await anyio.to_thread.run_sync(http, 'GET', f'{url}tasks')
    section(f'GET /tasks -> {status}, {len(listing["tasks"])} tasks')
    for task in listing['tasks']:
        outcome = task['result'] or task['partial_result'] or task['error'] or ''
        print(
            f'{task["id"][:8]} {"  " * (task["depth"] - 1)}{task["subagent"]:<16} {task["status"]["state"]:<10} '
            f'{short(task["description"], 70)!r} {short(outcome, 50)}'
        )

    # A follow-up of the writer's finished task: the same subagent, from its earlier conversation.
    status, continued = await anyio.to_thread.run_sync(
        http, 'POST', f'{url}tasks/{writer_task.id}/continue', {'message': 'Now a shorter one, please.'}
    )
    follow_up = continued['task']
    print(f'POST /tasks/{{id}}/continue (the writer) -> {status}, follows up {follow_up["continued_from"][:8]}')
    record = await manager.wait_for(follow_up['id'], timeout=20)
    print(f'follow-up {record.status.value}: {short(record.result, 70)}')


class Server(uvicorn.Server):
    """uvicorn, telling when it is ready, and closing the task manager first when it stops."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()
        self.work = anyio.CancelScope()
        """The rounds of tasks: they stop first when the server stops."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Closing the manager stops the tasks and ends the dashboards' event streams, which the server would
        # otherwise wait for.
        self.work.cancel()
        await manager.aclose()
        await super().shutdown(sockets)


async def main() -> None:
    port = int(os.environ.get('PORT', '0' if CHECK else '8000'))  # --check takes a free port unless PORT is set
    server = Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning'))
    async with toolset, anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await server.ready.wait()  # if the port is taken, uvicorn exits instead
        url = f'http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/'
        print(f'Dashboard: {url}')
        if CHECK:
            await check(url)
            server.should_exit = True
        else:
            print('Open it in a browser: answer the writer, cancel tasks, watch the tree. Ctrl+C to stop.')
            with server.work:
                await keep_working()


if __name__ == '__main__':
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn handles Ctrl+C, then raises it again once stopped
        asyncio.run(main())
    print('Stopped.')
