"""Worker processes: run subagent tasks taken from a Redis queue, for owners in other processes.

Started with `python -m pydantic_ai_subagents worker ...` (see `pydantic_ai_subagents.__main__`), or in code with
[`Worker`][pydantic_ai_subagents.redis.Worker]. See [`_remote`][pydantic_ai_subagents._remote] for the protocol.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import threading
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage
from redis.exceptions import RedisError

from .._bus import Answer, CancelRequest, Mailbox
from .._config import SubAgentConfig
from .._errors import BusClosedError, MailboxFullError, ReplyTimeoutError, SubagentsError, UnknownRecipientError
from .._events import TaskEvent, TaskRetrying
from .._manager import TaskManager
from .._remote import ClaimReply, SteerMessage, TaskClaim, WorkerJob, WorkerUpdate
from .._state import TaskRecord, TaskStatus
from ._bus import RedisMessageBus
from ._connect import RedisSource, retrying
from ._store import RedisTaskStore
from ._worker_steer import history_of, retry_update, steer, steer_held, with_transcript

__all__ = ('Worker',)

logger = logging.getLogger('pydantic_ai_subagents.redis')

WORKER_PREFIX = 'worker:'
"""A worker's participant name on the bus (and the holder of its lease) is this prefix and a random id."""

_CLAIM_TIMEOUT = 5.0
"""Seconds a worker waits for the owner's answer to a claim before it asks again (if the owner still lives)."""
_REPORTS_FLUSH_TIMEOUT = 5.0
"""Seconds a stopping worker waits for its last reports to leave."""

DrainMode = Literal['wait', 'cancel']


@dataclasses.dataclass(eq=False)
class _Job:
    remote_id: str
    owner: str
    local_id: str
    attempt: int
    last_status: TaskStatus | None = None
    superseded: bool = False
    """The owner gave a later attempt of the task to this worker: this run is stopped, and reports nothing."""


class Worker:
    """Runs the tasks that owners in other processes put on a worker queue.

    ```python
    worker = Worker([researcher, writer], url='redis://localhost:6379/0', namespace='myapp')
    await worker.run()  # until worker.stop() (the command line calls it on SIGTERM / SIGINT)
    ```

    A worker takes a job only when it has a free slot (`concurrency`), so that busy workers leave jobs to idle
    ones. For each job it asks the task's owner first (a cancelled task is not started; two workers never run the
    same attempt), runs the subagent in a local [`TaskManager`][pydantic_ai_subagents.TaskManager], and reports
    every state change back. Cancel requests and answers from the owner reach the local run. It holds a lease while
    it lives, so owners notice when it dies (and retry or fail its tasks), and it stops a task whose owner died.

    Stopping ([`stop`][pydantic_ai_subagents.redis.Worker.stop]) takes no new job; with `drain='wait'` the running
    tasks get `drain_timeout` seconds to finish and are then soft-cancelled, with `drain='cancel'` they are
    soft-cancelled at once; what is still running after the soft-cancel grace is stopped hard.
    """

    def __init__(
        self,
        subagents: Sequence[SubAgentConfig],
        *,
        url: RedisSource = 'redis://localhost:6379/0',
        namespace: str = 'subagents',
        queue: str = 'default',
        concurrency: int = 4,
        model: Model | str | None = None,
        drain: DrainMode = 'wait',
        drain_timeout: float = 30.0,
        lease_seconds: float = 10.0,
        heartbeat_interval: float = 1.0,
        bus_options: dict[str, Any] | None = None,
        **manager_options: Any,
    ) -> None:
        """Describe the worker; nothing connects until [`run`][pydantic_ai_subagents.redis.Worker.run].

        Args:
            subagents: The subagents this worker can run, found by name (their `worker_queue` is ignored here).
            url: The Redis server: a URL, or a ready `redis.asyncio` client or connection pool (a Sentinel's
                included), shared by the worker's bus and store and left open.
            namespace: The namespace of the owners' bus and store.
            queue: The worker queue to serve (the configs' `worker_queue` in the owners' processes).
            concurrency: Tasks run at once.
            model: The model for subagents whose config names none.
            drain: On stop, let running tasks finish (`'wait'`, up to `drain_timeout`) or soft-cancel them now.
            drain_timeout: Seconds running tasks get to finish on stop before they are soft-cancelled.
            lease_seconds: How soon owners notice that this worker died.
            heartbeat_interval: Seconds between lease renewals (and checks that owners still live).
            bus_options: More keyword arguments for [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus].
            **manager_options: Keyword arguments for the local [`TaskManager`][pydantic_ai_subagents.TaskManager].
        """
        if concurrency < 1:
            raise ValueError('concurrency must be at least 1')
        names = [config.name for config in subagents]
        if len(set(names)) != len(names):
            raise ValueError(f'subagent names must be unique, got {names}')
        self.configs = {config.name: dataclasses.replace(config, worker_queue=None) for config in subagents}
        self.url = url
        self.namespace = namespace
        self.queue = queue
        self.concurrency = concurrency
        self.model = model
        self.drain: DrainMode = drain
        self.drain_timeout = drain_timeout
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.bus_options = bus_options or {}
        self.manager_options = manager_options
        self.participant = f'{WORKER_PREFIX}{secrets.token_hex(8)}'
        """This worker's name on the bus: the sender of its claims and updates, and the holder of its lease."""
        self.jobs_done = 0
        """Tasks this worker ran to their end."""
        self._jobs: dict[str, _Job] = {}
        self._by_local: dict[str, _Job] = {}
        self._stop = anyio.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._ready = anyio.Event()
        self._job_ended = anyio.Event()
        self._take_scope = anyio.CancelScope()
        self._taking_done = anyio.Event()
        self._reports: deque[WorkerUpdate] = deque()
        self._report_wake = anyio.Event()
        self._reports_sent = anyio.Event()

    @property
    def stopping(self) -> bool:
        """Whether [`stop`][pydantic_ai_subagents.redis.Worker.stop] was called."""
        return self._stop.is_set()

    @property
    def running(self) -> int:
        """Tasks running on this worker now."""
        return len(self._jobs)

    def stop(self) -> None:
        """Stop taking jobs and drain (see the class). Safe from any thread and from signal handlers."""
        token = self._token
        if token is None or threading.get_ident() == self._loop_thread:
            self._stop.set()
            return
        with contextlib.suppress(anyio.RunFinishedError, RuntimeError):  # the worker has already stopped
            anyio.from_thread.run_sync(self._stop.set, token=token)

    async def wait_ready(self) -> None:
        """Wait until the worker takes jobs (its mailbox and lease are visible to owners)."""
        await self._ready.wait()

    async def run(self) -> None:
        """Serve the queue until [`stop`][pydantic_ai_subagents.redis.Worker.stop], then drain and return."""
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        slots = anyio.Semaphore(self.concurrency)
        async with (
            RedisMessageBus(self.url, namespace=self.namespace, **self.bus_options) as bus,
            RedisTaskStore(
                self.url,
                namespace=self.namespace,
                lease_seconds=self.lease_seconds,
                heartbeat_interval=self.heartbeat_interval,
            ) as store,
            TaskManager(max_concurrent_tasks=self.concurrency, **self.manager_options) as local,
        ):
            inbox = bus.open_mailbox(self.participant, max_buffer=100_000, overflow='error')
            await store.register_owner(self.participant)
            await bus.wait_for_participant(self.participant)
            events = local.events(max_buffer=100_000)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._relay, events, bus, local, slots)
                tg.start_soon(self._serve_inbox, inbox, local)
                tg.start_soon(self._watch_owners, store, local)
                tg.start_soon(self._take_jobs, store, bus, local, slots)
                tg.start_soon(self._report, bus, store)
                self._ready.set()
                logger.info('worker %s serves queue %r of namespace %r', self.participant, self.queue, self.namespace)
                await self._stop.wait()
                self._take_scope.cancel()
                await self._taking_done.wait()
                await self._drain(local)
                with anyio.move_on_after(_REPORTS_FLUSH_TIMEOUT):
                    await self._reports_sent.wait()
                tg.cancel_scope.cancel()
            inbox.close()
            await events.aclose()
            await store.unregister_owner(self.participant)

    async def _drain(self, local: TaskManager) -> None:
        if self._jobs and self.drain == 'wait':
            with anyio.move_on_after(self.drain_timeout):
                await self._drained()
        if self._jobs:
            for job in list(self._jobs.values()):
                local.soft_cancel(job.local_id, requested_by='worker shutdown')
            with anyio.move_on_after(local.soft_cancel_grace):
                await self._drained()
        if self._jobs:
            for job in list(self._jobs.values()):
                local.hard_cancel(job.local_id, requested_by='worker shutdown')
            with anyio.move_on_after(local.hard_cancel_wait + 1):
                await self._drained()

    async def _drained(self) -> None:
        while self._jobs:
            self._job_ended = anyio.Event()
            await self._job_ended.wait()

    async def _take_jobs(
        self, store: RedisTaskStore, bus: RedisMessageBus, local: TaskManager, slots: anyio.Semaphore
    ) -> None:
        """Take jobs while there is a free slot, until stopped; then set `_taking_done`."""
        try:
            rounds = 0
            while not self._stop.is_set():
                jobs: list[tuple[str, dict[str, Any]]] = []
                acquired = False
                # Stopping interrupts only the waits (for a slot, for a job) ...
                with anyio.CancelScope() as self._take_scope:
                    if self._stop.is_set():
                        break
                    await slots.acquire()
                    acquired = True
                    # Now and then, pick up jobs a dead worker took and never claimed.
                    min_idle = self.lease_seconds * 2 if rounds % 20 == 0 else None
                    rounds += 1
                    # However long Redis is away, the worker waits for it here (with jittered backoff).
                    take = partial(store.take, self.queue, self.participant, block=1.0, min_idle=min_idle)
                    jobs = await retrying(take, what=f'taking jobs from queue {self.queue!r}')
                # ... never a job already taken: its owner may have accepted the claim and count on it.
                taken = False
                with anyio.CancelScope(shield=True):
                    for entry_id, raw in jobs:
                        taken = await self._start_job(entry_id, raw, store, bus, local) or taken
                if acquired and not taken:
                    slots.release()
        finally:
            self._taking_done.set()

    async def _start_job(
        self, entry_id: str, raw: dict[str, Any], store: RedisTaskStore, bus: RedisMessageBus, local: TaskManager
    ) -> bool:
        """Claim one job and start it; whether it holds a slot now (released when it ends)."""
        try:
            job = WorkerJob(**raw)
        except TypeError as exc:
            logger.error('dropped a malformed job from queue %r: %s', self.queue, exc)
            await self._ack(store, entry_id)
            return False
        running = self._jobs.get(job.task_id)
        if running is not None and running.owner == job.owner and running.attempt >= job.attempt:
            # The owner queued the job again (Redis lost its data meanwhile): this worker already runs it, and the
            # owner would accept the same claim again, so asking would start a second run of the same attempt.
            await self._ack(store, entry_id)
            return False
        claim = TaskClaim(sender=self.participant, recipient=job.owner, task_id=job.task_id, attempt=job.attempt)
        try:
            reply = await self._claim(bus, store, claim)
        except (SubagentsError, ReplyTimeoutError, TimeoutError):
            # The owner is gone (or too slow to answer): its tasks are failed by the orphan sweep.
            await self._ack(store, entry_id)
            return False
        await self._ack(store, entry_id)
        if not (isinstance(reply, ClaimReply) and reply.accepted):
            return False
        config = self.configs.get(job.subagent)
        if config is None:
            self._send(
                bus,
                WorkerUpdate(
                    sender=self.participant,
                    recipient=job.owner,
                    task_id=job.task_id,
                    status=TaskStatus.FAILED,
                    error=f'the worker serving queue {self.queue!r} has no subagent named {job.subagent!r}',
                ),
            )
            return False
        if job.timeout is not None and config.timeout is None:
            config = dataclasses.replace(config, timeout=job.timeout)
        history = history_of(job, self.participant)
        if isinstance(history, WorkerUpdate):
            self._send(bus, history)
            return False
        record = await local.start(
            config,
            job.description,
            scope=f'job:{job.task_id}',
            mode='async',
            model=self.model,
            parent_usage=RunUsage(),
            parent_limits=job.limits(),
            message_history=history,
        )
        steer_held(local, record.id, reply)
        entry = _Job(remote_id=job.task_id, owner=job.owner, local_id=record.id, attempt=job.attempt)
        running = self._jobs.get(job.task_id)
        if running is not None:
            # The owner took this worker for dead and gave a later attempt to it: the earlier run is stopped.
            running.superseded = True
            local.hard_cancel(running.local_id, requested_by='a later attempt')
        self._jobs[job.task_id] = entry
        self._by_local[record.id] = entry
        return True

    async def _claim(self, bus: RedisMessageBus, store: RedisTaskStore, claim: TaskClaim) -> Any:
        """Ask the owner for the job; ask again while the owner lives but its reply was lost (Redis restarted).

        The owner accepts the same claim from the same worker again, so asking twice never runs a task twice.
        """
        while True:
            try:
                return await bus.ask(claim, timeout=_CLAIM_TIMEOUT)
            except UnknownRecipientError:
                # An owner that started a moment ago may not be in this process's copy of the participants yet.
                await bus.wait_for_participant(claim.recipient or '', timeout=self.lease_seconds)
            except ReplyTimeoutError:
                if not await self._owner_lives(bus, store, claim.recipient or ''):
                    raise

    async def _ack(self, store: RedisTaskStore, entry_id: str) -> None:
        try:
            await store.ack(self.queue, entry_id)
        except RedisError as exc:
            # Left pending: a worker takes it over later, and its claim is refused (this attempt was claimed).
            logger.warning('could not acknowledge job %s of queue %r: %s', entry_id, self.queue, exc)

    async def _relay(self, events: Any, bus: RedisMessageBus, local: TaskManager, slots: anyio.Semaphore) -> None:
        """Report each state change (and each retry) of a local run to the task's owner."""
        event: TaskEvent
        async for event in events:
            entry = self._by_local.get(event.task_id)
            if isinstance(event, TaskRetrying):
                if entry is not None:
                    record = local.get(event.task_id)
                    self._send(bus, retry_update(self.participant, entry.owner, entry.remote_id, event, record))
                continue
            if entry is None or event.status is TaskStatus.PENDING or event.status is entry.last_status:
                continue
            entry.last_status = event.status
            if not entry.superseded:
                update = self._update(entry, event, local.get(event.task_id))
                self._send(bus, with_transcript(update, local, entry.local_id))
            if event.status.is_terminal:
                del self._by_local[entry.local_id]
                if self._jobs.get(entry.remote_id) is entry:
                    del self._jobs[entry.remote_id]
                self.jobs_done += 1
                slots.release()
                self._job_ended.set()

    def _update(self, entry: _Job, event: TaskEvent, record: TaskRecord | None) -> WorkerUpdate:
        fields: dict[str, Any] = {}
        if record is not None:
            fields = {
                'result': record.result,
                'error': record.error,
                'partial_result': record.partial_result,
                'question': record.question,
                'note': record.note,
                'usage': record.usage,
            }
        return WorkerUpdate(
            sender=self.participant, recipient=entry.owner, task_id=entry.remote_id, status=event.status, **fields
        )

    def _send(self, bus: RedisMessageBus, message: WorkerUpdate) -> None:
        """Queue a report for its owner; `_report` sends the queue in order."""
        self._reports.append(message)
        self._report_wake.set()

    async def _report(self, bus: RedisMessageBus, store: RedisTaskStore) -> None:
        """Send the reports to their owners in order, each until it is sent or its owner is known to be dead.

        A report is what the owner settles its task from: it is never given up while the owner lives, whether Redis
        is away (the outbox is full), or has forgotten the owner's mailbox for a moment (it restarted without its
        data and the owner has not listed it again yet).
        """
        reports: deque[WorkerUpdate] = self._reports
        while True:
            if not reports:
                self._reports_sent.set()
                self._report_wake = anyio.Event()
                await self._report_wake.wait()
                continue
            self._reports_sent = anyio.Event()
            message = reports[0]
            try:
                bus.send(message)
            except UnknownRecipientError:
                if not await self._owner_lives(bus, store, message.recipient or ''):
                    logger.warning('dropped the reports to %s: its lease ran out', message.recipient)
                    self._reports = reports = deque[WorkerUpdate](
                        m for m in reports if m.recipient != message.recipient
                    )
                continue
            except MailboxFullError:
                await anyio.sleep(self.heartbeat_interval / 10)  # the outbox waits for Redis
                continue
            except BusClosedError:
                return
            except SubagentsError as exc:
                logger.warning('could not report task %s to its owner %s: %s', message.task_id, message.recipient, exc)
            reports.popleft()

    async def _owner_lives(self, bus: RedisMessageBus, store: RedisTaskStore, owner: str) -> bool:
        try:
            await bus.wait_for_participant(owner, timeout=self.heartbeat_interval)
        except TimeoutError:
            try:
                return owner in await store.owners_alive({owner})
            except RedisError:
                return True  # Redis is away: ask again
        return True

    async def _serve_inbox(self, inbox: Mailbox, local: TaskManager) -> None:
        """Cancel requests and answers from owners, for the local runs of their tasks."""
        async for message in inbox:
            entry = self._jobs.get(getattr(message, 'task_id', ''))
            if entry is None or message.sender != entry.owner:
                continue
            if isinstance(message, CancelRequest):
                if message.kind == 'soft':
                    local.soft_cancel(entry.local_id, requested_by=message.requested_by)
                else:
                    local.hard_cancel(entry.local_id, requested_by=message.requested_by)
            elif isinstance(message, Answer):
                local.answer(entry.local_id, message.answer)
            elif isinstance(message, SteerMessage):
                steer(local, entry.local_id, message)

    async def _watch_owners(self, store: RedisTaskStore, local: TaskManager) -> None:
        """Stop the runs of tasks whose owner died: nobody is left to take their results."""
        while True:
            await anyio.sleep(self.heartbeat_interval)
            owners = {entry.owner for entry in self._jobs.values()}
            if not owners:
                continue
            try:
                alive = await store.owners_alive(owners)
            except SubagentsError:
                return
            except Exception:
                logger.exception('checking the owners of running tasks failed')
                continue
            # Only the owners just asked about: a job started during the look has an owner nobody asked about yet.
            for entry in list(self._jobs.values()):
                if entry.owner in owners and entry.owner not in alive:
                    logger.warning('stopping task %s: its owner %s is gone', entry.remote_id, entry.owner)
                    local.hard_cancel(entry.local_id, requested_by='owner gone')
