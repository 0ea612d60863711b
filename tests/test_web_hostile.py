"""The web API against hostile requests: authentication before the body, body size limits, content types.

The memory test runs a real uvicorn server in a subprocess and sends it a 200 MiB body generated on the fly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI, Header, HTTPException

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus
from pydantic_ai_subagents.web import create_app, create_router

from .conftest import Gate
from .test_web import BASE, running

OK = {'X-Token': 'secret'}


def require_token(x_token: str | None = Header(default=None)) -> None:
    if x_token != 'secret':
        raise HTTPException(401, 'not authenticated')


async def call_asgi(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, int]:
    """POST `body` straight through ASGI; return the status and how many times the app asked for the body."""
    reads = 0
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads, sent
        if sent:
            await anyio.sleep_forever()
        reads += 1
        sent = True
        return {'type': 'http.request', 'body': body, 'more_body': False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message['type'] == 'http.response.start':
            status = message['status']

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw_headers.append((b'content-length', str(len(body)).encode()))
    scope = {
        'type': 'http',
        'asgi': {'version': '3.0', 'spec_version': '2.3'},
        'http_version': '1.1',
        'method': 'POST',
        'scheme': 'http',
        'path': path,
        'raw_path': path.encode(),
        'query_string': b'',
        'root_path': '',
        'headers': raw_headers,
        'client': ('127.0.0.1', 1),
        'server': ('t', 80),
    }
    with anyio.fail_after(5):
        await app(scope, receive, send)
    return status, reads


@pytest.mark.anyio
async def test_auth_runs_before_the_body_is_read() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, auth=require_token)
        tid = await running(manager, gate)
        json_type = {'Content-Type': 'application/json'}
        for path in (f'/tasks/{tid}/cancel', f'/tasks/{tid}/answer'):
            for body in (b'{not json', b'{"kind": "hard"}', b'{"answer": "blue"}'):
                # Unauthenticated: refused, and the body was never even asked for.
                assert await call_asgi(app, path, body, json_type) == (401, 0)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            # A malformed body is only judged once the request is authenticated.
            response = await client.post(f'/tasks/{tid}/cancel', content=b'{not json', headers=json_type)
            assert response.status_code == 401
            response = await client.post(f'/tasks/{tid}/cancel', content=b'{not json', headers={**json_type, **OK})
            assert response.status_code == 422
            assert response.json()['detail'][0]['type'] == 'json_invalid'
            response = await client.post(f'/tasks/{tid}/answer', json={'answer': 3}, headers=OK)
            assert response.status_code == 422 and response.json()['detail'][0]['loc'] == ['body', 'answer']
        record = manager.get(tid)
        assert record is not None and record.cancel is None and record.status is TaskStatus.RUNNING
        gate.release.set()


@pytest.mark.anyio
async def test_bodies_over_the_limit_get_413_without_being_read_whole() -> None:
    gate = Gate()
    async with TaskManager() as manager:
        app = create_app(manager, auth=require_token, max_body_bytes=1000)
        tid = await running(manager, gate)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            headers = {**OK, 'Content-Type': 'application/json'}
            fits = json.dumps({'answer': 'x' * 900}).encode()
            response = await client.post(f'/tasks/{tid}/answer', content=fits, headers=headers)
            assert response.status_code == 200 and response.json()['accepted'] is False

            too_big = json.dumps({'answer': 'x' * 1000}).encode()
            response = await client.post(f'/tasks/{tid}/answer', content=too_big, headers=headers)
            assert response.status_code == 413 and '1000 bytes' in response.json()['detail']

            # Without a Content-Length (chunked), the body is counted as it arrives and reading stops at the limit.
            pulled = 0

            async def chunks() -> Any:
                nonlocal pulled
                for _ in range(1000):
                    pulled += 1
                    yield b'x' * 100

            response = await client.post(f'/tasks/{tid}/cancel', content=chunks(), headers=headers)
            assert response.status_code == 413
            assert pulled <= 12  # 1,000 bytes is 10 chunks of 100 (the transport may read a little ahead)
        record = manager.get(tid)
        assert record is not None and record.cancel is None
        gate.release.set()


@pytest.mark.anyio
async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True, max_body_bytes=100)
        headers = {'Content-Type': 'application/json', 'Content-Length': str(10**9)}
        # The body is not what the header says, but it is never read to find out.
        status, reads = await call_asgi(app, '/tasks/nope/cancel', b'{}', headers)
        assert (status, reads) == (413, 0)


@pytest.mark.anyio
async def test_the_json_content_type_rule_does_not_depend_on_fastapi() -> None:
    # FastAPI before 0.132 parsed a body as JSON whatever its content type; `strict_content_type=False` does the same.
    gate = Gate()
    async with TaskManager() as manager:
        app = FastAPI(strict_content_type=False)
        app.include_router(create_router(manager, allow_unauthenticated=True))
        tid = await running(manager, gate)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            for headers in ({}, {'Content-Type': 'text/plain'}, {'Content-Type': 'application/x-www-form-urlencoded'}):
                response = await client.post(f'/tasks/{tid}/cancel', content=b'{"kind": "hard"}', headers=headers)
                assert response.status_code == 422, headers
                assert response.json()['detail'][0]['type'] == 'content_type'
            response = await client.post(
                f'/tasks/{tid}/cancel', content=b'{"kind": "soft"}', headers={'Content-Type': 'application/json'}
            )
            assert response.status_code == 200 and response.json()['accepted'] is True
        gate.release.set()


# ---------------------------------------------------------------------------------------------------- a real server

SERVER = textwrap.dedent(
    """
    import sys

    import uvicorn
    from fastapi import Header, HTTPException

    from pydantic_ai_subagents import TaskManager
    from pydantic_ai_subagents.web import create_app


    def require_token(x_token: str | None = Header(default=None)) -> None:
        if x_token != 'secret':
            raise HTTPException(401, 'not authenticated')


    app = create_app(TaskManager(), auth=require_token)
    uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[1]), log_level='warning')
    """
)

MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def memory_kib(pid: int, field: str) -> int:
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise AssertionError(f'{field} not in /proc/{pid}/status')


def huge_body(size: int) -> Iterator[bytes]:
    chunk = b'{"kind": "' + b'x' * (MIB - 10)
    for _ in range(size // len(chunk)):
        yield chunk


def post_huge(url: str, headers: dict[str, str], size: int) -> int | str:
    """POST a generated body of `size` bytes; the status, or how the server cut the upload short."""
    try:
        with httpx.Client(timeout=60) as client:
            return client.post(url, content=huge_body(size), headers=headers).status_code
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as e:
        return type(e).__name__


def test_a_huge_body_does_not_grow_the_server() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, '-c', SERVER, str(port)])
    try:
        base = f'http://127.0.0.1:{port}'
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f'{base}/tasks', timeout=1).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, 'the server did not start'
            time.sleep(0.1)
        before = memory_kib(server.pid, 'VmHWM')
        size = 200 * MIB
        json_type = {'Content-Type': 'application/json'}
        unauthenticated = post_huge(f'{base}/tasks/t1/cancel', json_type, size)
        authenticated = post_huge(f'{base}/tasks/t1/cancel', {**json_type, **OK}, size)
        declared = post_huge(f'{base}/tasks/t1/cancel', {**json_type, **OK, 'Content-Length': str(size)}, size)
        after = memory_kib(server.pid, 'VmHWM')
        print(
            f'server peak RSS: {before} KiB before, {after} KiB after three 200 MiB posts:',
            unauthenticated,
            authenticated,
            declared,
        )
        assert unauthenticated in (401, 'WriteError', 'RemoteProtocolError', 'ReadError')
        assert authenticated in (413, 'WriteError', 'RemoteProtocolError', 'ReadError')
        assert declared in (413, 'WriteError', 'RemoteProtocolError', 'ReadError')
        assert after - before < 50 * 1024, (before, after)
        # Still serving.
        assert httpx.get(f'{base}/tasks', headers=OK, timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.anyio
async def test_bodies_that_are_not_utf8_json_get_422() -> None:
    async with TaskManager() as manager:
        app = create_app(manager, allow_unauthenticated=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            for body in (b'\xff', b'{"kind": "\xc3"}', b'\x00', b'[]', b'null', b'{"kind": "hard"} trailing'):
                response = await client.post(
                    '/tasks/t1/cancel', content=body, headers={'Content-Type': 'application/json'}
                )
                assert response.status_code == 422, body


# With subagents, so that the follow-up route is the real one (without them it answers 501, after auth too).
GUARDED_APP = create_app(TaskManager(), auth=require_token, subagents=[SubAgentConfig(name='worker', model='test')])
guarded = schemathesis.openapi.from_asgi('/openapi.json', GUARDED_APP).exclude(path='/tasks/events')


@guarded.parametrize()
@hypothesis.settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_fuzzed_requests_without_credentials_all_get_401(case: schemathesis.Case) -> None:
    # Whatever the body (schemathesis sends valid and invalid ones, of every content type), no credentials: 401.
    if case.headers:
        case.headers.pop('x-token', None)
    # A method the route does not have (schemathesis tries TRACE and the like) finds no route at all: 405.
    expected = 401 if case.method.upper() == case.operation.method.upper() else 405
    response = case.call()
    assert response.status_code == expected, (case.method, case.path, case.headers, case.body)
