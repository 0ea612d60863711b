"""The worker queues of a Redis task store: jobs for worker processes, each handed to one of them.

A queue is a Redis stream read by the consumer group `workers`. The rules it keeps:

* **One worker per job.** The consumer group hands each job to one worker; the job stays pending until that worker
  acknowledges it, and a worker that died before acknowledging leaves it to be taken over (`min_idle`).
* **A lost group is made again.** A Redis restarted without its data has no consumer group: the next take makes
  it again, reading the stream from its start.
* **Nothing malformed reaches a worker.** A job that is not a JSON object is logged, acknowledged and dropped.

Jobs are written by the store's write pump, after the record changes made before them (see `RedisTaskStore.submit`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, cast

try:
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from ._keys import StoreKeys

__all__ = ('WorkerQueues',)

logger = logging.getLogger('pydantic_ai_subagents.redis')

_WORKERS_GROUP: Final = 'workers'


class WorkerQueues:
    """Reads the worker queues of one namespace, and makes sure each has its consumer group."""

    def __init__(self, keys: StoreKeys) -> None:
        self._keys = keys
        self._groups: set[str] = set()

    def forget_groups(self) -> None:
        """Redis lost its data: make each queue's group again before the next write or take."""
        self._groups.clear()

    async def ensure_group(self, client: aioredis.Redis, key: str) -> None:
        """Create the consumer group of the queue stream `key` (and the stream) unless this process already did."""
        if key in self._groups:
            return
        try:
            # From the start of the stream: jobs put there before any worker came are still taken.
            await client.xgroup_create(key, _WORKERS_GROUP, id='0', mkstream=True)  # pyright: ignore[reportUnknownMemberType]
        except ResponseError as exc:
            if 'BUSYGROUP' not in str(exc):
                raise
        self._groups.add(key)

    async def take(
        self, client: aioredis.Redis, queue: str, consumer: str, *, count: int, block: float, min_idle: float | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Take up to `count` jobs from `queue` for `consumer`; see `RedisTaskStore.take`."""
        key = self._keys.queue(queue)
        await self.ensure_group(client, key)
        try:
            entries = await self._read(client, key, consumer, count=count, block=block, min_idle=min_idle)
        except ResponseError as exc:
            if 'NOGROUP' not in str(exc):
                raise
            # Redis lost the group (it restarted without its data): make it again, from the stream's start.
            self._groups.discard(key)
            await self.ensure_group(client, key)
            entries = await self._read(client, key, consumer, count=count, block=block, min_idle=min_idle)
        jobs: list[tuple[str, dict[str, Any]]] = []
        for entry_id, entry in entries:
            raw = None if entry is None else entry.get(b'job')
            try:
                job = json.loads(raw) if raw is not None else None
            except ValueError:
                job = None
            if not isinstance(job, dict):
                logger.error('dropped a malformed job %s from queue %r', entry_id, queue)
                await self.ack(client, queue, entry_id.decode())
                continue
            jobs.append((entry_id.decode(), cast('dict[str, Any]', job)))
        return jobs

    async def _read(
        self, client: aioredis.Redis, key: str, consumer: str, *, count: int, block: float, min_idle: float | None
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        if min_idle is not None:
            reply: list[Any] = await client.xautoclaim(  # pyright: ignore[reportUnknownMemberType]
                key, _WORKERS_GROUP, consumer, min_idle_time=int(min_idle * 1000), start_id='0-0', count=count
            )
            entries = cast('list[tuple[bytes, dict[bytes, bytes] | None]]', reply[1])
        else:
            result = cast(
                'list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None',
                await client.xreadgroup(  # pyright: ignore[reportUnknownMemberType]
                    _WORKERS_GROUP, consumer, {key: '>'}, count=count, block=max(1, int(block * 1000))
                ),
            )
            entries = [entry for _stream, batch in result or () for entry in batch]
        return entries

    async def ack(self, client: aioredis.Redis, queue: str, entry_id: str) -> None:
        """Acknowledge a job taken with `take`: it leaves the queue for good."""
        key = self._keys.queue(queue)
        async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
            pipe.xack(key, _WORKERS_GROUP, entry_id)  # pyright: ignore[reportUnknownMemberType]
            pipe.xdel(key, entry_id)  # pyright: ignore[reportUnknownMemberType]
            await pipe.execute()  # pyright: ignore[reportUnknownMemberType]
