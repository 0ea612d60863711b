"""A task store that several processes share through a Redis server, and that outlives them.

[`RedisTaskStore`][pydantic_ai_subagents.redis.RedisTaskStore] keeps the
[`TaskStore`][pydantic_ai_subagents.TaskStore] protocol synchronous, as the manager needs it: every process holds a
copy of the namespace's records in memory, reads from it, and writes its own changes to it at once. A pump then
writes each change to Redis, in order, and other processes learn of it from the task event that carries the new
record (see [`SharedTaskStore`][pydantic_ai_subagents.SharedTaskStore]).

Redis keys, all under the store's `namespace`:

* `{namespace}:task:{id}`: a hash per task: `data` (the record as JSON), `rev` (its revision), `status`,
  `terminal`, and a completed task's conversation (`transcript`; `transcript_over`, its size, when over the cap).
  A script writes it (see `_records`); a finished task's key expires after `retention_seconds`.
* `{namespace}:tasks`: a sorted set of every task id, by creation time: the order records are loaded in.
* `{namespace}:finished`: a sorted set of finished task ids, by finishing time; the oldest past `max_retained` are
  deleted.
* `{namespace}:owner:{owner}`: one key per live manager, renewed every `heartbeat_interval` and expiring after
  `lease_seconds`: while it exists, the manager's tasks are not orphans.
* `{namespace}:marker:{store}`: kept set by each store while it is open; when a store finds its own missing, Redis
  lost its data (it restarted without it), and the store writes again every record it holds and the jobs of its
  live tasks.
* `{namespace}:orphan:{id}`: taken (`SET NX`) by the one process that marks an orphaned task `FAILED`.
* `{namespace}:queue:{queue}`: a stream of jobs for the workers serving `queue`, read by the consumer group
  `workers`; a job is deleted once a worker acknowledges it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self, cast

import anyio
import anyio.abc
from pydantic_ai.messages import ModelMessage

from .._errors import SubagentsError
from .._memory_store import InMemoryTaskStore
from .._state import CancelKind, StatusChange, TaskRecord, TaskStatus

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from ._connect import Connection, RedisSource, open_connection
from ._jobs import WorkerQueues
from ._keys import StoreKeys
from ._leases import OwnerLeases
from ._pump import WritePump
from ._records import RECORD, RedisRecords
from ._transcripts import EncodedTranscript, encode, load

__all__ = ('RedisTaskStore',)

_Writes = tuple[list[TaskRecord], list[tuple[str, str]], dict[str, EncodedTranscript]]

logger = logging.getLogger('pydantic_ai_subagents.redis')

_CLOSE_FLUSH_TIMEOUT: Final = 5.0


class RedisTaskStore(InMemoryTaskStore):
    """A [`SharedTaskStore`][pydantic_ai_subagents.SharedTaskStore] on Redis: records shared by processes.

    Records outlive the processes. Use it as `async with RedisTaskStore(url) as store:` and give it to a
    [`TaskManager`][pydantic_ai_subagents.TaskManager] together with a
    [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] on the same namespace (or let
    [`redis_task_manager`][pydantic_ai_subagents.redis.redis_task_manager] make all three). Entering loads every
    record of the namespace that Redis still holds; leaving writes what is not written yet, gives up the leases of
    this process's managers and closes the connection.

    What it guarantees:

    * **Durable records.** Every change to a record (status, result, partial result, question, cancel request,
      usage) is written to Redis in the order it was made, a moment after it was made in memory (`flush` waits for
      it). After a restart the application reads them all back; results that were not JSON come back as what
      their JSON turned into (a dict for a Pydantic model).
    * **No task left `RUNNING` forever.** Each manager holds a lease; if its process dies, the lease runs out after
      `lease_seconds` and a surviving manager of the namespace (or the next one to start) marks the dead one's
      live tasks `FAILED`, saying so in the error.
    * **Retention** by `max_retained` and `retention_seconds`, applied in Redis (expiry, and trimming of the
      oldest finished tasks) as well as in each process's copy.

    Each process's copy holds every record the namespace retains, so size `max_retained` for what one process may
    hold in memory.
    """

    def __init__(
        self,
        url: RedisSource = 'redis://localhost:6379/0',
        *,
        namespace: str = 'subagents',
        max_retained: int = 1000,
        retention_seconds: float | None = 3600.0,
        lease_seconds: float = 10.0,
        heartbeat_interval: float = 1.0,
        max_pending_writes: int = 100_000,
        max_transcript_bytes: int = 1_000_000,
    ) -> None:
        """Describe the store; nothing connects until `async with`.

        Args:
            url: The Redis server: a `redis://` (or `rediss://`, `unix://`) URL, or a ready `redis.asyncio` client
                or connection pool (a Sentinel's `master_for(...)` client included), used as given and left open.
                A client made from a URL retries each command on a connection error with jittered backoff.
            namespace: Prefix of every key; use the same as the bus's.
            max_retained: Finished tasks kept (in Redis and in each process), the oldest dropped first.
            retention_seconds: Finished tasks older than this are dropped; `None`: only `max_retained` applies.
            lease_seconds: How long a manager's lease lasts without renewal: how soon the tasks of a dead process
                are marked `FAILED`. Must exceed `heartbeat_interval`.
            heartbeat_interval: Seconds between renewals of this process's leases (and checks for orphans).
            max_pending_writes: Tasks whose changes may wait to be written to Redis; past it, creating a task
                raises [`SubagentsError`][pydantic_ai_subagents.SubagentsError] (before anything is added) rather
                than use unbounded memory. Changes to tasks already here are never refused: the task's newest
                snapshot replaces the one waiting.
            max_transcript_bytes: The largest conversation of a completed task kept in Redis (as Pydantic AI's
                JSON), for follow-up tasks in any process; a larger one is not kept, and a follow-up is refused
                saying so. `0` keeps none.
        """
        if heartbeat_interval <= 0 or lease_seconds <= heartbeat_interval:
            raise ValueError('heartbeat_interval must be positive and lease_seconds larger than it')
        if max_pending_writes < 1:
            raise ValueError('max_pending_writes must be at least 1')
        if max_transcript_bytes < 0:
            raise ValueError('max_transcript_bytes must be >= 0')
        super().__init__(max_retained=max_retained, retention_seconds=retention_seconds)
        self.url = url
        """The Redis server (a URL, or the client or pool given)."""
        self.namespace = namespace
        """Prefix of every key."""
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        """Seconds between renewals of this process's leases (and checks for orphans)."""
        self.max_pending_writes = max_pending_writes
        self.max_transcript_bytes = max_transcript_bytes
        """The largest transcript kept, in bytes of JSON."""
        self._keys = StoreKeys(namespace)
        self._claim_id = f'{time.time():.0f}-{id(self):x}'
        self._leases = OwnerLeases(
            keys=self._keys, lease_seconds=lease_seconds, heartbeat_interval=heartbeat_interval, claim_id=self._claim_id
        )
        self._queues = WorkerQueues(self._keys)
        self._client: aioredis.Redis | None = None
        self._connection: Connection | None = None
        self._layout = RedisRecords(self._keys)
        self._tg: anyio.abc.TaskGroup | None = None
        self._pump_scope = anyio.CancelScope()
        self._pumps_done = anyio.Event()
        # Written in order by the pump: the newest snapshot of each changed record, then the jobs queued after it.
        self._pending: dict[str, TaskRecord] = {}
        self._jobs_out: list[tuple[str, str]] = []
        self._transcripts_out: dict[str, EncodedTranscript] = {}
        # The last job submitted for each live task: written again if Redis loses its data.
        self._jobs_live: dict[str, tuple[str, str]] = {}
        self._marker_ms = int(lease_seconds * 10_000)
        self._writer = WritePump[_Writes](what='task records', take=self._take_writes, write=self._write_batch)
        self._closed = False
        self._refreshed_at = time.time()

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        if self._client is not None or self._closed:
            raise SubagentsError('a RedisTaskStore can be entered once')
        self._connection = await open_connection(self.url, self._load)
        client = self._client = self._connection.client
        self._layout.register(client)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._run_pumps, client)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(None, None, None)

    async def _run_pumps(self, client: aioredis.Redis) -> None:
        try:
            with self._pump_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._writer.run)
                    tg.start_soon(self._leases.run, client)
                    tg.start_soon(self._watch_data, client)
        finally:
            self._pumps_done.set()
            self._writer.notify()

    async def _watch_data(self, client: aioredis.Redis) -> None:
        """Every heartbeat, check that Redis still holds the namespace's data; if it lost it, write it all again.

        A Redis restarted without its data has forgotten every record, lease and job: this process writes again
        every record it holds (the revision check keeps the newest when several processes do) and the jobs of its
        live tasks (a worker's claim of a job already running is refused by its owner), and takes its leases again.
        """
        while True:
            await anyio.sleep(self.heartbeat_interval)
            try:
                before = await client.set(self._keys.marker(self._claim_id), 1, px=self._marker_ms, get=True)  # pyright: ignore[reportUnknownMemberType]
            except RedisError:
                continue
            if before is not None:
                continue
            logger.warning('Redis lost the data of namespace %r (a restart?); writing it again', self.namespace)
            for record in self:
                self._pending.setdefault(record.id, record)
            self._jobs_out.extend(self._jobs_live.values())
            self._queues.forget_groups()
            self._writer.wake()
            with contextlib.suppress(RedisError):
                await self._leases.renew(client)

    async def aclose(self) -> None:
        """Write what is pending (for a few seconds at most), give up this process's leases, and disconnect.

        Idempotent; may be called before leaving `async with`, which then only waits for the pumps' task group.
        """
        if self._closed:
            return
        self._closed = True
        client = self._client
        with anyio.CancelScope(shield=True):
            if client is not None:
                with anyio.move_on_after(_CLOSE_FLUSH_TIMEOUT):
                    await self._wait_written()
                with anyio.move_on_after(_CLOSE_FLUSH_TIMEOUT):
                    await self._leases.give_up_all(client)
            self._pump_scope.cancel()
            if self._tg is not None:
                await self._pumps_done.wait()
            if self._connection is not None:
                await self._connection.aclose()

    async def _load(self, client: aioredis.Redis) -> None:
        """Read every record Redis still holds for the namespace into this process's copy."""
        await client.set(self._keys.marker(self._claim_id), 1, px=self._marker_ms)  # pyright: ignore[reportUnknownMemberType]
        tasks_key = self._keys.tasks
        if self.retention_seconds is not None:
            cutoff = time.time() - self.retention_seconds
            await client.zremrangebyscore(self._keys.finished, '-inf', cutoff)  # pyright: ignore[reportUnknownMemberType]
        ids = [raw.decode() for raw in cast('list[bytes]', await client.zrange(tasks_key, 0, -1))]  # pyright: ignore[reportUnknownMemberType]
        gone: list[str] = []
        async for task_id, record in self._layout.read(client, ids):
            if record is None:
                gone.append(task_id)  # expired by retention
            else:
                super().apply(record)
        if gone:
            await client.zrem(tasks_key, *gone)  # pyright: ignore[reportUnknownMemberType]
        self.prune()

    # -- writes: in memory at once, to Redis by the pump --

    def _check_open(self, *, new: bool = False) -> None:
        """Refuse a write before it changes anything: the store is closed, or (for a new task) too much waits.

        Only a new task is refused for the backlog: a change to a task already here replaces its pending snapshot
        (one per task), so it costs no more memory, and refusing it would leave the task changed here but not
        settled.
        """
        if self._closed:
            raise SubagentsError('the Redis task store is closed')
        if new and len(self._pending) >= self.max_pending_writes:
            raise SubagentsError(f'{len(self._pending)} task changes are waiting to be written to Redis')

    def _written(self, record: TaskRecord) -> TaskRecord:
        self._pending[record.id] = record
        if record.is_terminal:
            self._jobs_live.pop(record.id, None)
        self._writer.wake()
        return record

    def create(self, record: TaskRecord) -> StatusChange:
        """Add a new task (as the in-memory store does), and write it to Redis.

        Raises:
            SubagentsError: The store is closed, or `max_pending_writes` changes wait for Redis; nothing was added.
        """
        self._check_open(new=True)
        change = super().create(record)
        self._written(change.record)
        return change

    def transition(self, task_id: str, to: TaskStatus, **fields: Any) -> StatusChange:
        """Move a task to a new state (as the in-memory store does), and write it to Redis."""
        self._check_open()
        change = super().transition(task_id, to, **fields)
        self._written(change.record)
        return change

    def update(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change fields without a state change (as the in-memory store does), and write it to Redis."""
        self._check_open()
        return self._written(super().update(task_id, **fields))

    def request_cancel(self, task_id: str, kind: CancelKind, requested_by: str) -> TaskRecord:
        """Record a cancel request (as the in-memory store does), and write it to Redis."""
        self._check_open()
        before = self.get(task_id)
        record = super().request_cancel(task_id, kind, requested_by)
        if record is not before:
            self._written(record)
        return record

    async def flush(self) -> None:
        """Wait until every change made so far in this process is written to Redis.

        Raises:
            SubagentsError: The store closed before they were written.
        """
        await self._wait_written()
        if self._unwritten:
            raise SubagentsError('the Redis task store closed before its changes were written')

    @property
    def _unwritten(self) -> bool:
        return bool(self._pending or self._jobs_out or self._transcripts_out) or self._writer.writing

    async def _wait_written(self) -> None:
        await self._writer.wait(lambda: self._unwritten and self._tg is not None and not self._pumps_done.is_set())

    def _take_writes(self) -> _Writes | None:
        if not (self._pending or self._jobs_out or self._transcripts_out):
            return None
        batch = list(self._pending.values())
        self._pending.clear()
        jobs, self._jobs_out = self._jobs_out, []
        transcripts, self._transcripts_out = self._transcripts_out, {}
        return batch, jobs, transcripts

    async def _write_batch(self, writes: _Writes) -> None:
        client = self._client
        assert client is not None
        batch, jobs, transcripts = writes
        for key in {key for key, _ in jobs}:
            await self._queues.ensure_group(client, key)
        retention_ms = 0 if self.retention_seconds is None else max(1, int(self.retention_seconds * 1000))
        async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
            await self._layout.write(
                pipe, batch, transcripts, now=time.time(), retention_ms=retention_ms, max_retained=self.max_retained
            )
            for key, job in jobs:
                pipe.xadd(key, {'job': job})  # pyright: ignore[reportUnknownMemberType]
            await pipe.execute()  # pyright: ignore[reportUnknownMemberType]

    # -- transcripts --

    def keep_transcript(self, task_id: str, messages: list[ModelMessage]) -> None:
        """Keep the conversation of the completed task `task_id` with its record in Redis, for follow-up tasks.

        Written with the terminal record and dropped with it; over `max_transcript_bytes` only its size is kept.
        """
        self._check_open()
        self._transcripts_out[task_id] = encode(messages, self.max_transcript_bytes)
        self._writer.wake()

    async def load_transcript(self, task_id: str) -> list[ModelMessage] | None:
        """The conversation kept in Redis for the completed task `task_id`, or `None` when none is kept.

        Raises:
            TaskNotContinuableError: it was over `max_transcript_bytes`, or does not load.
        """
        client = self._require_client()
        return await load(client, self._keys.task(task_id), task_id, wait=2 * self.heartbeat_interval + 1.0)

    # -- sharing --

    async def register_owner(self, owner: str) -> None:
        """Take the lease of `owner` (a manager of this process) now, and renew it while the store is open."""
        await self._leases.take(self._require_client(), owner)

    async def unregister_owner(self, owner: str) -> None:
        """Give up the lease of `owner`: its manager has closed and its tasks are finished."""
        await self._leases.give_up(None if self._closed else self._client, owner)

    def _require_client(self) -> aioredis.Redis:
        if self._client is None or self._closed:
            raise SubagentsError('the Redis task store is not open; use `async with RedisTaskStore(url) as store:`')
        return self._client

    async def owners_alive(self, owners: set[str]) -> set[str]:
        """Which of `owners` are not known to be dead (managers of this process always live).

        An owner is dead once its lease has been missing for `lease_seconds` of this process's observation: a lease
        missing for a moment (Redis restarted without its data, before the owner's next renewal) fails nobody's
        tasks. Answers are cached for half a heartbeat, and one query runs at a time: many tasks watching their workers
        cost one round trip per half heartbeat, not one each.
        """
        return await self._leases.alive(self._require_client(), owners)

    # -- worker queues --

    async def submit(self, queue: str, job: Mapping[str, Any]) -> None:
        """Put a job on the worker queue `queue` (a Redis stream read by the consumer group of the workers).

        The job is written by the same pump as the records, after the record changes made before it: a worker
        never sees a job whose task is not in Redis yet.
        """
        self._require_client()
        if len(self._jobs_out) >= self.max_pending_writes:
            raise SubagentsError(f'{len(self._jobs_out)} jobs are waiting to be written to Redis')
        entry = (self._keys.queue(queue), json.dumps(dict(job)))
        self._jobs_out.append(entry)
        task_id = job.get('task_id')
        if isinstance(task_id, str):
            self._jobs_live[task_id] = entry
        self._writer.wake()

    async def take(
        self, queue: str, consumer: str, *, count: int = 1, block: float = 1.0, min_idle: float | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Take up to `count` jobs from `queue` for `consumer` (a worker), waiting up to `block` seconds.

        With `min_idle`, take instead jobs that another consumer took more than `min_idle` seconds ago and never
        acknowledged (it died before it could claim them).

        Returns:
            `(entry id, job)` pairs; acknowledge each with [`ack`][pydantic_ai_subagents.redis.RedisTaskStore.ack].
        """
        return await self._queues.take(
            self._require_client(), queue, consumer, count=count, block=block, min_idle=min_idle
        )

    async def ack(self, queue: str, entry_id: str) -> None:
        """Acknowledge a job taken with `take`: it leaves the queue for good."""
        await self._queues.ack(self._require_client(), queue, entry_id)

    async def refresh(self) -> list[TaskRecord]:
        """Read again from Redis the live tasks of other processes, and tasks created lately; take in what changed.

        Task events keep this copy current; this catches what an event lost on the way would leave stale (pub/sub
        delivers at most once: a reconnect or an overflowing subscription drops messages).

        Returns:
            The records that changed here (newer revisions, and tasks new to this copy).
        """
        client = self._require_client()
        since = self._refreshed_at - 2 * self.heartbeat_interval
        self._refreshed_at = time.time()
        recent = cast(
            'list[bytes]',
            await client.zrangebyscore(self._keys.tasks, since, '+inf'),  # pyright: ignore[reportUnknownMemberType]
        )
        ids = {raw.decode() for raw in recent}
        ids.difference_update(r.id for r in self if r.owner in self._leases.here)
        ids.update(r.id for r in self if not r.is_terminal and r.owner not in self._leases.here)
        changed: list[TaskRecord] = []
        async for task_id, record in self._layout.read(client, sorted(ids)):
            if record is None:
                continue
            before = self.get(task_id)
            super().apply(record)
            after = self.get(task_id)
            if after is not None and after is not before:
                changed.append(after)
        return changed

    async def orphans(self) -> list[TaskRecord]:
        """Live tasks whose owner's lease ran out, each claimed in Redis by this process alone.

        Each is read back from Redis first, so a task that finished there (unknown here) is not returned; the
        caller marks the returned ones `FAILED`.
        """
        client = self._require_client()
        live = [r for r in self if not r.is_terminal and r.owner is not None and r.owner not in self._leases.here]
        if not live:
            return []
        alive = await self.owners_alive({r.owner for r in live if r.owner is not None})
        claimed: list[TaskRecord] = []
        for record in live:
            if record.owner in alive:
                continue
            key = self._keys.orphan(record.id)
            if not await client.set(key, self._claim_id, nx=True, ex=3600):  # pyright: ignore[reportUnknownMemberType]
                continue
            raw = cast('bytes | None', await client.hget(self._keys.task(record.id), 'data'))  # pyright: ignore[reportUnknownMemberType]
            if raw is not None:
                super().apply(RECORD.validate_json(raw))
            current = self.get(record.id)
            if current is not None and not current.is_terminal:
                claimed.append(current)
        return claimed
