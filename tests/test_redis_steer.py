"""Steering and retries of tasks that run on workers: a message from the parent reaches the worker's live run, and
the worker's retries after transient model failures are counted on the owner's record.

A real `redis-server`; the owner's manager and the worker each have their own bus, store and connections (two
processes as far as Redis can tell). The worker's local manager uses a store the test can read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import (
    InMemoryTaskStore,
    SubAgentConfig,
    TaskEvent,
    TaskManager,
    TaskRetrying,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents.redis import Worker, redis_task_manager

from . import redis_helpers, redis_server
from .conftest import Script, call, task_id_from
from .redis_helpers import FAST, fast_worker, until
from .remembering import remembering
from .test_tracing import by_name, spans  # noqa: F401  # pyright: ignore[reportUnusedImport]

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url
namespace = redis_helpers.namespace

STEER = 'Message from the agent that gave you this task: '

ON_OWNER = SubAgentConfig(name='remote', description='Works on a worker.', worker_queue='steer')


class Gated:
    """A worker's model that holds its first request until released, then answers with every prompt it read."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            self.started.set()
            await self.release.wait()
        return remembering(messages, info)


@asynccontextmanager
async def worker_and_owner(
    redis_url: str, namespace: str, on_worker: SubAgentConfig, local_store: InMemoryTaskStore | None = None
) -> AsyncGenerator[tuple[Worker, TaskManager]]:
    store = InMemoryTaskStore() if local_store is None else local_store
    worker = fast_worker([on_worker], redis_url, namespace, 'steer', store=store)
    async with anyio.create_task_group() as tg, redis_task_manager(redis_url, namespace=namespace, **FAST) as owner:
        tg.start_soon(worker.run)
        await worker.wait_ready()
        yield worker, owner
        worker.stop()


async def test_a_message_reaches_the_live_run_of_a_task_on_a_worker(redis_url: str, namespace: str) -> None:
    gated = Gated()
    local = InMemoryTaskStore()
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(gated))
    async with worker_and_owner(redis_url, namespace, on_worker, local) as (_, owner):
        record = await owner.start(ON_OWNER, 'Survey tide-pool animals.', scope='app')
        with anyio.fail_after(10):
            await gated.started.wait()
        assert owner.message_task(record.id, 'Only hermit crabs.')
        # The message crossed to the worker and went into its live run, while its model was still working.
        await until(lambda: any(r.messages == ('Only hermit crabs.',) for r in local.list()))
        gated.release.set()
        final = await owner.wait_for(record.id, timeout=10)
    assert final.status is TaskStatus.COMPLETED, final
    assert final.result == f'Survey tide-pool animals. | {STEER}Only hermit crabs.'
    assert final.messages == ('Only hermit crabs.',)


async def test_the_parent_model_steers_a_worker_task_held_while_it_was_queued(redis_url: str, namespace: str) -> None:
    # The owner's toolset runs the parent's model; the task waits on the queue (no worker yet) when it is steered.
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(remembering))
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as owner:
        toolset = create_subagent_toolset([ON_OWNER], manager=owner)
        script = Script(
            [
                [call('task', description='Count the crabs.', subagent_type='remote', mode='async')],
                lambda s: [call('message_task', task_id=task_id_from(s.reply()), message='Count the small ones too.')],
            ]
        )
        # Not `async with toolset:`, which would close the manager (and cancel the task) on the way out.
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        (record,) = owner.list('c1')
        assert script.replies[2][0].startswith('Message queued for task'), script.replies[2]
        worker = fast_worker([on_worker], redis_url, namespace, 'steer')
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            final = await owner.wait_for(record.id, timeout=10)
            worker.stop()
            assert final.status is TaskStatus.COMPLETED, final
            # The run started with the message: it read it with its first request.
            assert final.result == f'Count the crabs. | {STEER}Count the small ones too.'


async def test_a_message_to_a_finished_worker_task_is_refused_with_its_result(redis_url: str, namespace: str) -> None:
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(remembering))
    async with worker_and_owner(redis_url, namespace, on_worker) as (_, owner):
        record = await owner.wait_for((await owner.start(ON_OWNER, 'Quick.', scope='app')).id, timeout=10)
        assert record.status is TaskStatus.COMPLETED
        assert not owner.message_task(record.id, 'too late')
        assert owner.steer_refusal(record) is not None
        assert owner.get(record.id).messages == ()  # type: ignore[union-attr]


async def test_a_worker_retries_transient_model_failures_and_the_owner_records_the_attempts(
    redis_url: str, namespace: str
) -> None:
    failures = [ModelHTTPError(429, 'demo', body='slow down'), ModelHTTPError(503, 'demo')]
    go = anyio.Event()

    async def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await go.wait()
        if failures:
            raise failures.pop(0)
        return ModelResponse(parts=[TextPart('done')])

    on_worker = SubAgentConfig(
        name='remote', instructions='Work.', model=FunctionModel(flaky), model_retries=3, retry_backoff=0.01
    )
    seen: list[TaskEvent] = []

    async def collect(owner: TaskManager) -> None:
        async for event in owner.events():
            seen.append(event)

    async with worker_and_owner(redis_url, namespace, on_worker) as (_, owner), anyio.create_task_group() as tg:
        record = await owner.start(ON_OWNER, 'Do it.', scope='app')
        tg.start_soon(collect, owner)
        await until(lambda: any(e.task_id == record.id for e in seen))  # subscribed: the live task's TaskCreated
        go.set()
        final = await owner.wait_for(record.id, timeout=10)
        await until(lambda: any(e.task_id == record.id and e.is_terminal for e in seen))
        tg.cancel_scope.cancel()
        assert final.status is TaskStatus.COMPLETED and final.result == 'done', final
        assert final.attempts == 3
        retries = [e for e in seen if isinstance(e, TaskRetrying)]
        assert [(e.task_id, e.attempt, e.status) for e in retries] == [
            (record.id, 2, TaskStatus.RUNNING),
            (record.id, 3, TaskStatus.RUNNING),
        ]
        assert '429' in retries[0].error and '503' in retries[1].error
        assert all(0 < e.delay < 1 for e in retries)


async def test_a_worker_gives_up_after_the_configured_retries(redis_url: str, namespace: str) -> None:
    def down(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(503, 'demo')

    on_worker = SubAgentConfig(
        name='remote', instructions='Work.', model=FunctionModel(down), model_retries=1, retry_backoff=0.01
    )
    async with worker_and_owner(redis_url, namespace, on_worker) as (_, owner):
        final = await owner.wait_for((await owner.start(ON_OWNER, 'Do it.', scope='app')).id, timeout=10)
    assert final.status is TaskStatus.FAILED and final.error is not None and '503' in final.error, final
    assert final.attempts == 2


async def test_messages_racing_the_end_of_a_worker_task_are_taken_or_refused_never_lost_in_a_crash(
    redis_url: str, namespace: str
) -> None:
    gated = Gated()
    local = InMemoryTaskStore()
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(gated))
    async with worker_and_owner(redis_url, namespace, on_worker, local) as (_, owner):
        record = await owner.start(ON_OWNER, 'Go.', scope='app')
        with anyio.fail_after(10):
            await gated.started.wait()
        assert owner.message_task(record.id, 'first')
        await until(lambda: any(r.messages == ('first',) for r in local.list()))  # in the run before it may end
        gated.release.set()
        taken: list[str] = []
        n = 0
        with anyio.fail_after(10):
            # Each message read is one more turn: at most 20, well within the run's request limit.
            while not (current := owner.get(record.id)) or not current.is_terminal:
                if n < 20:
                    n += 1
                    if owner.message_task(record.id, f'more {n}'):
                        taken.append(f'more {n}')
                await anyio.sleep(0.001)
        final = await owner.wait_for(record.id)
        assert not owner.message_task(record.id, 'after the end')
        assert owner.get(record.id) == final
    assert final.status is TaskStatus.COMPLETED, final
    assert final.messages == ('first', *taken)  # every message taken is recorded, in order
    assert isinstance(final.result, str) and final.result.startswith(f'Go. | {STEER}first')
    read = [p.removeprefix(STEER) for p in final.result.split(' | ')[2:]]
    assert read == taken[: len(read)]  # what the run read, it read in order; the rest came as it ended


async def test_a_process_that_does_not_own_a_task_steers_it_through_its_owner(redis_url: str, namespace: str) -> None:
    gated = Gated()
    config = SubAgentConfig(name='local', instructions='Work.', model=FunctionModel(gated))
    async with (
        redis_task_manager(redis_url, namespace=namespace, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        await b.bus.wait_for_participant(a.participant)  # type: ignore[attr-defined]
        record = await a.start(config, 'Survey tide-pool animals.', scope='c1')
        with anyio.fail_after(10):
            await gated.started.wait()
        await until(lambda: (r := b.get(record.id)) is not None and r.status is TaskStatus.RUNNING)
        # b's parent model steers a's task through b's tools.
        toolset = create_subagent_toolset([config], manager=b)
        script = Script([[call('message_task', task_id=record.id, message='Only hermit crabs.')]])
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        assert script.replies[1][0].startswith('Message sent to task'), script.replies[1]
        await until(lambda: (r := a.get(record.id)) is not None and r.messages == ('Only hermit crabs.',))
        gated.release.set()
        final = await a.wait_for(record.id, timeout=10)
        assert final.result == f'Survey tide-pool animals. | {STEER}Only hermit crabs.'
        await until(lambda: (r := b.get(record.id)) is not None and r.is_terminal)
        assert b.get(record.id).messages == ('Only hermit crabs.',)  # type: ignore[union-attr]
        assert not b.message_task(record.id, 'too late')  # finished: refused in b already


async def test_the_http_api_of_one_process_steers_a_worker_task_of_another(redis_url: str, namespace: str) -> None:
    import httpx

    from pydantic_ai_subagents.web import create_app

    gated = Gated()
    local = InMemoryTaskStore()
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(gated))
    async with (
        worker_and_owner(redis_url, namespace, on_worker, local) as (_, owner),
        redis_task_manager(redis_url, namespace=namespace, **FAST) as other,
    ):
        await other.bus.wait_for_participant(owner.participant)  # type: ignore[attr-defined]
        record = await owner.start(ON_OWNER, 'Survey tide-pool animals.', scope='app')
        with anyio.fail_after(10):
            await gated.started.wait()
        await until(lambda: (r := other.get(record.id)) is not None and r.status is TaskStatus.RUNNING)
        app = create_app(other, allow_unauthenticated=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://other') as client:
            reply = await client.post(f'/tasks/{record.id}/message', json={'message': 'Only hermit crabs.'})
        assert reply.status_code == 200 and reply.json()['accepted'] is True, reply.text
        # other process -> owner -> worker -> the live run
        await until(lambda: any(r.messages == ('Only hermit crabs.',) for r in local.list()))
        gated.release.set()
        final = await owner.wait_for(record.id, timeout=10)
        assert final.result == f'Survey tide-pool animals. | {STEER}Only hermit crabs.'
        assert final.messages == ('Only hermit crabs.',)


async def test_a_worker_task_s_retries_are_on_its_span_on_the_owner(
    redis_url: str,
    namespace: str,
    spans: InMemorySpanExporter,  # noqa: F811
) -> None:
    failures = [ModelHTTPError(503, 'demo')]

    def flaky(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if failures:
            raise failures.pop(0)
        return ModelResponse(parts=[TextPart('done')])

    on_worker = SubAgentConfig(
        name='remote', instructions='Work.', model=FunctionModel(flaky), model_retries=1, retry_backoff=0.01
    )
    async with worker_and_owner(redis_url, namespace, on_worker) as (_, owner):
        final = await owner.wait_for((await owner.start(ON_OWNER, 'Do it.', scope='app')).id, timeout=10)
        assert final.status is TaskStatus.COMPLETED and final.attempts == 2
        owner_spans = [
            s
            for s in by_name(spans.get_finished_spans(), 'subagent remote')
            if s.attributes and s.attributes.get('subagents.task_id') == final.id
        ]
    (span,) = owner_spans
    assert span.attributes is not None and span.attributes['subagents.attempts'] == 2
    (event,) = [e for e in span.events if e.name == 'subagents.retry']
    assert event.attributes is not None and event.attributes['subagents.attempt'] == 2
