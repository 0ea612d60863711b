"""Redis faults with a real `redis-server` of each test's own, killed and started again: outages, restarts with and
without the data, and what a process must keep doing meanwhile."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import (
    SubAgentConfig,
    SubagentsError,
    TaskCompleted,
    TaskEvent,
    TaskManager,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents.redis import RedisMessageBus, RedisTaskStore, Worker, redis_task_manager

from . import redis_server
from .conftest import Gate, Script, call, child_text, sync_result
from .redis_helpers import until

pytestmark = pytest.mark.anyio

redis_proc = redis_server.redis_proc

FAST_BUS: dict[str, Any] = {'refresh_interval': 0.05, 'lease_seconds': 2.0, 'read_block': 0.2}
FAST: dict[str, Any] = {'lease_seconds': 1.0, 'heartbeat_interval': 0.1}


@pytest.fixture
def namespace() -> str:
    return f'fault-{uuid.uuid4().hex[:12]}'


async def blocked(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep_forever()
    raise AssertionError('unreachable')


async def stored(url: str, namespace: str) -> dict[str, Any]:
    """What Redis holds for the namespace, read by a fresh store."""
    async with RedisTaskStore(url, namespace=namespace) as store:
        return {record.id: record for record in store.list()}


async def test_a_task_that_finishes_while_redis_is_down_reaches_its_parent_at_once_and_redis_later(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    """Redis gone and the bus's outbox full: the sync `task` call still returns the result, events and waiters
    still hear of every change, and once Redis is back it holds every record in its final state."""
    helper = SubAgentConfig(name='helper', instructions='Help.', model=child_text('the answer is 42'))
    script = Script(
        [
            [call('task', description='look it up', subagent_type='helper', mode='sync')],
            [call('task', description='look it up again', subagent_type='helper', mode='sync')],
        ]
    )
    heard: list[TaskEvent] = []
    async with redis_task_manager(
        redis_proc.url, namespace=namespace, bus_options={**FAST_BUS, 'max_outbox': 1}, **FAST
    ) as manager:
        toolset = create_subagent_toolset([helper], manager=manager, general_purpose=False)
        events = manager.events()

        async def listen() -> None:
            async for event in events:
                heard.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            redis_proc.kill()
            with anyio.fail_after(10):
                await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='conv')
                more = [await manager.start(helper, f'more {i}', scope='conv') for i in range(3)]
                for record in more:
                    assert (await manager.wait_for(record.id, timeout=5)).status is TaskStatus.COMPLETED
                while sum(isinstance(e, TaskCompleted) for e in heard) < 5:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        await events.aclose()
        assert [sync_result(r) for (r,) in script.replies[1:3]] == ['the answer is 42'] * 2
        records = manager.list('conv')
        assert len(records) == 5 and all(r.status is TaskStatus.COMPLETED for r in records)
        assert sorted(e.task_id for e in heard if isinstance(e, TaskCompleted)) == sorted(r.id for r in records)
        assert manager.bus.stats().unpublished > 0  # type: ignore[attr-defined]

        redis_proc.restart(keep_data=False)
        with anyio.fail_after(10):
            await manager.store.flush()  # type: ignore[attr-defined]
        in_redis = await stored(redis_proc.url, namespace)
        assert {i: r.status for i, r in in_redis.items()} == {r.id: TaskStatus.COMPLETED for r in records}
        assert all(in_redis[r.id].result == 'the answer is 42' for r in records)


async def test_a_start_the_store_refuses_leaves_nothing_behind_and_counts_toward_no_limit(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    config = SubAgentConfig(name='worker', instructions='Work.', model=FunctionModel(blocked))
    async with (
        RedisTaskStore(redis_proc.url, namespace=namespace, max_pending_writes=1, **FAST) as store,
        TaskManager(store=store, max_tasks_per_scope=2) as manager,
    ):
        redis_proc.kill()
        first = await manager.start(config, 'one', scope='conv')
        for _ in range(3):
            with pytest.raises(SubagentsError, match='waiting to be written'):
                await manager.start(config, 'refused', scope='conv')
        assert [r.id for r in manager.list('conv')] == [first.id]

        redis_proc.restart(keep_data=True)
        with anyio.fail_after(10):
            await store.flush()
        second = await manager.start(config, 'two', scope='conv')  # the limit is 2: the refused ones never counted
        assert {r.id for r in manager.list('conv')} == {first.id, second.id}
        manager.hard_cancel(first.id)
        manager.hard_cancel(second.id)


async def test_a_listener_that_refuses_an_event_costs_the_task_nothing(namespace: str) -> None:
    """A full `'error'` subscription makes the bus raise on publish: the task still settles and wakes its waiter."""
    async with TaskManager() as manager:
        manager.bus.subscribe('subagents.events', max_buffer=1, overflow='error')
        config = SubAgentConfig(name='helper', instructions='Help.', model=child_text('done'))
        records = [await manager.start(config, f'job {i}', scope='conv') for i in range(3)]
        with anyio.fail_after(5):
            for record in records:
                finished = await manager.wait_for(record.id, timeout=5)
                assert finished.status is TaskStatus.COMPLETED
        assert manager._settler.live_per_scope == {}  # pyright: ignore[reportPrivateUsage]


# ---------------------------------------------------------------- leases across a restart of Redis


async def test_a_peers_sweep_fails_no_live_task_when_redis_restarts_without_its_data(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    """The owner renews its lease every 0.5 s, its peer sweeps every 0.05 s: right after an empty restart the peer
    sees no lease for the owner, and must still wait a full lease of its own looking before it judges."""
    gate = Gate(answer='finished after the restart')
    config = SubAgentConfig(name='worker', instructions='Work.', model=gate.model())
    async with (
        redis_task_manager(
            redis_proc.url, namespace=namespace, lease_seconds=3.0, heartbeat_interval=0.5, bus_options=FAST_BUS
        ) as owner,
        redis_task_manager(
            redis_proc.url, namespace=namespace, lease_seconds=3.0, heartbeat_interval=0.05, bus_options=FAST_BUS
        ) as peer,
    ):
        records = [await owner.start(config, f'job {i}', scope='conv') for i in range(3)]
        await gate.entered.wait()
        await until(lambda: all((r := peer.get(x.id)) is not None and r.status is TaskStatus.RUNNING for x in records))
        for keep_data in (False, True):
            redis_proc.restart(keep_data=keep_data)
            await anyio.sleep(4.0)  # more than a lease of the peer's own looking
            assert [owner.get(r.id).status for r in records] == [TaskStatus.RUNNING] * 3  # type: ignore[union-attr]
            assert [peer.get(r.id).status for r in records] == [TaskStatus.RUNNING] * 3  # type: ignore[union-attr]
        gate.release.set()
        for record in records:
            final = await owner.wait_for(record.id, timeout=10)
            assert final.status is TaskStatus.COMPLETED and final.result == 'finished after the restart'
        await until(lambda: all(peer.get(r.id).status is TaskStatus.COMPLETED for r in records))  # type: ignore[union-attr]


async def test_owners_take_their_leases_again_at_once_after_an_outage_longer_than_the_lease(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    """Redis away for several leases: every lease has expired when it comes back with its data. The owner's
    renewal, retried all along, must not be waiting out a long backoff then (up to 2 s, over twice the lease): its
    peer sweeps every 0.05 s and judges after one lease of seeing none."""
    gate = Gate(answer='finished after the outages')
    config = SubAgentConfig(name='worker', instructions='Work.', model=gate.model())
    lease: dict[str, Any] = {'lease_seconds': 0.8, 'heartbeat_interval': 0.05}
    async with (
        redis_task_manager(redis_proc.url, namespace=namespace, bus_options=FAST_BUS, **lease) as owner,
        redis_task_manager(redis_proc.url, namespace=namespace, bus_options=FAST_BUS, **lease) as peer,
    ):
        records = [await owner.start(config, f'job {i}', scope='conv') for i in range(3)]
        await gate.entered.wait()
        await until(lambda: all((r := peer.get(x.id)) is not None and r.status is TaskStatus.RUNNING for x in records))
        for _ in range(3):
            redis_proc.kill()
            await anyio.sleep(6.0)  # long enough for the renewal's backoff to grow
            redis_proc.start()
            await anyio.sleep(2.0)  # more than a lease of the peer's own looking
            assert [peer.get(r.id).status for r in records] == [TaskStatus.RUNNING] * 3  # type: ignore[union-attr]
            assert [owner.get(r.id).status for r in records] == [TaskStatus.RUNNING] * 3  # type: ignore[union-attr]
        gate.release.set()
        for record in records:
            final = await owner.wait_for(record.id, timeout=10)
            assert final.status is TaskStatus.COMPLETED and final.result == 'finished after the outages'


async def test_a_dead_owner_is_still_found_once_its_lease_has_been_missing_a_full_lease(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    config = SubAgentConfig(name='worker', instructions='Work.', model=FunctionModel(blocked))
    async with redis_task_manager(redis_proc.url, namespace=namespace, **FAST, bus_options=FAST_BUS) as peer:
        owner_cm = redis_task_manager(redis_proc.url, namespace=namespace, **FAST, bus_options=FAST_BUS)
        owner = await owner_cm.__aenter__()
        record = await owner.start(config, 'work', scope='conv')
        await owner.store.flush()  # type: ignore[attr-defined]
        await until(lambda: peer.get(record.id) is not None)
        # The owner's process "dies": its lease is no longer renewed (and is deleted), its task stays live.
        leases = owner.store._leases  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        leases.here.clear()  # pyright: ignore[reportUnknownMemberType]
        async with RedisTaskStore(redis_proc.url, namespace=namespace) as raw:
            await raw._client.delete(f'{namespace}:owner:{owner.participant}')  # type: ignore[union-attr]  # pyright: ignore[reportPrivateUsage, reportOptionalMemberAccess, reportUnknownMemberType]
        await until(lambda: peer.get(record.id).status is TaskStatus.FAILED, timeout=10)  # type: ignore[union-attr]
        assert 'lease' in (peer.get(record.id).error or '')  # type: ignore[union-attr]
        owner.hard_cancel(record.id)
        await owner_cm.__aexit__(None, None, None)


async def test_a_job_a_worker_starts_while_it_looks_at_other_owners_is_not_stopped(
    redis_proc: redis_server.RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker checks the owners of its running jobs every heartbeat. A job of another owner that starts while
    that look is on its way was not part of it: its owner must not count as dead for missing from the answer."""
    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    gate = Gate(answer='done')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=gate.model())
    worker = Worker([on_worker], url=redis_proc.url, namespace=namespace, queue='q1', bus_options=FAST_BUS, **FAST)
    first_owner: list[str] = []
    real = RedisTaskStore.owners_alive

    async def slow_look(self: RedisTaskStore, owners: set[str]) -> set[str]:
        # The look at the first owner alone lasts until the second owner's job runs on the worker.
        if owners == set(first_owner) and worker.running < 2:
            await until(lambda: worker.running >= 2)
        return await real(self, owners)

    monkeypatch.setattr(RedisTaskStore, 'owners_alive', slow_look)
    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(redis_proc.url, namespace=namespace, bus_options=FAST_BUS, **FAST) as one,
        redis_task_manager(redis_proc.url, namespace=namespace, bus_options=FAST_BUS, **FAST) as two,
    ):
        tg.start_soon(worker.run)
        await worker.wait_ready()
        first_owner.append(one.participant)
        first = await one.start(on_parent, 'first', scope='conv')
        await until(lambda: worker.running == 1)
        await anyio.sleep(3 * FAST['heartbeat_interval'])  # the worker is looking at `one` alone now
        second = await two.start(on_parent, 'second', scope='conv')
        await until(lambda: worker.running == 2)
        await anyio.sleep(5 * FAST['heartbeat_interval'])  # several looks at both owners, none judged dead
        assert [one.get(first.id).status, two.get(second.id).status] == [TaskStatus.RUNNING] * 2  # type: ignore[union-attr]
        gate.release.set()
        assert (await one.wait_for(first.id, timeout=10)).status is TaskStatus.COMPLETED
        assert (await two.wait_for(second.id, timeout=10)).status is TaskStatus.COMPLETED
        worker.stop()


async def test_a_job_queued_again_after_redis_lost_its_data_does_not_run_twice_on_its_worker(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    """Redis restarted empty: the owner queues the jobs of its live tasks again. The worker already running one
    takes it again, and the owner would accept the same claim again: the worker must not start a second run."""
    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    gate = Gate(answer='done once')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=gate.model())
    worker = Worker([on_worker], url=redis_proc.url, namespace=namespace, queue='q1', bus_options=FAST_BUS, **FAST)
    ended: list[str] = []

    async def run_worker() -> None:
        await worker.run()
        ended.append('returned')

    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(redis_proc.url, namespace=namespace, bus_options=FAST_BUS, **FAST) as owner,
    ):
        tg.start_soon(run_worker)
        await worker.wait_ready()
        record = await owner.start(on_parent, 'work', scope='conv')
        await gate.entered.wait()
        redis_proc.restart(keep_data=False)
        await anyio.sleep(2.0)  # the owner finds the data gone and queues the job again; the worker takes it
        async with RedisTaskStore(redis_proc.url, namespace=namespace) as raw:
            queued = await raw._client.xlen(f'{namespace}:queue:q1')  # type: ignore[union-attr]  # pyright: ignore[reportPrivateUsage, reportOptionalMemberAccess, reportUnknownMemberType]
        assert queued == 0  # taken and acknowledged
        assert gate.calls == 1 and worker.running == 1
        gate.release.set()
        final = await owner.wait_for(record.id, timeout=10)
        assert final.status is TaskStatus.COMPLETED and final.result == 'done once'
        await until(lambda: worker.running == 0)
        await anyio.sleep(0.3)
        assert not ended and worker.jobs_done == 1
        worker.stop()
    assert ended == ['returned']


# ---------------------------------------------------------------- reconnecting


async def quick(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = next(
        p.content for m in messages for p in getattr(m, 'parts', []) if getattr(p, 'part_kind', '') == 'user-prompt'
    )
    return ModelResponse(parts=[TextPart(f'done: {prompt}')])


async def test_a_worker_keeps_serving_across_redis_restarts_with_and_without_data(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(quick))
    worker = Worker(
        [on_worker],
        url=redis_proc.url,
        namespace=namespace,
        queue='q1',
        lease_seconds=3.0,
        heartbeat_interval=0.1,
        bus_options=FAST_BUS,
    )
    ended: list[str] = []

    async def run_worker() -> None:
        await worker.run()
        ended.append('returned')

    async with (
        anyio.create_task_group() as tg,
        redis_task_manager(
            redis_proc.url, namespace=namespace, lease_seconds=3.0, heartbeat_interval=0.1, bus_options=FAST_BUS
        ) as parent,
    ):
        tg.start_soon(run_worker)
        await worker.wait_ready()
        for round_no, keep_data in enumerate((None, False, True, False)):
            if keep_data is not None:
                redis_proc.restart(keep_data=keep_data)
                await anyio.sleep(0.5)
            assert not ended
            started = await parent.start(on_parent, f'job {round_no}', scope='conv')
            final = await parent.wait_for(started.id, timeout=20)
            assert final.status is TaskStatus.COMPLETED, final
            assert final.result == f'done: job {round_no}'
        assert worker.jobs_done == 4
        worker.stop()
    assert ended == ['returned']


async def test_a_ready_client_and_a_connection_pool_are_used_as_given_and_left_open(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    client = aioredis.Redis.from_url(redis_proc.url)
    pool = aioredis.ConnectionPool.from_url(redis_proc.url)
    config = SubAgentConfig(name='helper', instructions='Help.', model=child_text('from a given connection'))
    try:
        async with (
            RedisMessageBus(pool, namespace=namespace, **FAST_BUS) as bus,
            RedisTaskStore(client, namespace=namespace, **FAST) as store,
            TaskManager(bus=bus, store=store) as manager,
        ):
            record = await manager.start(config, 'go', scope='conv')
            assert (await manager.wait_for(record.id, timeout=5)).result == 'from a given connection'
            await store.flush()
        assert await client.ping()  # pyright: ignore[reportUnknownMemberType]
        assert await aioredis.Redis(connection_pool=pool).ping()  # pyright: ignore[reportUnknownMemberType]
        assert record.id in await stored(redis_proc.url, namespace)
    finally:
        await client.aclose()
        await pool.aclose()


# ---------------------------------------------------------------- wall-clock times


async def test_records_and_events_carry_utc_wall_clock_times_through_redis_and_the_web_views(
    redis_proc: redis_server.RedisServer, namespace: str
) -> None:
    from pydantic_ai_subagents import TaskEventMessage
    from pydantic_ai_subagents.redis._codec import decode, encode
    from pydantic_ai_subagents.web import TaskView, event_to_json

    config = SubAgentConfig(name='helper', instructions='Help.', model=child_text('done'))
    before = datetime.now(UTC)
    async with redis_task_manager(redis_proc.url, namespace=namespace, **FAST, bus_options=FAST_BUS) as manager:
        heard: list[TaskEvent] = []
        events = manager.events()
        listening = anyio.Event()

        async def listen() -> None:
            listening.set()
            async for event in events:
                heard.append(event)
                if isinstance(event, TaskCompleted):
                    break

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await listening.wait()
            await anyio.sleep(0.05)
            record = await manager.start(config, 'go', scope='conv')
            final = await manager.wait_for(record.id, timeout=5)
        await events.aclose()
        await manager.store.flush()  # type: ignore[attr-defined]
    after = datetime.now(UTC)
    stamps = [t.timestamp for t in final.history]
    assert all(s.tzinfo is UTC and before <= s <= after for s in stamps) and stamps == sorted(stamps)
    assert [e.timestamp for e in heard if e.task_id == record.id][-1] == stamps[-1]
    # Through Redis: the stored record and an event's envelope keep the same moments.
    again = (await stored(redis_proc.url, namespace))[record.id]
    assert [t.timestamp for t in again.history] == stamps
    message = TaskEventMessage(sender='x', topic='subagents.events', event=heard[-1], record=final)
    decoded = decode(encode(message, origin='o')).message
    assert isinstance(decoded, TaskEventMessage) and decoded.event.timestamp == stamps[-1]
    # The web views read them as they are, whoever's clock made them.
    view = TaskView.from_record(again)
    assert [h.timestamp for h in view.history] == stamps
    assert event_to_json(heard[-1])['timestamp'] == stamps[-1].isoformat()
