"""Continuing a finished task across processes: its conversation is kept in Redis, with its record and bounded.

Two managers, each with its own bus, store and connections (two processes as far as Redis can tell), on a real
`redis-server`; workers run in this process on their own connections too.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import anyio
import pytest
import redis.asyncio as aioredis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import FunctionModel

from pydantic_ai_subagents import (
    SubAgentConfig,
    TaskEnd,
    TaskManager,
    TaskNotContinuableError,
    TaskRecord,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents._remote import WorkerJob, WorkerUpdate
from pydantic_ai_subagents.redis import RedisTaskStore, Worker, redis_task_manager
from pydantic_ai_subagents.redis._worker_steer import history_of

from . import redis_helpers, redis_server
from .conftest import Script, call, split_sync_reply
from .redis_helpers import FAST, fast_worker, finished_in
from .remembering import prompts_of, remembering

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url
namespace = redis_helpers.namespace
two = redis_helpers.two

CONFIG = SubAgentConfig(name='worker', instructions='You work.', model=FunctionModel(remembering))


async def test_the_model_in_one_process_continues_a_task_run_in_another(
    two: tuple[TaskManager, TaskManager],
) -> None:
    a, b = two
    first = await a.wait_for((await a.start(CONFIG, 'list the files', scope='c1')).id)
    assert first.status is TaskStatus.COMPLETED
    await finished_in(b, first.id)
    assert b.transcript(first.id) is None  # not run here: the conversation can only come from Redis

    toolset = create_subagent_toolset([CONFIG], manager=b)
    script = Script([[call('task', description='now count them', subagent_type='worker', continue_task_id=first.id)]])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')  # the manager stays open
    (reply,) = script.replies[1]
    follow_up = b.list('c1')[-1]
    assert split_sync_reply(reply) == ('list the files | now count them', follow_up.id)
    assert follow_up.continued_from == first.id and follow_up.owner == b.participant
    await finished_in(a, follow_up.id)
    # ... and the follow-up's own conversation is kept in Redis in turn, for the first process.
    again = await a.start(CONFIG, 'and sort them', scope='c1', continue_task_id=follow_up.id)
    again = await a.wait_for(again.id)
    assert again.result == 'list the files | now count them | and sort them'


async def test_the_transcript_lives_in_the_record_and_expires_with_it(redis_url: str, namespace: str) -> None:
    async with redis_task_manager(redis_url, namespace=namespace, retention_seconds=30.0, **FAST) as a:
        record = await a.wait_for((await a.start(CONFIG, 'one', scope='c1')).id)
        await a.store.flush()  # type: ignore[attr-defined]
        client = aioredis.from_url(redis_url)  # pyright: ignore[reportUnknownMemberType]
        try:
            key = f'{namespace}:task:{record.id}'
            assert await client.hexists(key, 'transcript')  # pyright: ignore[reportUnknownMemberType]
            assert 0 < await client.pttl(key) <= 30_000  # the record's own retention
        finally:
            await client.aclose()


async def test_a_transcript_over_the_cap_is_not_kept_and_the_follow_up_says_so(redis_url: str, namespace: str) -> None:
    async with (
        redis_task_manager(redis_url, namespace=namespace, max_transcript_bytes=2000, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        long = await a.wait_for((await a.start(CONFIG, 'x' * 3000, scope='c1')).id)
        short = await a.wait_for((await a.start(CONFIG, 'y', scope='c1')).id)
        await finished_in(b, long.id)
        await finished_in(b, short.id)
        before = len(b.list('c1'))
        with pytest.raises(TaskNotContinuableError, match=r'its conversation \(\d+ bytes\) was larger than the store'):
            await b.start(CONFIG, 'more', scope='c1', continue_task_id=long.id)
        assert len(b.list('c1')) == before  # the refusal created nothing
        # The cap is per transcript: a short one is kept.
        follow_up = await b.start(CONFIG, 'more', scope='c1', continue_task_id=short.id)
        assert (await b.wait_for(follow_up.id)).result == 'y | more'
        # The process that ran the long one still has it in memory.
        local = await a.wait_for((await a.start(CONFIG, 'more', scope='c1', continue_task_id=long.id)).id)
        assert local.result == f'{"x" * 3000} | more'


async def test_a_task_trimmed_from_redis_is_refused_not_half_continued(redis_url: str, namespace: str) -> None:
    # The owner keeps one finished task: the first one's record (and its transcript) is deleted from Redis as
    # the second finishes, while the other process still holds its copy of the record.
    async with (
        redis_task_manager(redis_url, namespace=namespace, max_retained=1, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        first = await a.wait_for((await a.start(CONFIG, 'one', scope='c1')).id)
        await finished_in(b, first.id)
        second = await a.wait_for((await a.start(CONFIG, 'two', scope='c1')).id)
        await a.store.flush()  # type: ignore[attr-defined]
        assert b.get(first.id) is not None  # b's copy still has it
        before = len(b.list('c1'))
        with pytest.raises(TaskNotContinuableError, match='not kept by the store any more'):
            await b.start(CONFIG, 'more', scope='c1', continue_task_id=first.id)
        assert len(b.list('c1')) == before
        await finished_in(b, second.id)
        follow_up = await b.start(CONFIG, 'more', scope='c1', continue_task_id=second.id)
        assert (await finished_in(b, follow_up.id)).result == 'two | more'


async def test_a_task_pruned_while_its_transcript_is_read_is_refused(redis_url: str, namespace: str) -> None:
    async with (
        redis_task_manager(redis_url, namespace=namespace, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, max_retained=1, **FAST) as b,
    ):
        first = await a.wait_for((await a.start(CONFIG, 'one', scope='c1')).id)
        await finished_in(b, first.id)
        store = b.store
        assert isinstance(store, RedisTaskStore)
        load = store.load_transcript
        read: list[list[ModelMessage] | None] = []

        async def load_then_prune(task_id: str) -> list[ModelMessage] | None:
            messages = await load(task_id)
            read.append(messages)
            # While this read was on its way, another task finished: b keeps one, so the first goes.
            second = await a.wait_for((await a.start(CONFIG, 'two', scope='c1')).id)
            await finished_in(b, second.id)
            return messages

        store.load_transcript = load_then_prune  # type: ignore[method-assign]
        with pytest.raises(TaskNotContinuableError, match='no longer kept'):
            await b.start(CONFIG, 'more', scope='c1', continue_task_id=first.id)
        assert read and read[0] is not None and prompts_of(read[0]) == ['one']  # it was read whole, then refused
        assert [r.continued_from for r in b.list('c1')] == [None]  # the second task alone; nothing half made


async def test_follow_ups_racing_retention_are_each_whole_or_refused(redis_url: str, namespace: str) -> None:
    async with (
        redis_task_manager(redis_url, namespace=namespace, max_retained=2, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, max_retained=2, **FAST) as b,
    ):
        done = [await a.wait_for((await a.start(CONFIG, f'job {i}', scope='c1')).id) for i in range(2)]
        await finished_in(b, done[-1].id)
        outcomes: list[TaskRecord | str] = []

        async def follow(task_id: str, text: str) -> None:
            try:
                record = await b.start(CONFIG, text, scope='c1', continue_task_id=task_id)
            except TaskNotContinuableError as e:
                outcomes.append(str(e))
            else:
                outcomes.append(await b.wait_for(record.id))

        async with anyio.create_task_group() as tg:
            for i in range(12):
                # Each new task of a pushes older ones out of Redis and out of b's copy while b reads.
                tg.start_soon(partial(a.start, CONFIG, f'filler {i}', scope='c1'))
                tg.start_soon(follow, done[i % 2].id, f'more {i}')
                await anyio.sleep(0.01)
        assert len(outcomes) == 12
        for outcome in outcomes:
            if isinstance(outcome, str):
                assert 'cannot be continued' in outcome, outcome
            else:
                assert outcome.status is TaskStatus.COMPLETED
                base = next(d for d in done if d.id == outcome.continued_from)
                assert isinstance(outcome.result, str) and outcome.result.startswith(f'{base.description} | more')


async def test_a_task_run_on_a_worker_is_continued_from_another_process_on_a_worker(
    redis_url: str, namespace: str
) -> None:
    on_owner = SubAgentConfig(name='remote', description='Works on a worker.', worker_queue='follow')
    worker = worker_for(redis_url, namespace, 'follow')
    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        tg.start_soon(worker.run)
        await worker.wait_ready()
        first = await a.wait_for((await a.start(on_owner, 'list the files', scope='c1')).id, timeout=10)
        assert first.status is TaskStatus.COMPLETED
        transcript = a.transcript(first.id)  # it came with the worker's report
        assert transcript is not None and prompts_of(transcript) == ['list the files']
        await finished_in(b, first.id)
        # b's follow-up runs on a worker too, starting from the conversation the first worker kept in Redis.
        second = await b.start(on_owner, 'now count them', scope='c1', continue_task_id=first.id)
        second = await b.wait_for(second.id, timeout=10)
        assert second.status is TaskStatus.COMPLETED, second
        assert second.result == 'list the files | now count them'
        assert second.continued_from == first.id
        # ... and a follow-up of that one, back in the first process.
        await finished_in(a, second.id)
        third = await a.start(on_owner, 'and sort them', scope='c1', continue_task_id=second.id)
        third = await a.wait_for(third.id, timeout=10)
        assert third.result == 'list the files | now count them | and sort them'
        worker.stop()


async def test_a_follow_up_job_whose_conversation_does_not_load_fails_rather_than_forgets() -> None:
    job = WorkerJob(task_id='t1', owner='manager:m', subagent='remote', description='x', history='[{"kind": "?"}]')
    update = history_of(job, 'worker:w')
    assert isinstance(update, WorkerUpdate)
    assert update.status is TaskStatus.FAILED and update.recipient == 'manager:m' and update.task_id == 't1'
    assert update.error is not None and 'does not load' in update.error
    fine = WorkerJob(task_id='t2', owner='manager:m', subagent='remote', description='x')
    assert history_of(fine, 'worker:w') is None


def worker_for(redis_url: str, namespace: str, queue: str) -> Worker:
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(remembering))
    return fast_worker([on_worker], redis_url, namespace, queue)


async def test_the_owners_cap_applies_to_a_worker_task_s_transcript(redis_url: str, namespace: str) -> None:
    on_owner = SubAgentConfig(name='remote', description='Works on a worker.', worker_queue='capped')
    worker = worker_for(redis_url, namespace, 'capped')
    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(redis_url, namespace=namespace, max_transcript_bytes=2000, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        tg.start_soon(worker.run)
        await worker.wait_ready()
        long = await a.wait_for((await a.start(on_owner, 'x' * 3000, scope='c1')).id, timeout=10)
        short = await a.wait_for((await a.start(on_owner, 'y', scope='c1')).id, timeout=10)
        assert long.status is short.status is TaskStatus.COMPLETED
        await finished_in(b, long.id)
        await finished_in(b, short.id)
        with pytest.raises(TaskNotContinuableError, match='larger than the store keeps'):
            await b.start(on_owner, 'more', scope='c1', continue_task_id=long.id)
        follow_up = await b.wait_for((await b.start(on_owner, 'more', scope='c1', continue_task_id=short.id)).id)
        assert follow_up.result == 'y | more'
        worker.stop()


async def test_a_worker_task_s_conversation_withheld_by_the_owner_s_hook_never_reaches_redis(
    redis_url: str, namespace: str
) -> None:
    on_owner = SubAgentConfig(name='remote', description='Works on a worker.', worker_queue='redact')
    worker = worker_for(redis_url, namespace, 'redact')

    def redact(end: TaskEnd) -> TaskEnd:
        return dataclasses.replace(end, output=str(end.output).replace('secret', '[redacted]'))

    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(redis_url, namespace=namespace, after_task=redact, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        tg.start_soon(worker.run)
        await worker.wait_ready()
        first = await a.wait_for((await a.start(on_owner, 'the secret is 42', scope='c1')).id, timeout=10)
        assert first.result == 'the [redacted] is 42'
        await finished_in(b, first.id)
        await a.store.flush()  # type: ignore[attr-defined]
        client = aioredis.from_url(redis_url)  # pyright: ignore[reportUnknownMemberType]
        try:
            assert not await client.hexists(f'{namespace}:task:{first.id}', 'transcript')  # pyright: ignore[reportUnknownMemberType]
        finally:
            await client.aclose()
        for manager in (a, b):
            with pytest.raises(TaskNotContinuableError, match='not kept'):
                await manager.start(on_owner, 'what was it?', scope='c1', continue_task_id=first.id)
        worker.stop()


async def test_a_follow_up_when_redis_cannot_be_read_is_a_refusal_the_model_reads(
    two: tuple[TaskManager, TaskManager],
) -> None:
    a, b = two
    first = await a.wait_for((await a.start(CONFIG, 'one', scope='c1')).id)
    await finished_in(b, first.id)

    async def unreachable(task_id: str) -> list[ModelMessage] | None:
        raise ConnectionError('Connection refused')

    b.store.load_transcript = unreachable  # type: ignore[attr-defined]
    toolset = create_subagent_toolset([CONFIG], manager=b)
    script = Script([[call('task', description='more', subagent_type='worker', continue_task_id=first.id)]])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    (reply,) = script.replies[1]
    assert reply == (
        f"Task not started: task '{first.id}' cannot be continued: its conversation could not be read "
        '(ConnectionError: Connection refused).'
    )
    assert [r.id for r in b.list('c1')] == [first.id]
