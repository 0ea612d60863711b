"""A store, a bus and a worker built from a client that a real Redis Sentinel (`redis-server --sentinel`) hands out:
they work, and they survive the master being restarted, with and without its data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskRecord, TaskStatus
from pydantic_ai_subagents.redis import RedisMessageBus, RedisTaskStore, Worker

from . import redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

redis_proc = redis_server.redis_proc

FAST_BUS: dict[str, Any] = {'refresh_interval': 0.05, 'lease_seconds': 3.0, 'read_block': 0.2}
LEASE: dict[str, Any] = {'lease_seconds': 3.0, 'heartbeat_interval': 0.1}


@pytest.fixture
def sentinel_proc(redis_proc: redis_server.RedisServer) -> Iterator[redis_server.SentinelServer]:
    """A Sentinel of this test's own, monitoring the test's own master."""
    sentinel = redis_server.SentinelServer(master_port=redis_proc.port)
    sentinel.start()
    try:
        yield sentinel
    finally:
        sentinel.close()


async def sentinel_knows_master(sentinel: Sentinel, service: str) -> bool:
    try:
        await sentinel.discover_master(service)
    except MasterNotFoundError:
        return False
    return True


async def echo(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = next(
        p.content for m in messages for p in getattr(m, 'parts', []) if getattr(p, 'part_kind', '') == 'user-prompt'
    )
    return ModelResponse(parts=[TextPart(f'done: {prompt}')])


async def test_a_store_bus_and_worker_on_a_sentinel_client_work_and_survive_master_restarts(
    redis_proc: redis_server.RedisServer, sentinel_proc: redis_server.SentinelServer
) -> None:
    namespace = f'sentinel-{uuid.uuid4().hex[:12]}'
    sentinel = Sentinel([('127.0.0.1', sentinel_proc.port)], socket_timeout=2.0)
    # The only address these clients know is the Sentinel's: the master's comes from it, on every (re)connect.
    assert await sentinel.discover_master(sentinel_proc.service) == ('127.0.0.1', redis_proc.port)
    owner_client: aioredis.Redis = sentinel.master_for(sentinel_proc.service)  # pyright: ignore[reportUnknownMemberType]
    worker_client: aioredis.Redis = sentinel.master_for(sentinel_proc.service)  # pyright: ignore[reportUnknownMemberType]
    reader_client: aioredis.Redis = sentinel.master_for(sentinel_proc.service)  # pyright: ignore[reportUnknownMemberType]
    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(echo))
    worker = Worker([on_worker], url=worker_client, namespace=namespace, queue='q1', bus_options=FAST_BUS, **LEASE)
    ended: list[str] = []
    finals: list[TaskRecord] = []

    async def run_worker() -> None:
        await worker.run()
        ended.append('returned')

    try:
        async with (
            anyio.create_task_group() as tg,
            RedisMessageBus(owner_client, namespace=namespace, **FAST_BUS) as bus,
            RedisTaskStore(owner_client, namespace=namespace, **LEASE) as store,
            TaskManager(bus=bus, store=store) as parent,
        ):
            tg.start_soon(run_worker)
            with anyio.fail_after(20):
                await worker.wait_ready()
            for round_no, keep_data in enumerate((None, True, False)):
                if keep_data is not None:
                    # Down long enough for the Sentinel to see it: it names no master until the master is back.
                    redis_proc.kill()
                    with anyio.fail_after(10):
                        while await sentinel_knows_master(sentinel, sentinel_proc.service):
                            await anyio.sleep(0.1)
                    if not keep_data:
                        redis_proc.wipe()
                    redis_proc.start()
                started = await parent.start(on_parent, f'job {round_no}', scope='conv')
                finals.append(await parent.wait_for(started.id, timeout=30))
                assert not ended
            assert [(f.status, f.result) for f in finals] == [
                (TaskStatus.COMPLETED, f'done: job {n}') for n in range(3)
            ]
            with anyio.fail_after(20):
                await store.flush()
            worker.stop()
        assert ended == ['returned']
        # The records reached the master through the Sentinel's client, after its last restart too.
        async with RedisTaskStore(reader_client, namespace=namespace) as reader:
            kept = {r.id: r for r in reader.list()}
        assert kept[finals[-1].id].status is TaskStatus.COMPLETED
        # The clients were the caller's: still open, still answering.
        assert await owner_client.ping()  # pyright: ignore[reportUnknownMemberType]
        assert await worker_client.ping()  # pyright: ignore[reportUnknownMemberType]
    finally:
        await owner_client.aclose()
        await worker_client.aclose()
        await reader_client.aclose()
        for connection in sentinel.sentinels:
            await connection.aclose()
