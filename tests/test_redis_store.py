"""The Redis task store against a real Redis server: what reaches Redis, what comes back after a restart, retention,
the write guard, leases and orphans, and the worker queues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from pydantic_ai_subagents import InMemoryTaskStore, SharedTaskStore, SubagentsError, TaskRecord, TaskStatus
from pydantic_ai_subagents.redis import RedisTaskStore

from . import redis_helpers, redis_server

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url
namespace = redis_helpers.namespace


def new(task_id: str, *, scope: str = 'conv', owner: str | None = 'manager:a') -> TaskRecord:
    return TaskRecord(
        id=task_id, subagent='worker', description=f'job {task_id}', mode='async', scope=scope, owner=owner
    )


@pytest.fixture
async def store(redis_url: str, namespace: str) -> AsyncIterator[RedisTaskStore]:
    async with RedisTaskStore(redis_url, namespace=namespace, lease_seconds=0.5, heartbeat_interval=0.05) as s:
        yield s


async def test_records_survive_a_restart_with_every_field(store: RedisTaskStore, redis_url: str) -> None:
    store.create(new('t1'))
    store.transition('t1', TaskStatus.RUNNING)
    store.transition('t1', TaskStatus.WAITING_FOR_ANSWER, question='Which year?')
    store.request_cancel('t1', 'soft', 'model')
    store.transition('t1', TaskStatus.CANCELLED, partial_result='half done', note='wrapped up')
    store.create(new('t2'))
    store.transition('t2', TaskStatus.RUNNING)
    store.transition('t2', TaskStatus.COMPLETED, result={'answer': 42})
    store.create(new('t3', scope='other'))
    await store.flush()

    async with RedisTaskStore(redis_url, namespace=store.namespace) as reloaded:
        assert [r.id for r in reloaded.list()] == ['t1', 't2', 't3']
        for task_id in ('t1', 't2', 't3'):
            assert reloaded.get(task_id) == store.get(task_id)
        t1 = reloaded.get('t1')
        assert t1 is not None and t1.partial_result == 'half done' and t1.cancel is not None
        assert [t.status for t in t1.history] == [
            TaskStatus.PENDING,
            TaskStatus.RUNNING,
            TaskStatus.WAITING_FOR_ANSWER,
            TaskStatus.CANCELLED,
        ]
        assert [r.id for r in reloaded.list('other', active_only=True)] == ['t3']


async def test_retention_by_count_is_applied_in_redis(redis_url: str, namespace: str) -> None:
    async with RedisTaskStore(redis_url, namespace=namespace, max_retained=2) as store:
        for i in range(5):
            store.create(new(f'f{i}'))
            store.transition(f'f{i}', TaskStatus.RUNNING)
            store.transition(f'f{i}', TaskStatus.COMPLETED, result=i)
            await store.flush()
        store.create(new('live'))
        await store.flush()
    async with RedisTaskStore(redis_url, namespace=namespace, max_retained=2) as reloaded:
        assert [r.id for r in reloaded.list()] == ['f3', 'f4', 'live']
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert await client.exists(f'{namespace}:task:f0') == 0
        assert await client.zcard(f'{namespace}:finished') == 2
    finally:
        await client.aclose()


async def test_finished_records_expire_after_the_retention_period(redis_url: str, namespace: str) -> None:
    async with RedisTaskStore(redis_url, namespace=namespace, retention_seconds=0.3) as store:
        store.create(new('old'))
        store.transition('old', TaskStatus.RUNNING)
        store.transition('old', TaskStatus.FAILED, error='boom')
        store.create(new('live'))
        await store.flush()
    await anyio.sleep(0.5)
    async with RedisTaskStore(redis_url, namespace=namespace, retention_seconds=0.3) as reloaded:
        assert [r.id for r in reloaded.list()] == ['live']


async def test_redis_keeps_the_newest_write_and_never_changes_a_finished_task(redis_url: str, namespace: str) -> None:
    async with (
        RedisTaskStore(redis_url, namespace=namespace) as first,
        RedisTaskStore(redis_url, namespace=namespace) as stale,
    ):
        first.create(new('t'))
        await first.flush()
        stale.apply(first.get('t'))  # type: ignore[arg-type]
        first.transition('t', TaskStatus.RUNNING)
        first.transition('t', TaskStatus.FAILED, error='the process stopped')
        await first.flush()
        # A process with an older copy writes its own change: Redis refuses it (older revision, finished task).
        stale.transition('t', TaskStatus.RUNNING)
        stale.transition('t', TaskStatus.COMPLETED, result='late')
        await stale.flush()
    async with RedisTaskStore(redis_url, namespace=namespace) as reloaded:
        final = reloaded.get('t')
        assert final is not None and final.status is TaskStatus.FAILED and final.error == 'the process stopped'


def test_apply_takes_only_newer_snapshots_and_never_reopens_a_finished_task() -> None:
    store = InMemoryTaskStore(max_retained=0)
    record = new('t')
    change = store.apply(record)
    assert change is not None and change.old is None
    running = TaskRecord(**{**_fields(record), 'status': TaskStatus.RUNNING, 'revision': 2})
    change = store.apply(running)
    assert change is not None and (change.old, change.new) == (TaskStatus.PENDING, TaskStatus.RUNNING)
    assert store.apply(record) is None  # older
    assert store.get('t') == running
    usage_only = TaskRecord(**{**_fields(running), 'revision': 3, 'note': 'n'})
    assert store.apply(usage_only) is None  # newer, same status: taken in, no status change
    assert store.get('t') == usage_only
    done = TaskRecord(**{**_fields(running), 'status': TaskStatus.COMPLETED, 'revision': 4})
    assert store.apply(done) is not None
    reopened = TaskRecord(**{**_fields(running), 'status': TaskStatus.RUNNING, 'revision': 9})
    assert store.apply(reopened) is None
    assert store.prune() == ['t']
    assert store.apply(done) is None  # pruned here: not brought back
    assert store.get('t') is None


async def test_a_redis_store_is_a_shared_store_with_its_heartbeat_and_pruned_ids(
    redis_url: str, namespace: str
) -> None:
    async with RedisTaskStore(
        redis_url, namespace=namespace, max_retained=0, lease_seconds=2.0, heartbeat_interval=0.25
    ) as redis_store:
        assert isinstance(redis_store, SharedTaskStore)
        shared: SharedTaskStore = redis_store
        assert shared.heartbeat_interval == 0.25
        shared.create(new('t', scope='conv-7'))
        shared.transition('t', TaskStatus.RUNNING)
        shared.transition('t', TaskStatus.COMPLETED, result='done')
        assert shared.was_pruned('t') is None
        assert shared.prune() == ['t']
        assert shared.was_pruned('t') == 'conv-7'
        assert shared.was_pruned('never') is None


def _fields(record: TaskRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


async def test_orphans_of_a_dead_owner_are_handed_to_one_process(redis_url: str, namespace: str) -> None:
    options = {'lease_seconds': 0.3, 'heartbeat_interval': 0.05}
    async with (
        RedisTaskStore(redis_url, namespace=namespace, **options) as dying,
        RedisTaskStore(redis_url, namespace=namespace, **options) as one,
        RedisTaskStore(redis_url, namespace=namespace, **options) as two,
    ):
        await dying.register_owner('manager:dying')
        await one.register_owner('manager:one')
        dying.create(new('lost', owner='manager:dying'))
        dying.create(new('ours', owner='manager:one'))
        await dying.flush()
        for other in (one, two):
            other.apply(dying.get('lost'))  # type: ignore[arg-type]
            other.apply(dying.get('ours'))  # type: ignore[arg-type]
        assert await one.orphans() == [] and await two.orphans() == []  # the owner is alive
        # A lease missing at one look proves nothing (Redis may have just restarted without its data): an owner
        # is dead only once its lease has been missing for a full lease of this process's looking.
        asked = {'manager:dying', 'manager:one', 'manager:never'}
        assert await two.owners_alive(asked) == asked
        with anyio.fail_after(5):
            while await two.owners_alive(asked) != {'manager:dying', 'manager:one'}:
                await anyio.sleep(0.05)
        await dying.aclose()  # gives up its lease, as a clean shutdown does
        claimed: list[list[Any]] = [[], []]
        with anyio.fail_after(5):
            while not any(claimed):
                claimed = [claimed[0] + await one.orphans(), claimed[1] + await two.orphans()]
                await anyio.sleep(0.05)
            await anyio.sleep(0.5)  # more than a lease: the other process claims nothing more
            claimed = [claimed[0] + await one.orphans(), claimed[1] + await two.orphans()]
        assert sorted(len(c) for c in claimed) == [0, 1]
        assert [r.id for c in claimed for r in c] == ['lost']


async def test_worker_queue_hands_each_job_to_one_consumer(store: RedisTaskStore) -> None:
    assert await store.take('q', 'w1', block=0.01) == []
    await store.submit('q', {'task_id': 'a'})
    await store.submit('q', {'task_id': 'b'})
    await store.flush()  # jobs are written by the pump, after the record changes made before them
    first = await store.take('q', 'w1', block=0.01)
    second = await store.take('q', 'w2', block=0.01)
    assert [job['task_id'] for _, job in first + second] == ['a', 'b']
    await store.ack('q', first[0][0])
    # w2 died before acknowledging: after min_idle its job goes to another consumer.
    await anyio.sleep(0.05)
    reclaimed = await store.take('q', 'w3', min_idle=0.01)
    assert [job['task_id'] for _, job in reclaimed] == ['b']
    await store.ack('q', reclaimed[0][0])
    assert await store.take('q', 'w3', min_idle=0.0) == []


async def test_a_malformed_job_is_dropped(store: RedisTaskStore, redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await store.submit('q', {'task_id': 'good'})
        await store.flush()
        await client.xadd(f'{store.namespace}:queue:q', {'job': b'not json'})
        jobs = await store.take('q', 'w', count=10, block=0.01)
    finally:
        await client.aclose()
    assert [job['task_id'] for _, job in jobs] == ['good']


async def test_a_closed_store_refuses_writes_and_a_full_backlog_is_an_error(redis_url: str, namespace: str) -> None:
    async with RedisTaskStore(redis_url, namespace=namespace, max_pending_writes=2) as store:
        store.create(new('a'))
        store.create(new('b'))
        with pytest.raises(SubagentsError, match='waiting to be written'):
            store.create(new('c'))
        store.update('a', note='same task: no new backlog entry')
    with pytest.raises(SubagentsError, match='closed'):
        store.create(new('d'))
    with pytest.raises(SubagentsError, match='not open'):
        await store.orphans()


def test_envelopes_that_do_not_decode_say_why() -> None:
    import json

    from pydantic_ai_subagents import Progress, TaskEventMessage
    from pydantic_ai_subagents.redis import MessageCodecError, register_message_type
    from pydantic_ai_subagents.redis._codec import decode, encode

    good = json.loads(encode(Progress(sender='a', recipient='b', task_id='t', text='x'), origin='o'))
    cases: list[tuple[str | bytes, str]] = [
        ('{', 'not JSON'),
        ('[1]', 'not a JSON object'),
        (json.dumps({**good, 'v': 99}), 'unsupported envelope version'),
        (json.dumps({**good, 'type': 'Nope'}), 'unknown message type'),
        (json.dumps({**good, 'origin': 3}), 'malformed origin'),
        (json.dumps({**good, 'data': {'sender': 'a'}}), 'fields do not fit Progress'),
        (json.dumps({**good, 'type': 'TaskEventMessage', 'data': [1]}), 'must be a JSON object'),
        (json.dumps({**good, 'type': 'TaskEventMessage', 'data': {'event_type': 'Nope'}}), 'unknown task event'),
    ]
    for raw, message in cases:
        with pytest.raises(MessageCodecError, match=message):
            decode(raw)
    with pytest.raises(TypeError, match='not a Message subclass'):
        register_message_type(int)  # type: ignore[type-var]
    with pytest.raises(ValueError, match='already registered'):
        register_message_type(TaskEventMessage, name='Progress')


async def test_store_settings_are_checked_and_a_store_opens_once(redis_url: str, namespace: str) -> None:
    with pytest.raises(ValueError, match='lease_seconds'):
        RedisTaskStore(redis_url, lease_seconds=1.0, heartbeat_interval=1.0)
    with pytest.raises(ValueError, match='max_pending_writes'):
        RedisTaskStore(redis_url, max_pending_writes=0)
    store = RedisTaskStore(redis_url, namespace=namespace)
    async with store:
        with pytest.raises(SubagentsError, match='entered once'):
            await store.__aenter__()
    await store.aclose()  # idempotent


async def test_a_store_that_cannot_connect_raises_and_leaks_nothing() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket closes
    store = RedisTaskStore(f'redis://127.0.0.1:{port}/0')
    with pytest.raises(Exception, match='onnect'):
        async with store:
            pass
