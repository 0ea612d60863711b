"""The web API and dashboard: auth by default, reading, cancelling and answering tasks, the event stream, escaping.

Real tasks run on scripted models in a real `TaskManager`; the app is called in-process through ASGI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI, Header, HTTPException
from starlette.testclient import TestClient

from pydantic_ai_subagents import SubAgentConfig, TaskCompleted, TaskManager, TaskStarted, TaskStatus
from pydantic_ai_subagents.web import create_app, create_router, event_to_json
from pydantic_ai_subagents.web._dashboard import dashboard_html
from pydantic_ai_subagents.web._poll import SnapshotFollower
from pydantic_ai_subagents.web._sse import EventJournal, stream_events

from .conftest import Gate, Script, call, child_text, task_id_from, text

BASE = 'http://t'


def worker(model: Any, name: str = 'worker') -> SubAgentConfig:
    return SubAgentConfig(name=name, instructions='You work.', model=model)


def asker() -> SubAgentConfig:
    script = Script(
        [[call('ask_parent', question='Which colour, <b>red</b> or blue?')], lambda s: [text(f'Painted {s.reply()}')]]
    )
    return SubAgentConfig(name='painter', instructions='You paint.', model=script.model())


@asynccontextmanager
async def serve(**app_options: Any) -> AsyncIterator[tuple[TaskManager, httpx.AsyncClient]]:
    options: dict[str, Any] = {'allow_unauthenticated': True, **app_options}
    async with TaskManager() as manager:
        app = create_app(manager, **options)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield manager, client


async def running(manager: TaskManager, gate: Gate, description: str = 'long job', scope: str = 'c1') -> str:
    record = await manager.start(worker(gate.model()), description, scope=scope)
    await gate.entered.wait()
    return record.id


# ---------------------------------------------------------------------------------------------------- auth


def test_auth_is_required_unless_explicitly_waived() -> None:
    manager = TaskManager()
    with pytest.raises(ValueError, match='auth'):
        create_router(manager)
    with pytest.raises(ValueError, match='allow_unauthenticated=True'):
        create_app(manager)
    assert create_router(manager, allow_unauthenticated=True).routes
    for limit in ('max_body_bytes', 'event_history'):
        with pytest.raises(ValueError, match=limit):
            create_router(manager, allow_unauthenticated=True, **{limit: 0})


def test_the_core_package_does_not_import_fastapi() -> None:
    code = 'import sys, pydantic_ai_subagents; print(sorted(m for m in ("fastapi", "starlette") if m in sys.modules))'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == '[]'


def require_token(x_token: str | None = Header(default=None)) -> None:
    if x_token != 'secret':
        raise HTTPException(401, 'not authenticated')


@pytest.mark.anyio
async def test_every_route_refuses_without_auth_and_serves_with_it() -> None:
    gate = Gate()
    async with serve(auth=require_token, allow_unauthenticated=False) as (manager, client):
        tid = await running(manager, gate)
        requests = [
            ('GET', '/', None),
            ('GET', '/tasks', None),
            ('GET', f'/tasks/{tid}', None),
            ('GET', '/tasks/events', None),
            ('POST', f'/tasks/{tid}/cancel', {'kind': 'hard'}),
            ('POST', f'/tasks/{tid}/answer', {'answer': 'x'}),
            ('POST', f'/tasks/{tid}/continue', {'message': 'x'}),
        ]
        for method, path, body in requests:
            for headers in ({}, {'X-Token': 'wrong'}):
                response = await client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, response.text)
        record = manager.get(tid)
        assert record is not None and record.status is TaskStatus.RUNNING and record.cancel is None

        ok = {'X-Token': 'secret'}
        assert (await client.get('/', headers=ok)).status_code == 200
        assert [t['id'] for t in (await client.get('/tasks', headers=ok)).json()['tasks']] == [tid]
        response = await client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard'}, headers=ok)
        assert response.status_code == 200 and response.json()['accepted'] is True
        assert (await manager.wait_for(tid)).status is TaskStatus.CANCELLED

        schema = (await client.get('/openapi.json')).json()
        assert {'401', '403'} <= set(schema['paths']['/tasks']['get']['responses'])


# ---------------------------------------------------------------------------------------------------- reading


@pytest.mark.anyio
async def test_list_get_and_filters() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        long_id = await running(manager, gate, 'long job', scope='c1')
        done = await manager.start(worker(child_text('the answer is 42'), 'quick'), 'quick job', scope='c2')
        await manager.wait_for(done.id)

        tasks = (await client.get('/tasks')).json()['tasks']
        assert [t['id'] for t in tasks] == [long_id, done.id]

        one = (await client.get(f'/tasks/{done.id}')).json()
        assert one == tasks[1]
        assert one['subagent'] == 'quick' and one['description'] == 'quick job' and one['mode'] == 'async'
        assert one['scope'] == 'c2' and one['parent_task_id'] is None and one['depth'] == 1
        assert one['status']['state'] == 'completed'
        assert one['result'] == 'the answer is 42'
        assert one['error'] is None and one['partial_result'] is None and one['question'] is None
        assert one['cancel'] is None
        assert one['usage']['requests'] == 1 and one['usage']['total_tokens'] > 0
        assert [h['state'] for h in one['history']] == ['pending', 'running', 'completed']
        assert one['status'] == one['history'][-1]
        stamps = [datetime.fromisoformat(h['timestamp']) for h in one['history']]
        assert stamps == sorted(stamps) and stamps[0].tzinfo is not None
        assert one['elapsed_seconds'] >= 0

        long = (await client.get(f'/tasks/{long_id}', params={'scope': 'c1'})).json()
        assert long['status']['state'] == 'running' and long['result'] is None

        async def ids(**params: Any) -> list[str]:
            response = await client.get('/tasks', params=params)
            assert response.status_code == 200, response.text
            return [t['id'] for t in response.json()['tasks']]

        assert await ids(scope='c1') == [long_id]
        assert await ids(scope='c2') == [done.id]
        assert await ids(scope='nobody') == []
        assert await ids(state='completed') == [done.id]
        assert await ids(state=['running', 'completed']) == [long_id, done.id]
        assert await ids(state='waiting_for_answer') == []
        assert await ids(scope='c1', state='completed') == []
        assert (await client.get('/tasks', params={'state': 'RUNNING'})).status_code == 422
        gate.release.set()


@pytest.mark.anyio
async def test_unknown_and_other_scope_ids_get_the_same_404() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate, scope='c2')
        missing = 'f' * 24
        for path in (f'/tasks/{tid}', f'/tasks/{missing}'):
            assert (await client.get(path)).status_code == (200 if path.endswith(tid) else 404)
            responses = [
                await client.get(path, params={'scope': 'c1'}),
                await client.post(f'{path}/cancel', params={'scope': 'c1'}, json={'kind': 'hard'}),
                await client.post(f'{path}/answer', params={'scope': 'c1'}, json={'answer': 'x'}),
            ]
            for response in responses:
                assert response.status_code == 404
                task_id = path.rsplit('/', 1)[1]
                assert response.json() == {'detail': f'task {task_id!r} not found'}
        assert (await client.post(f'/tasks/{missing}/cancel', json={'kind': 'soft'})).status_code == 404
        assert (await client.post(f'/tasks/{missing}/answer', json={'answer': 'x'})).status_code == 404
        record = manager.get(tid)
        assert record is not None and record.status is TaskStatus.RUNNING and record.cancel is None
        gate.release.set()


# ---------------------------------------------------------------------------------------------------- control


@pytest.mark.anyio
async def test_soft_cancel_by_post_lets_the_subagent_wrap_up() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate)
        response = await client.post(f'/tasks/{tid}/cancel', json={'kind': 'soft'})
        assert response.status_code == 200
        body = response.json()
        assert body['accepted'] is True
        assert body['task']['cancel']['kind'] == 'soft' and body['task']['cancel']['requested_by'] == 'web'
        assert body['task']['status']['state'] == 'running'  # it stops when the subagent has wrapped up

        again = await client.post(f'/tasks/{tid}/cancel', json={'kind': 'soft'})
        assert again.status_code == 200 and again.json()['accepted'] is False

        gate.release.set()
        record = await manager.wait_for(tid)
        assert record.status is TaskStatus.CANCELLED
        assert record.partial_result == 'Cancelled. Partial findings: 3 sources found.'
        task = (await client.get(f'/tasks/{tid}')).json()
        assert task['status']['state'] == 'cancelled'
        assert task['partial_result'] == 'Cancelled. Partial findings: 3 sources found.'

        finished = await client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard'})
        assert finished.status_code == 409
        assert finished.json() == {'detail': f'task {tid!r} is already cancelled'}


@pytest.mark.anyio
async def test_hard_cancel_by_post_stops_the_task() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate)
        soft = await client.post(f'/tasks/{tid}/cancel', json={})  # soft is the default
        assert soft.json()['accepted'] is True and soft.json()['task']['cancel']['kind'] == 'soft'
        response = await client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard'})
        assert response.status_code == 200 and response.json()['accepted'] is True
        record = await manager.wait_for(tid)
        assert record.status is TaskStatus.CANCELLED
        assert record.cancel is not None and record.cancel.kind == 'hard' and record.cancel.requested_by == 'web'
        assert gate.finished == 0  # the model request never returned
        assert (await client.get(f'/tasks/{tid}')).json()['status']['state'] == 'cancelled'
        assert (await client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard'})).status_code == 409


@pytest.mark.anyio
async def test_cancel_of_a_queued_task_is_immediate() -> None:
    gate = Gate()
    async with TaskManager(max_concurrent_tasks=1) as manager:
        app = create_app(manager, allow_unauthenticated=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            first = await running(manager, gate)
            queued = await manager.start(worker(child_text('never')), 'queued job', scope='c1')
            assert (await client.get(f'/tasks/{queued.id}')).json()['status']['state'] == 'pending'
            response = await client.post(f'/tasks/{queued.id}/cancel', json={'kind': 'soft'})
            assert response.status_code == 200 and response.json()['accepted'] is True
            assert response.json()['task']['status']['state'] == 'cancelled'
            assert manager.get(first) is not None
            gate.release.set()


@pytest.mark.anyio
async def test_control_bodies_are_validated() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate)
        bad = [
            await client.post(f'/tasks/{tid}/cancel', json={'kind': 'gentle'}),
            await client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard', 'extra': 1}),
            await client.post(f'/tasks/{tid}/cancel', content='{"kind": "hard"}'),  # no JSON content type
            await client.post(
                f'/tasks/{tid}/cancel', content='{"kind": "hard"}', headers={'Content-Type': 'text/plain'}
            ),
            await client.post(f'/tasks/{tid}/answer', json={}),
            await client.post(f'/tasks/{tid}/answer', json={'answer': ''}),
            await client.post(f'/tasks/{tid}/answer', json={'answer': ' \n '}),
        ]
        assert [r.status_code for r in bad] == [422] * len(bad)
        record = manager.get(tid)
        assert record is not None and record.cancel is None and record.status is TaskStatus.RUNNING
        gate.release.set()


@pytest.mark.anyio
async def test_answer_a_waiting_question() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        busy = await running(manager, gate)
        not_waiting = await client.post(f'/tasks/{busy}/answer', json={'answer': 'hello'})
        assert not_waiting.status_code == 200 and not_waiting.json()['accepted'] is False

        tid = (await manager.start(asker(), 'Paint the fence', scope='c1')).id
        record = await manager.wait_for(tid)
        assert record.status is TaskStatus.WAITING_FOR_ANSWER
        task = (await client.get(f'/tasks/{tid}')).json()
        assert task['status']['state'] == 'waiting_for_answer'
        assert task['question'] == 'Which colour, <b>red</b> or blue?'
        assert [
            t['id'] for t in (await client.get('/tasks', params={'state': 'waiting_for_answer'})).json()['tasks']
        ] == [tid]

        response = await client.post(f'/tasks/{tid}/answer', json={'answer': 'blue'})
        assert response.status_code == 200 and response.json()['accepted'] is True
        record = await manager.wait_for(tid)
        assert record.status is TaskStatus.COMPLETED and record.result == 'Painted blue'
        task = (await client.get(f'/tasks/{tid}')).json()
        assert task['result'] == 'Painted blue' and task['question'] is None
        assert [h['state'] for h in task['history']] == [
            'pending',
            'running',
            'waiting_for_answer',
            'running',
            'completed',
        ]
        late = await client.post(f'/tasks/{tid}/answer', json={'answer': 'green'})
        assert late.status_code == 200 and late.json()['accepted'] is False
        gate.release.set()


@pytest.mark.anyio
async def test_views_carry_a_revision_and_events_the_time_of_their_transition() -> None:
    # A reply and the event stream travel apart: a client tells the later view of a task by its revision, and finds
    # an event's transition in a view's history by its time.
    go = anyio.Event()

    async def finish(s: Script) -> list[Any]:
        await go.wait()
        return [text(f'Painted {s.reply()}')]

    script = Script([[call('ask_parent', question='Which colour?')], finish])
    seen: list[dict[str, Any]] = []
    async with serve() as (manager, client), anyio.create_task_group() as tg:

        async def follow() -> None:
            async for event in manager.events():
                seen.append(event_to_json(event))

        tg.start_soon(follow)
        tid = (await manager.start(worker(script.model(), 'painter'), 'Paint the gate', scope='c1')).id
        await manager.wait_for(tid)
        asked = (await client.get(f'/tasks/{tid}')).json()
        reply = (await client.post(f'/tasks/{tid}/answer', json={'answer': 'blue'})).json()
        assert reply['accepted'] is True
        go.set()
        done = await manager.wait_for(tid)
        assert done.status is TaskStatus.COMPLETED
        final = (await client.get(f'/tasks/{tid}')).json()
        assert asked['revision'] < reply['task']['revision'] < final['revision'] == done.revision
        assert [h['state'] for h in reply['task']['history']][-1] == 'running'
        with anyio.fail_after(5):
            while not any(e['type'] == 'TaskCompleted' for e in seen):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    transitions = [(e['status'], datetime.fromisoformat(e['timestamp'])) for e in seen if e['task_id'] == tid]
    history = [(h['state'], datetime.fromisoformat(h['timestamp'])) for h in final['history']]
    assert transitions == history


@pytest.mark.anyio
async def test_get_requests_never_change_a_task() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate)
        asking = (await manager.start(asker(), 'Paint it', scope='c1')).id
        await manager.wait_for(asking)
        before = manager.list()
        for path in ('/', '/tasks', '/tasks?state=running', f'/tasks/{tid}', f'/tasks/{asking}', '/openapi.json'):
            assert (await client.get(path)).status_code == 200, path
        for path in (f'/tasks/{tid}/cancel', f'/tasks/{tid}/cancel?kind=hard', f'/tasks/{asking}/answer?answer=x'):
            assert (await client.get(path)).status_code == 405, path
        after = manager.list()
        assert [(r.id, r.status, r.cancel, r.question, r.history) for r in after] == [
            (r.id, r.status, r.cancel, r.question, r.history) for r in before
        ]
        assert manager.hard_cancel(asking) is True
        gate.release.set()


@pytest.mark.anyio
async def test_control_works_from_a_server_on_another_thread() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        tid = await running(manager, gate)
        asking = (await manager.start(asker(), 'Paint it', scope='c1')).id
        await manager.wait_for(asking)
        threads: set[int] = set()

        def use_from_another_loop() -> list[Any]:
            # The TestClient runs the app on an event loop of its own, in this worker thread.
            threads.add(threading.get_ident())
            with TestClient(app) as client:
                return [
                    client.post(f'/tasks/{asking}/answer', json={'answer': 'red'}).json(),
                    client.post(f'/tasks/{tid}/cancel', json={'kind': 'hard'}).json(),
                    client.get('/tasks').json(),
                ]

        answered, cancelled, listed = await anyio.to_thread.run_sync(use_from_another_loop)
        assert threading.get_ident() not in threads
        assert answered['accepted'] is True and cancelled['accepted'] is True
        assert len(listed['tasks']) == 2
        assert (await manager.wait_for(tid)).status is TaskStatus.CANCELLED
        assert (await manager.wait_for(asking)).result == 'Painted red'


# ---------------------------------------------------------------------------------------------------- events


Message = dict[str, Any]


class ASGIStream:
    """Call an ASGI app by hand, to read a streaming response piece by piece and then disconnect."""

    def __init__(self, app: FastAPI, path: str, query: str = '', headers: dict[str, str] | None = None) -> None:
        self.app = app
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.scope: Message = {
            'type': 'http',
            'asgi': {'version': '3.0', 'spec_version': '2.4'},
            'http_version': '1.1',
            'method': 'GET',
            'scheme': 'http',
            'path': path,
            'raw_path': path.encode(),
            'root_path': '',
            'query_string': query.encode(),
            'headers': [(b'host', b't'), (b'accept', b'text/event-stream'), *extra],
            'client': ('127.0.0.1', 1),
            'server': ('t', 80),
        }
        self.sent_send, self.sent = anyio.create_memory_object_stream[Message](100)
        self.disconnect = anyio.Event()
        self.returned = anyio.Event()
        self.request_sent = False

    async def receive(self) -> Message:
        if not self.request_sent:
            self.request_sent = True
            return {'type': 'http.request', 'body': b'', 'more_body': False}
        await self.disconnect.wait()
        return {'type': 'http.disconnect'}

    async def send(self, message: Message) -> None:
        await self.sent_send.send(message)

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        finally:
            self.returned.set()

    def close(self) -> None:
        self.sent_send.close()
        self.sent.close()

    async def start(self) -> Message:
        return await self.sent.receive()

    async def lines(self) -> AsyncIterator[str]:
        buffer = ''
        while True:
            message = await self.sent.receive()
            assert message['type'] == 'http.response.body'
            buffer += message['body'].decode()
            *complete, buffer = buffer.split('\n')
            for line in complete:
                yield line
            if not message.get('more_body', False):
                return


async def read_events(stream: ASGIStream, until: Callable[[list[Message]], bool]) -> tuple[list[Message], list[str]]:
    events: list[Message] = []
    other: list[str] = []
    async for line in stream.lines():
        if line.startswith('data: '):
            events.append(json.loads(line.removeprefix('data: ')))
            if until(events):
                break
        elif line:
            other.append(line)
    return events, other


@pytest.mark.anyio
async def test_event_stream_relays_events_in_order_and_stops_when_the_client_leaves() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        live = await running(manager, gate, 'already running', scope='c1')
        stream = ASGIStream(app, '/tasks/events', 'scope=c1')
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run)
            with anyio.fail_after(10):
                start = await stream.start()
                assert start['status'] == 200
                assert (b'content-type', b'text/event-stream; charset=utf-8') in start['headers']
                replay, other = await read_events(stream, lambda events: len(events) == 1)
                assert other == ['retry: 2000']
                assert replay[0]['type'] == 'TaskCreated' and replay[0]['task_id'] == live
                assert replay[0]['status'] == 'running' and replay[0]['description'] == 'already running'

                elsewhere = await manager.start(worker(child_text('not for c1')), 'elsewhere', scope='c2')
                await manager.wait_for(elsewhere.id)
                quick = await manager.start(worker(child_text('done <i>quickly</i>'), 'quick'), 'quick', scope='c1')
                events, _ = await read_events(stream, lambda events: any(e['type'] == 'TaskCompleted' for e in events))
            assert {e['task_id'] for e in events} == {quick.id}
            assert [(e['type'], e['status']) for e in events] == [
                ('TaskCreated', 'pending'),
                ('TaskStarted', 'running'),
                ('TaskCompleted', 'completed'),
            ]
            completed = events[-1]
            assert completed['result'] == 'done <i>quickly</i>'
            assert completed['subagent'] == 'quick' and completed['scope'] == 'c1'
            assert completed['parent_task_id'] is None and completed['kind'] == 'subagents.task_completed'
            datetime.fromisoformat(completed['timestamp'])

            assert manager.bus.stats().subscriptions == 1
            stream.disconnect.set()
            with anyio.fail_after(5):
                await stream.returned.wait()
        stream.close()
        assert manager.bus.stats().subscriptions == 0
        gate.release.set()


@pytest.mark.anyio
async def test_event_stream_ends_when_the_manager_closes() -> None:
    gate = Gate()
    manager = TaskManager()
    async with manager:
        app = create_app(manager, allow_unauthenticated=True)
        tid = await running(manager, gate)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            responses: list[httpx.Response] = []

            async def get_stream() -> None:
                responses.append(await client.get('/tasks/events'))

            async with anyio.create_task_group() as tg:
                tg.start_soon(get_stream)
                with anyio.fail_after(5):
                    while manager.bus.stats().subscriptions == 0:
                        await anyio.sleep(0.01)
                    await manager.aclose()
            assert (await client.get('/tasks/events')).status_code == 503
    [response] = responses
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith('data: ')]
    assert [(e['type'], e['task_id']) for e in events] == [
        ('TaskCreated', tid),
        ('TaskCancelRequested', tid),
        ('TaskCancelled', tid),
    ]
    assert events[1]['cancel_kind'] == 'hard' and events[1]['requested_by'] == 'close'


@pytest.mark.anyio
async def test_event_stream_sends_keep_alive_comments() -> None:
    async with TaskManager() as manager:
        app = FastAPI()
        app.include_router(create_router(manager, allow_unauthenticated=True, heartbeat=0.05, prefix='/x'))
        stream = ASGIStream(app, '/x/tasks/events')
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run)
            with anyio.fail_after(5):
                await stream.start()
                seen: list[str] = []
                async for line in stream.lines():
                    seen.append(line)
                    if line == ': keep-alive':
                        break
            assert seen[0] == 'retry: 2000'
            stream.disconnect.set()
        stream.close()


@pytest.mark.anyio
async def test_event_stream_never_starts_the_manager() -> None:
    manager = TaskManager()
    app = create_app(manager, allow_unauthenticated=True)
    stream = ASGIStream(app, '/tasks/events')
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.run)
        with anyio.fail_after(10):
            await stream.start()
            await anyio.sleep(0.3)
            assert manager.bus.stats().subscriptions == 0  # following snapshots, which starts nothing
            async with manager:  # the application starts it later, on the loop it chooses
                # The stream moves over to the manager's own events, and says that it did so.
                while manager.bus.stats().subscriptions == 0:
                    await anyio.sleep(0.01)
                record = await manager.start(worker(child_text('hi')), 'after start', scope='c1')
                events, _ = await read_events(stream, lambda events: events[-1]['type'] == 'TaskCompleted')
                stream.disconnect.set()
                await stream.returned.wait()
    stream.close()
    assert events[0]['type'] == 'Resync'
    assert [(e['type'], e['task_id']) for e in events[1:]] == [
        ('TaskCreated', record.id),
        ('TaskStarted', record.id),
        ('TaskCompleted', record.id),
    ]


@pytest.mark.anyio
async def test_event_stream_from_a_server_on_another_loop_follows_snapshots() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        live = await running(manager, gate, 'already running')
        token = anyio.lowlevel.current_token()

        async def consume() -> list[Message]:
            # On an event loop of its own, in a worker thread, as when uvicorn runs in a thread.
            stream = ASGIStream(app, '/tasks/events')
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.run)
                with anyio.fail_after(10):
                    await stream.start()
                    replay, _ = await read_events(stream, lambda events: len(events) == 1)
                    record = anyio.from_thread.run(partial(manager.start, asker(), 'Paint it', scope='c1'), token=token)
                    events, _ = await read_events(
                        stream, lambda events: any(e['type'] == 'TaskQuestionAsked' for e in events)
                    )
                    assert manager.answer(record.id, 'green') is True
                    assert manager.hard_cancel(live) is True
                    more, _ = await read_events(
                        stream,
                        lambda events: {e['type'] for e in events} >= {'TaskCompleted', 'TaskCancelled'},
                    )
                stream.disconnect.set()
            stream.close()
            return replay + events + more

        events = await anyio.to_thread.run_sync(anyio.run, consume)
        assert (events[0]['type'], events[0]['task_id'], events[0]['status']) == ('TaskCreated', live, 'running')
        painter = [(e['type'], e['status']) for e in events if e['subagent'] == 'painter']
        assert painter == [
            ('TaskCreated', 'pending'),
            ('TaskStarted', 'running'),
            ('TaskQuestionAsked', 'waiting_for_answer'),
            ('TaskAnswered', 'running'),
            ('TaskCompleted', 'completed'),
        ]
        question = next(e for e in events if e['type'] == 'TaskQuestionAsked')
        assert question['question'] == 'Which colour, <b>red</b> or blue?'
        assert [e['result'] for e in events if e['type'] == 'TaskCompleted'] == ['Painted green']
        worker_events = [(e['type'], e.get('cancel_kind')) for e in events[1:] if e['task_id'] == live]
        assert worker_events == [('TaskCancelRequested', 'hard'), ('TaskCancelled', 'hard')]
        assert manager.bus.stats().subscriptions == 0


async def read_sse(stream: ASGIStream, until: Callable[[list[Message]], bool]) -> list[Message]:
    """Whole server-sent events (`data` parsed as JSON, `id`), until `until` is true of those read."""
    events: list[Message] = []
    current: Message = {}
    async for line in stream.lines():
        if line.startswith('data: '):
            current['data'] = json.loads(line.removeprefix('data: '))
        elif line.startswith('id: '):
            current['id'] = line.removeprefix('id: ')
        elif not line and 'data' in current:
            events.append(current)
            current = {}
            if until(events):
                break
    return events


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the app's lifespan, as a server does (the router's event journal is part of it)."""
    async with app.router.lifespan_context(app):
        yield


async def open_stream(tg: anyio.abc.TaskGroup, app: FastAPI, **headers: str) -> ASGIStream:
    stream = ASGIStream(app, '/tasks/events', headers={k.replace('_', '-'): v for k, v in headers.items()})
    tg.start_soon(stream.run)
    assert (await stream.start())['status'] == 200
    return stream


async def leave(stream: ASGIStream) -> None:
    stream.disconnect.set()
    await stream.returned.wait()
    stream.close()


def completed(task_id: str) -> Callable[[list[Message]], bool]:
    return lambda events: any(e['data'] == {**e['data'], 'type': 'TaskCompleted', 'task_id': task_id} for e in events)


@pytest.mark.anyio
async def test_every_event_has_an_id_and_a_reconnect_resumes_after_it() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        async with lifespan(app), anyio.create_task_group() as tg:
            live = await running(manager, gate, 'already running')
            with anyio.fail_after(10):
                stream = await open_stream(tg, app)
                first = await manager.start(worker(child_text('one')), 'first', scope='c1')
                events = await read_sse(stream, completed(first.id))
                await leave(stream)
                assert all(e.get('id') for e in events)
                assert (events[0]['data']['type'], events[0]['data']['task_id']) == ('TaskCreated', live)
                assert [e['data']['type'] for e in events[1:]] == ['TaskCreated', 'TaskStarted', 'TaskCompleted']
                numbers = [int(e['id'].rsplit('-', 1)[1]) for e in events[1:]]
                assert numbers == sorted(numbers) and len(set(numbers)) == 3
                last_id = events[-1]['id']

                # While nobody listens, more happens; the reconnect gets exactly that, and no snapshot.
                second = await manager.start(worker(child_text('two')), 'second', scope='c1')
                await manager.wait_for(second.id)
                assert manager.hard_cancel(live) is True
                await manager.wait_for(live)
                stream = await open_stream(tg, app, last_event_id=last_id)
                missed = await read_sse(stream, lambda events: events[-1]['data']['type'] == 'TaskCancelled')
                await leave(stream)
            assert [(e['data']['type'], e['data']['task_id']) for e in missed] == [
                ('TaskCreated', second.id),
                ('TaskStarted', second.id),
                ('TaskCompleted', second.id),
                ('TaskCancelRequested', live),
                ('TaskCancelled', live),
            ]
            assert all(e['id'].split('-')[0] == last_id.split('-')[0] for e in missed)


@pytest.mark.anyio
async def test_a_reconnect_that_cannot_resume_gets_a_resync_then_the_current_state() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True, event_history=3)
        async with lifespan(app), anyio.create_task_group() as tg:
            live = await running(manager, gate, 'already running')
            with anyio.fail_after(10):
                stream = await open_stream(tg, app)
                first = await manager.start(worker(child_text('one')), 'first', scope='c1')
                events = await read_sse(stream, completed(first.id))
                await leave(stream)
                old_id = events[1]['id']  # the TaskCreated of `first`
                for n in range(3):  # nine more events: the three kept are not the ones after `old_id`
                    record = await manager.start(worker(child_text(f'more {n}')), 'more', scope='c1')
                    await manager.wait_for(record.id)

                for last_event_id in (old_id, 'elsewhere-5', 'garbage'):
                    stream = await open_stream(tg, app, last_event_id=last_event_id)
                    again = await read_sse(stream, lambda events: len(events) == 2)
                    await leave(stream)
                    assert again[0]['data']['type'] == 'Resync', last_event_id
                    # Then the current state, as for a new client: the live task.
                    assert (again[1]['data']['type'], again[1]['data']['task_id']) == ('TaskCreated', live)
                    assert again[1]['data']['status'] == 'running'
        gate.release.set()


@pytest.mark.anyio
async def test_a_stream_without_the_lifespan_has_its_own_journal() -> None:
    # An app whose lifespan is not run (as here, called straight through ASGI): each stream numbers its own events,
    # so an id from another stream cannot be resumed and gets a resync.
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):
                stream = await open_stream(tg, app)
                record = await manager.start(worker(child_text('one')), 'first', scope='c1')
                events = await read_sse(stream, completed(record.id))
                assert manager.bus.stats().subscriptions == 1
                await leave(stream)
                assert manager.bus.stats().subscriptions == 0
                assert all(e.get('id') for e in events)
                stream = await open_stream(tg, app, last_event_id=events[-1]['id'])
                again = await read_sse(stream, lambda events: len(events) == 1)
                await leave(stream)
        assert again[0]['data']['type'] == 'Resync'


@pytest.mark.anyio
async def test_a_stream_that_falls_behind_the_journal_gets_a_resync() -> None:
    manager = TaskManager()  # never started: only its (empty) task list is read

    def started(n: int) -> TaskStarted:
        return TaskStarted(task_id=f't{n}', subagent='s', scope='c1', status=TaskStatus.RUNNING, at=float(n))

    journal = EventJournal(manager, size=3)
    stream = stream_events(journal, None, last_event_id=None, heartbeat=60, snapshot=True)
    assert (await anext(stream)).retry == 2000
    journal.record(started(1))
    first = await anext(stream)
    assert first.id == journal.event_id(1) and json.loads(first.raw_data or '')['task_id'] == 't1'
    for n in range(2, 8):  # the journal keeps 5, 6 and 7: 2 to 4 are lost for this stream
        journal.record(started(n))
    resync = await anext(stream)
    assert json.loads(resync.raw_data or '')['type'] == 'Resync' and resync.id == journal.event_id(7)
    journal.record(started(8))
    journal.close()
    rest = [event async for event in stream]
    assert [(e.id, json.loads(e.raw_data or '')['task_id']) for e in rest] == [(journal.event_id(8), 't8')]


@pytest.mark.anyio
async def test_snapshots_are_only_compared_while_a_stream_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    compared = 0
    changes = SnapshotFollower.changes

    def counted(self: SnapshotFollower) -> list[Any]:
        nonlocal compared
        compared += 1
        return changes(self)

    monkeypatch.setattr(SnapshotFollower, 'changes', counted)
    manager = TaskManager()  # not started: the app's journal follows snapshots
    app = create_app(manager, allow_unauthenticated=True)
    async with lifespan(app), anyio.create_task_group() as tg:
        await anyio.sleep(1)  # four poll intervals
        assert compared == 0
        with anyio.fail_after(10):
            stream = await open_stream(tg, app)
            while compared < 2:
                await anyio.sleep(0.05)
            await leave(stream)
    await manager.aclose()


@pytest.mark.anyio
async def test_a_new_stream_does_not_repeat_what_its_snapshot_shows() -> None:
    # The snapshot comes from the tasks, which can be ahead of the journal: what it shows is not sent twice.
    gate = Gate()
    async with TaskManager() as manager:
        tid = await running(manager, gate)
        record = manager.get(tid)
        assert record is not None
        journal = EventJournal(manager)  # not run: it lags behind the tasks until events are recorded by hand
        stream = stream_events(journal, None, last_event_id=None, heartbeat=60, snapshot=True)
        assert (await anext(stream)).retry == 2000
        snapshot = json.loads((await anext(stream)).raw_data or '')
        assert (snapshot['type'], snapshot['task_id'], snapshot['status']) == ('TaskCreated', tid, 'running')

        def started(at: float) -> TaskStarted:
            return TaskStarted(task_id=tid, subagent='worker', scope='c1', status=TaskStatus.RUNNING, at=at)

        journal.record(started(record.history[-1].at))  # the journal catching up with what the snapshot showed
        journal.record(started(record.history[-1].at + 1))  # something newer
        journal.close()
        rest = [event async for event in stream]
        assert [e.id for e in rest] == [journal.event_id(2)]
        gate.release.set()


@pytest.mark.anyio
async def test_a_failing_journal_ends_its_streams_but_not_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: SnapshotFollower) -> list[Any]:
        raise RuntimeError('snapshot failed')

    monkeypatch.setattr(SnapshotFollower, 'changes', broken)
    manager = TaskManager()  # not started: the journal follows snapshots
    app = create_app(manager, allow_unauthenticated=True)
    async with lifespan(app), anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            stream = ASGIStream(app, '/tasks/events')
            tg.start_soon(stream.run)
            await stream.start()
            lines = [line async for line in stream.lines()]  # the stream ends when its journal fails
            await stream.returned.wait()
            stream.close()
        assert lines[0] == 'retry: 2000'
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            assert (await client.get('/tasks')).status_code == 200
    await manager.aclose()


def test_event_json_renders_structured_results_as_text() -> None:
    event = TaskCompleted(task_id='t1', subagent='s', scope='c', status=TaskStatus.COMPLETED, result={'n': 1}, at=1.0)
    data = event_to_json(event)
    assert data['type'] == 'TaskCompleted' and data['status'] == 'completed' and data['result'] == '{"n":1}'
    assert 'capability_id' not in data


# ---------------------------------------------------------------------------------------------------- the page


XSS = '<script>alert(1)</script><img src=x onerror="alert(2)">'


@pytest.mark.anyio
async def test_dashboard_is_served_with_a_strict_policy_and_renders_text_only() -> None:
    gate = Gate()
    async with serve() as (manager, client):
        tid = await running(manager, gate, f'Summarise {XSS} please')
        page = await client.get('/')
        assert page.status_code == 200 and page.headers['content-type'].startswith('text/html')
        policy = page.headers['content-security-policy']
        assert "default-src 'none'" in policy and re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", policy)
        assert 'unsafe' not in policy
        assert page.headers['x-content-type-options'] == 'nosniff'
        html = page.text
        assert html == dashboard_html()
        # The page is static: task data reaches it only as JSON, and its script writes text nodes, never markup.
        assert 'alert(' not in html and tid not in html
        for sink in ('innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(', 'new Function'):
            assert sink not in html
        assert html.count('<script>') == 1 and '.textContent = ' in html
        # The API returns the model's text verbatim, for the page to show as text.
        task = (await client.get(f'/tasks/{tid}')).json()
        assert task['description'] == f'Summarise {XSS} please'
        gate.release.set()


@pytest.mark.anyio
async def test_router_under_a_prefix() -> None:
    async with TaskManager() as manager:
        app = FastAPI()
        app.include_router(create_router(manager, allow_unauthenticated=True, prefix='/subagents'))
        record = await manager.start(worker(child_text('ok')), 'job', scope='c1')
        await manager.wait_for(record.id)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            assert (await client.get('/subagents/')).status_code == 200
            assert (await client.get(f'/subagents/tasks/{record.id}')).json()['result'] == 'ok'
            assert (await client.get('/tasks')).status_code == 404


@pytest.mark.anyio
async def test_allowed_hosts_refuses_other_host_names() -> None:
    app = create_app(TaskManager(), allow_unauthenticated=True, allowed_hosts=['127.0.0.1', 'localhost'])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url='http://127.0.0.1:8000') as client:
        assert (await client.get('/tasks')).status_code == 200
        assert (await client.get('/tasks', headers={'Host': 'evil.example:8000'})).status_code == 400


# ---------------------------------------------------------------------------------------------------- the schema


SCHEMA_APP = create_app(TaskManager(), allow_unauthenticated=True, subagents=[worker('test')])
schema = schemathesis.openapi.from_asgi('/openapi.json', SCHEMA_APP).exclude(path='/tasks/events')


def test_schema_lists_every_route() -> None:
    response = TestClient(SCHEMA_APP).get('/openapi.json')
    paths = response.json()['paths']
    assert set(paths) == {
        '/tasks',
        '/tasks/events',
        '/tasks/{task_id}',
        '/tasks/{task_id}/cancel',
        '/tasks/{task_id}/answer',
        '/tasks/{task_id}/activity',
        '/tasks/{task_id}/message',
        '/tasks/{task_id}/continue',
    }
    assert set(paths['/tasks/{task_id}/message']['post']['responses']) == {'200', '404', '409', '413', '422'}
    assert set(paths['/tasks/{task_id}/continue']['post']['responses']) == {
        '200',
        '404',
        '409',
        '413',
        '422',
        '501',
        '503',
    }
    assert set(paths['/tasks/{task_id}/cancel']['post']['responses']) == {'200', '404', '409', '413', '422'}


@schema.parametrize()
@hypothesis.settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    case.call_and_validate()


@pytest.mark.anyio
async def test_snapshot_follower_forgets_pruned_tasks() -> None:
    async with TaskManager(max_retained=3) as manager:
        follower = SnapshotFollower(manager, None)
        assert follower.start() == []
        finished: list[str] = []
        for n in range(12):
            record = await manager.start(worker(child_text(f'done {n}')), f'job {n}', scope='c1')
            await manager.wait_for(record.id)
            finished.append(record.id)
            events = follower.changes()
            assert [type(e).__name__ for e in events if e.task_id == record.id][-1] == 'TaskCompleted'
            # Only what the store still lists is remembered: at most `max_retained` finished tasks.
            assert set(follower.seen) == {r.id for r in manager.list()}
            assert len(follower.seen) <= 3
        assert set(follower.seen) == set(finished[-3:])


@pytest.mark.anyio
async def test_a_browser_style_reconnect_resumes_on_a_real_server() -> None:
    # uvicorn on the manager's loop, as the docs recommend: it runs the app's lifespan, so the streams share a journal.
    import uvicorn

    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=0, log_level='warning', lifespan='on'))

        async def read(client: httpx.AsyncClient, headers: dict[str, str], until: str | None = None) -> list[Message]:
            events: list[Message] = []
            current: Message = {}
            async with client.stream('GET', '/tasks/events', headers=headers) as response:
                assert response.status_code == 200
                if until is None:  # a new task, started once the stream is open
                    until = (await manager.start(worker(child_text('one')), 'first', scope='c1')).id
                async for line in response.aiter_lines():
                    if line.startswith(('data: ', 'id: ')):
                        key, _, value = line.partition(': ')
                        current[key] = json.loads(value) if key == 'data' else value
                    elif not line and 'data' in current:
                        events.append(current)
                        current = {}
                        if events[-1]['data'].get('task_id') == until and events[-1]['data']['type'] == 'TaskCompleted':
                            return events
            raise AssertionError('the stream ended early')

        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(20):
                while not server.started:
                    await anyio.sleep(0.01)
                port = server.servers[0].sockets[0].getsockname()[1]
                async with httpx.AsyncClient(base_url=f'http://127.0.0.1:{port}', timeout=10) as client:
                    events = await read(client, {})
                    second = await manager.start(worker(child_text('two')), 'second', scope='c1')
                    await manager.wait_for(second.id)
                    missed = await read(client, {'Last-Event-ID': events[-1]['id']}, second.id)
            server.should_exit = True
        assert [(e['data']['type'], e['data']['task_id']) for e in missed] == [
            ('TaskCreated', second.id),
            ('TaskStarted', second.id),
            ('TaskCompleted', second.id),
        ]


# ---------------------------------------------------------------------------------------------------- usage


@pytest.mark.anyio
async def test_usage_counts_each_model_request_while_its_tools_run() -> None:
    # Each model request calls a tool that holds until released: the record is read while the tool runs.
    from pydantic_ai.toolsets import FunctionToolset

    entered, release = [anyio.Event() for _ in range(3)], [anyio.Event() for _ in range(3)]
    held = 0

    async def hold() -> str:
        """Wait a little."""
        nonlocal held
        held += 1
        entered[held - 1].set()
        await release[held - 1].wait()
        return 'held'

    script = Script([[call('hold')], [call('hold')], [call('hold')]], final='done')
    config = SubAgentConfig(
        name='holder', instructions='You hold.', toolsets=[FunctionToolset([hold])], model=script.model()
    )
    async with serve() as (manager, client):
        task_id = (await manager.start(config, 'hold three times', scope='c1')).id
        for n in (1, 2, 3):
            with anyio.fail_after(5):
                await entered[n - 1].wait()
            usage = (await client.get(f'/tasks/{task_id}')).json()['usage']
            assert usage['requests'] == n, (n, usage)
            assert usage['tool_calls'] == n - 1  # the call that runs now is counted when it returns
            release[n - 1].set()
        record = await manager.wait_for(task_id, timeout=5)
        assert record.status is TaskStatus.COMPLETED
        assert record.usage.requests == 4 and record.usage.tool_calls == 3


@pytest.mark.anyio
async def test_a_parent_shows_its_own_usage_apart_from_its_finished_subtasks() -> None:
    from pydantic_ai_subagents import create_subagent_toolset

    gate = Gate()
    quick, slow = worker(child_text('quick answer'), 'quick'), worker(gate.model(), 'slow')
    async with serve() as (manager, client):
        team = create_subagent_toolset([quick, slow], manager=manager, general_purpose=False)
        lead_script = Script(
            [
                [
                    call('task', description='quick part', subagent_type='quick', mode='async'),
                    call('task', description='slow part', subagent_type='slow', mode='async'),
                ],
                lambda s: [call('wait_tasks', task_ids=[task_id_from(r) for r in s.last], timeout=30)],
            ]
        )
        lead = SubAgentConfig(name='lead', instructions='You lead.', toolsets=[team], model=lead_script.model())
        lead_id = (await manager.start(lead, 'lead the work', scope='c1')).id
        with anyio.fail_after(5):
            await gate.entered.wait()
            while not any(r.subagent == 'quick' and r.is_terminal for r in manager.list()):
                await anyio.sleep(0.01)
        # The lead waits in wait_tasks: its record shows the quick task's usage rolled up at once.
        view = (await client.get(f'/tasks/{lead_id}')).json()
        assert view['usage']['requests'] == 3  # two of its own, one of the quick task
        assert view['subtask_usage']['requests'] == 1
        assert view['subtask_usage']['total_tokens'] > 0
        assert view['live_subtasks'] == 1
        listed = {t['id']: t for t in (await client.get('/tasks')).json()['tasks']}
        assert {**listed[lead_id], 'elapsed_seconds': 0} == {**view, 'elapsed_seconds': 0}
        assert all(t['subtask_usage']['requests'] == 0 for i, t in listed.items() if i != lead_id)

        # A hard cancel stops the lead and the slow task: a task that ended after the lead is not in its usage.
        await client.post(f'/tasks/{lead_id}/cancel', json={'kind': 'hard'})
        for r in manager.list():
            await manager.wait_for(r.id, until_question=False, timeout=5)
        view = (await client.get(f'/tasks/{lead_id}')).json()
        assert view['status']['state'] == 'cancelled' and view['live_subtasks'] == 0
        assert view['subtask_usage']['requests'] == 1 and view['usage']['requests'] == 3


@pytest.mark.anyio
async def test_activity_shows_the_last_tool_calls_and_what_is_priced() -> None:
    from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.toolsets import FunctionToolset
    from pydantic_ai.usage import RequestUsage

    from pydantic_ai_subagents.web._activity import MAX_TOOL_CALLS, MAX_TOOL_TEXT_CHARS

    def look(page: int) -> str:
        """Read a page."""
        return f'page {page}: ' + 'x' * (MAX_TOOL_TEXT_CHARS if page == 12 else 3)

    turns = 0

    async def priced(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # A real model's name, so Pydantic AI's price data knows it; usage as a provider would report it.
        nonlocal turns
        turns += 1
        if turns > 12:
            await anyio.sleep_forever()  # stopped here by the test
        return ModelResponse(
            parts=[ToolCallPart('look', {'page': turns})], usage=RequestUsage(input_tokens=1000, output_tokens=100)
        )

    gate = Gate()
    config = SubAgentConfig(
        name='reader',
        instructions='You read.',
        toolsets=[FunctionToolset([look])],
        model=FunctionModel(priced, model_name='gpt-4o'),
    )
    async with serve() as (manager, client):
        live_id = await running(manager, gate)
        live = (await client.get(f'/tasks/{live_id}/activity')).json()
        assert live == {
            'task_id': live_id,
            'transcript_available': False,
            'tool_calls': [],
            'tool_calls_total': 0,
            'cost': None,
        }
        # The transcript is kept once a task is stopped (or fails): a soft cancel after twelve pages ends it.
        reader = await manager.start(config, 'read pages until asked to stop', scope='c1')
        with anyio.fail_after(10):
            while turns < 13:
                await anyio.sleep(0.01)
        manager.hard_cancel(reader.id)
        await manager.wait_for(reader.id, timeout=10)
        activity = (await client.get(f'/tasks/{reader.id}/activity')).json()
        assert activity['transcript_available'] is True
        total = activity['tool_calls_total']
        assert total >= 12
        calls = activity['tool_calls']
        assert len(calls) == MAX_TOOL_CALLS
        assert [json.loads(c['args'])['page'] for c in calls] == list(range(total - 9, total + 1))
        assert calls[0]['tool_name'] == 'look' and calls[0]['timestamp'] is not None
        returned = {json.loads(c['args'])['page']: c['result'] for c in calls}
        assert returned[11] == 'page 11: xxx'
        assert returned[12] is not None and returned[12].endswith('x... [9 more characters]')
        cost = activity['cost']
        assert cost['unpriced_requests'] == 0 and cost['priced_requests'] >= 12
        assert cost['total_usd'] == pytest.approx(cost['priced_requests'] * 0.0035)

        gate.release.set()
        await manager.wait_for(live_id, timeout=5)
        finished = (await client.get(f'/tasks/{live_id}/activity')).json()
        # A completed task keeps its transcript too (a follow-up starts from it): its one request, unpriced.
        assert finished['transcript_available'] is True
        assert finished['tool_calls'] == [] and finished['cost']['unpriced_requests'] == 1
        assert (await client.get('/tasks/nope/activity')).status_code == 404
        assert (await client.get(f'/tasks/{reader.id}/activity', params={'scope': 'c2'})).status_code == 404
