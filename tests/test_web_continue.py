"""Continuing a finished task over HTTP: `POST /tasks/{task_id}/continue`, and what the API says can be continued.

Real tasks run on scripted models in a real `TaskManager` (behind a real `Agent` where the parent matters); the app is
called in-process through ASGI, or served by a `TestClient` on another thread.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from pydantic_ai import Agent, RunContext
from pydantic_ai.messages import (
    ModelMessage,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from starlette.testclient import TestClient

from pydantic_ai_subagents import (
    RefuseTask,
    SubAgentConfig,
    TaskManager,
    TaskRequest,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents.web import create_app

from . import redis_server
from .conftest import Gate, Script, call, sync_reply
from .remembering import REMEMBERING, worker
from .test_web_hostile import call_asgi, require_token

pytestmark = pytest.mark.anyio
redis_url = redis_server.redis_url

BASE = 'http://t'
OK = {'X-Token': 'secret'}


@asynccontextmanager
async def client_of(app: Any) -> AsyncGenerator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def finished(manager: TaskManager, config: SubAgentConfig, description: str, scope: str = 'c1') -> str:
    record = await manager.start(config, description, scope=scope)
    done = await manager.wait_for(record.id)
    assert done.status is TaskStatus.COMPLETED, done
    return record.id


async def test_a_task_the_agent_delegated_is_continued_over_http_and_the_agent_hears_of_it() -> None:
    config = worker()
    toolset = create_subagent_toolset([config])
    async with toolset:
        manager = toolset.manager
        script = Script([[call('task', description='list the files', subagent_type='worker')]])
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        (old,) = manager.list()
        assert script.replies[1] == [sync_reply('list the files', old.id)]
        app = create_app(manager, allow_unauthenticated=True, subagents=toolset.subagents.values())
        async with client_of(app) as client:
            listed = (await client.get('/tasks')).json()['tasks']
            assert [(t['id'], t['can_continue']) for t in listed] == [(old.id, True)]

            response = await client.post(f'/tasks/{old.id}/continue', json={'message': 'now count them'})
            assert response.status_code == 200, response.text
            new = response.json()['task']
            assert new['continued_from'] == old.id and new['id'] != old.id
            assert (new['subagent'], new['scope'], new['mode'], new['description']) == (
                'worker',
                'c1',
                'async',
                'now count them',
            )
            done = await manager.wait_for(new['id'])
            assert done.result == 'list the files | now count them'
            assert done.continued_from == old.id
            # The follow-up can be followed up in turn; the task it continued is untouched, and can be again.
            after = {t['id']: t for t in (await client.get('/tasks')).json()['tasks']}
            assert after[new['id']]['can_continue'] is True and after[old.id]['can_continue'] is True
            assert after[old.id]['status']['state'] == 'completed' and after[old.id]['continued_from'] is None

        # The follow-up is a task of the conversation: its next run is told what it did.
        heard: list[str] = []

        def parent(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            heard.extend(str(p.content) for m in messages for p in m.parts if isinstance(p, UserPromptPart))
            return ModelResponse(parts=[TextPart('ok')])

        await Agent(FunctionModel(parent), toolsets=[toolset]).run('anything new?', conversation_id='c1')
    assert any(done.id in prompt and 'list the files | now count them' in prompt for prompt in heard), heard


async def test_tasks_that_cannot_be_continued_get_409_and_stay_as_they_were() -> None:
    gate = Gate()
    failing = FunctionModel(lambda m, i: (_ for _ in ()).throw(RuntimeError('model down')))
    parentless = SubAgentConfig(name='parentless', instructions='You use the parent model.')
    given = [worker(), worker(gate.model(), name='slow'), worker(failing, name='broken'), parentless]
    async with TaskManager() as manager:
        done = await finished(manager, given[0], 'a')
        failed = await manager.start(given[2], 'b', scope='c1')
        assert (await manager.wait_for(failed.id)).status is TaskStatus.FAILED
        live = (await manager.start(given[1], 'c', scope='c1')).id
        await gate.entered.wait()
        unknown_to_app = await finished(manager, worker(name='elsewhere'), 'd')
        # A task of a config that uses the parent's model ran with one; the app has none to give its follow-up.
        no_model = (await manager.start(parentless, 'e', scope='c1', model=REMEMBERING)).id
        await manager.wait_for(no_model)
        app = create_app(manager, allow_unauthenticated=True, subagents=given)
        async with client_of(app) as client:
            before = manager.list()

            async def refused(task_id: str, status: int = 409, **params: str) -> str:
                response = await client.post(f'/tasks/{task_id}/continue', json={'message': 'more'}, params=params)
                assert response.status_code == status, response.text
                return response.json()['detail']

            assert await refused('nope', 404) == "task 'nope' not found"
            assert await refused(done, 404, scope='another conversation') == f'task {done!r} not found'
            assert await refused(live) == (
                f'task {live!r} cannot be continued: it has not finished (running); send it a message instead '
                '(POST .../message)'
            )
            assert await refused(failed.id) == (
                f'task {failed.id!r} cannot be continued: it ended failed, not completed; start a new task'
            )
            assert await refused(unknown_to_app) == (
                f"task {unknown_to_app!r} cannot be continued: its subagent 'elsewhere' is not one this app was given"
            )
            assert await refused(no_model) == (
                f"task {no_model!r} cannot be continued: its subagent 'parentless' has no model of its own (it uses "
                "the parent's): give the app a model for follow-ups (model=...)"
            )
            views = {t['id']: t['can_continue'] for t in (await client.get('/tasks')).json()['tasks']}
            assert views == {done: True, failed.id: False, live: False, unknown_to_app: False, no_model: False}
            assert manager.list() == before  # nothing started, nothing changed
        gate.release.set()
        await manager.wait_for(live)

        # Given a model, the app continues the parentless subagent's task with it.
        app = create_app(manager, allow_unauthenticated=True, subagents=given, model=REMEMBERING)
        async with client_of(app) as client:
            assert (await client.get(f'/tasks/{no_model}')).json()['can_continue'] is True
            response = await client.post(f'/tasks/{no_model}/continue', json={'message': 'more', 'mode': 'sync'})
            assert response.status_code == 200, response.text
            assert response.json()['task']['mode'] == 'sync'
            assert (await manager.wait_for(response.json()['task']['id'])).result == 'e | more'


async def test_an_app_without_subagents_answers_501_and_offers_no_follow_up() -> None:
    async with TaskManager() as manager:
        done = await finished(manager, worker(), 'a')
        async with client_of(create_app(manager, allow_unauthenticated=True)) as client:
            assert (await client.get(f'/tasks/{done}')).json()['can_continue'] is False
            response = await client.post(f'/tasks/{done}/continue', json={'message': 'more'})
            assert response.status_code == 501
            assert 'subagents=' in response.json()['detail']
        assert [r.id for r in manager.list()] == [done]


async def test_a_task_pruned_while_its_follow_up_starts_is_refused_never_started_fresh() -> None:
    """Retention drops the old task between the route's lookup and the start: `409`, and no task is started."""
    config = worker()
    other = worker(name='other')
    pruned_during: list[bool] = []

    async def push_it_out(request: TaskRequest) -> None:
        if request.continue_task_id is not None:
            # The next task to finish pushes the old one out of retention (max_retained=1), in the same step.
            finishing = await manager.start(other, 'other work', scope='c1')
            await manager.wait_for(finishing.id)
            pruned_during.append(manager.get(request.continue_task_id) is None)

    async with TaskManager(max_retained=1, before_task=push_it_out) as manager:
        old = await finished(manager, config, 'old work')
        async with client_of(create_app(manager, allow_unauthenticated=True, subagents=[config, other])) as client:
            response = await client.post(f'/tasks/{old}/continue', json={'message': 'follow up'})
            assert pruned_during == [True]
            assert response.status_code == 409, response.text
            assert response.json()['detail'] == (
                f'task {old!r} cannot be continued: it finished long ago and its conversation is no longer kept'
            )
            assert [r.description for r in manager.list()] == ['other work']
            # Once pruned, the task is unknown to every route alike.
            response = await client.post(f'/tasks/{old}/continue', json={'message': 'follow up'})
            assert response.status_code == 404
            assert (await client.get(f'/tasks/{old}')).status_code == 404


async def test_a_task_that_is_still_live_is_refused_until_it_completes() -> None:
    gate = Gate()
    config = worker(gate.model())
    async with TaskManager() as manager:
        tid = (await manager.start(config, 'long job', scope='c1')).id
        async with client_of(create_app(manager, allow_unauthenticated=True, subagents=[config])) as client:
            response = await client.post(f'/tasks/{tid}/continue', json={'message': 'and then?'})
            assert response.status_code == 409 and 'not finished (pending)' in response.json()['detail']
            await gate.entered.wait()
            response = await client.post(f'/tasks/{tid}/continue', json={'message': 'and then?'})
            assert response.status_code == 409 and 'not finished (running)' in response.json()['detail']
            assert [r.id for r in manager.list()] == [tid]
            gate.release.set()
            await manager.wait_for(tid)
            response = await client.post(f'/tasks/{tid}/continue', json={'message': 'and then?'})
            assert response.status_code == 200, response.text
            follow_up = await manager.wait_for(response.json()['task']['id'])
            assert follow_up.status is TaskStatus.COMPLETED and follow_up.continued_from == tid


async def test_a_follow_up_refused_by_the_before_task_hook_gets_409_with_its_reason() -> None:
    seen: list[TaskRequest] = []

    def hook(request: TaskRequest) -> RefuseTask | None:
        seen.append(request)
        if request.continue_task_id is not None:
            return RefuseTask(reason='follow-ups need a ticket')
        return None

    config = worker()
    async with TaskManager(before_task=hook) as manager:
        done = await finished(manager, config, 'a')
        async with client_of(create_app(manager, allow_unauthenticated=True, subagents=[config])) as client:
            response = await client.post(f'/tasks/{done}/continue', json={'message': 'more'})
        assert response.status_code == 409
        assert response.json()['detail'] == 'the follow-up was refused: follow-ups need a ticket'
        assert [(r.description, r.continue_task_id, r.scope) for r in seen] == [('a', None, 'c1'), ('more', done, 'c1')]
        assert [r.id for r in manager.list()] == [done]


async def test_the_follow_up_gets_the_deps_mapped_as_the_parent_s_are() -> None:
    got: list[Any] = []
    tools = FunctionToolset[Any]()

    @tools.tool
    def whoami(ctx: RunContext[Any]) -> str:  # pyright: ignore[reportUnusedFunction]
        got.append(ctx.deps)
        return 'ok'

    def calls_whoami(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if isinstance(messages[-1].parts[-1], ToolReturnPart):
            return ModelResponse(parts=[TextPart('done')])
        return ModelResponse(parts=[ToolCallPart('whoami', {})])

    config = SubAgentConfig(
        name='deps',
        instructions='You work.',
        model=FunctionModel(calls_whoami),
        toolsets=[tools],
        deps=lambda d: f'mapped {d}',
    )
    async with TaskManager() as manager:
        first = await manager.start(config, 'who?', scope='c1', deps='mapped by the parent')
        await manager.wait_for(first.id)
        app = create_app(manager, allow_unauthenticated=True, subagents=[config], deps='app')
        async with client_of(app) as client:
            response = await client.post(f'/tasks/{first.id}/continue', json={'message': 'again?'})
            assert response.status_code == 200, response.text
            follow_up = await manager.wait_for(response.json()['task']['id'])
    assert follow_up.status is TaskStatus.COMPLETED, follow_up
    assert got == ['mapped by the parent', 'mapped app']


async def test_continue_from_a_server_on_another_thread_starts_on_the_manager_s_loop() -> None:
    config = worker()
    async with TaskManager() as manager:
        done = await finished(manager, config, 'first')
        app = create_app(manager, allow_unauthenticated=True, subagents=[config])

        def from_another_loop() -> Any:
            with TestClient(app) as client:
                return client.post(f'/tasks/{done}/continue', json={'message': 'second'}).json()

        reply = await anyio.to_thread.run_sync(from_another_loop)
        follow_up = await manager.wait_for(reply['task']['id'])
        assert follow_up.result == 'first | second' and follow_up.continued_from == done


async def test_a_closed_manager_answers_503() -> None:
    config = worker()
    async with TaskManager() as manager:
        done = await finished(manager, config, 'first')
        app = create_app(manager, allow_unauthenticated=True, subagents=[config])
    async with client_of(app) as client:
        response = await client.post(f'/tasks/{done}/continue', json={'message': 'second'})
    assert response.status_code == 503 and response.json()['detail'] == 'the task manager is closed'


async def test_an_app_never_starts_the_manager_and_answers_503_while_it_is_not_running() -> None:
    config = worker()
    async with TaskManager() as ran_it:
        done = await finished(ran_it, config, 'first')
        idle = TaskManager(store=ran_it.store)  # reads the same records; never started
        async with client_of(create_app(idle, allow_unauthenticated=True, subagents=[config])) as client:
            response = await client.post(f'/tasks/{done}/continue', json={'message': 'second'})
        assert response.status_code == 503 and response.json()['detail'] == 'the task manager is not running'
        assert idle.loop is None and [r.id for r in ran_it.list()] == [done]


def test_subagents_are_checked_when_the_app_is_made() -> None:
    manager = TaskManager()
    with pytest.raises(TypeError, match='not one config'):
        create_app(manager, allow_unauthenticated=True, subagents=worker())  # pyright: ignore[reportArgumentType]
    with pytest.raises(TypeError, match=r'subagents\[1\] must be a SubAgentConfig, not str'):
        create_app(manager, allow_unauthenticated=True, subagents=[worker(), 'worker'])  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="duplicate subagent name in subagents: 'worker'"):
        create_app(manager, allow_unauthenticated=True, subagents=[worker(), worker()])
    with pytest.raises(TypeError, match='not dict'):
        create_app(manager, allow_unauthenticated=True, subagents={'worker': worker()})  # pyright: ignore[reportArgumentType]


# ---------------------------------------------------------------------------------------------------- hostile bodies


async def test_unauthenticated_follow_ups_are_refused_before_the_body_is_read() -> None:
    config = worker()
    async with TaskManager() as manager:
        done = await finished(manager, config, 'a')
        app = create_app(manager, auth=require_token, subagents=[config], max_body_bytes=1000)
        json_type = {'Content-Type': 'application/json'}
        path = f'/tasks/{done}/continue'
        for body in (
            b'{not json',
            b'{"message": "more"}',
            b'x' * 5000,
            '{"message": "\udcff"}'.encode('utf-8', 'surrogatepass'),
        ):
            assert await call_asgi(app, path, body, json_type) == (401, 0)
        # Without subagents the route still authenticates first.
        bare = create_app(manager, auth=require_token)
        assert await call_asgi(bare, path, b'{"message": "more"}', json_type) == (401, 0)
        assert await call_asgi(bare, path, b'{"message": "more"}', {**json_type, **OK}) == (501, 0)
        assert [r.id for r in manager.list()] == [done]

        async with client_of(app) as client:
            headers = {**OK, **json_type}
            too_big = json.dumps({'message': 'x' * 1000}).encode()
            response = await client.post(path, content=too_big, headers=headers)
            assert response.status_code == 413 and '1000 bytes' in response.json()['detail']
            bad_bodies: list[tuple[bytes, dict[str, str]]] = [
                (b'{not json', headers),
                (b'{"message": "   "}', headers),
                (b'{"message": ""}', headers),
                (b'{"message": 3}', headers),
                (b'{"message": "more", "mode": "later"}', headers),
                (b'{"message": "more", "subagent": "other"}', headers),
                (b'{"message": "more"}', {**OK, 'Content-Type': 'text/plain'}),
                (b'\xff\xfe', headers),
            ]
            for content, sent in bad_bodies:
                response = await client.post(path, content=content, headers=sent)
                assert response.status_code == 422, (content, response.text)
            # A malformed body is judged before the task is looked up.
            response = await client.post('/tasks/nope/continue', content=b'{not json', headers=headers)
            assert response.status_code == 422
        assert [r.id for r in manager.list()] == [done]


# ---------------------------------------------------------------------------------------------------- across processes


async def test_a_task_run_in_another_process_is_offered_and_continued_from_redis(redis_url: str) -> None:
    from pydantic_ai_subagents.redis import redis_task_manager

    namespace = f'test-{uuid.uuid4().hex[:12]}'
    config = worker()
    async with (
        redis_task_manager(redis_url, namespace=namespace, max_transcript_bytes=2000) as ran_it,
        redis_task_manager(redis_url, namespace=namespace) as serves_it,
    ):
        done = await finished(ran_it, config, 'here')
        too_long = await finished(ran_it, config, 'x' * 3000)  # its conversation is over the store's cap
        with anyio.fail_after(10):
            for task_id in (done, too_long):
                while (seen := serves_it.get(task_id)) is None or seen.status is not TaskStatus.COMPLETED:
                    await anyio.sleep(0.01)
        async with client_of(create_app(serves_it, allow_unauthenticated=True, subagents=[config])) as client:
            # The conversation is in Redis, not in this process: offered, and read from there.
            assert (await client.get(f'/tasks/{done}')).json()['can_continue'] is True
            response = await client.post(f'/tasks/{done}/continue', json={'message': 'there'})
            assert response.status_code == 200, response.text
            assert (await serves_it.wait_for(response.json()['task']['id'])).result == 'here | there'
            # One the store did not keep is refused when asked, with the reason, and starts nothing.
            before = len(serves_it.list())
            response = await client.post(f'/tasks/{too_long}/continue', json={'message': 'more'})
            assert response.status_code == 409
            assert 'was larger than the store' in response.json()['detail']
            assert len(serves_it.list()) == before
