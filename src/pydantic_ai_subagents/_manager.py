"""The task manager: owns the tasks, their scopes, limits, queue and retention, and every background task.

Rules it keeps:

- Structured: every task runs in the manager's own anyio task group. Closing the manager
  ([`aclose`][pydantic_ai_subagents.TaskManager.aclose], or leaving `async with manager:`) hard-cancels what is
  still live and waits for it, so nothing is orphaned.
- All state changes happen on the manager's event loop. The application entry points
  ([`soft_cancel`][pydantic_ai_subagents.TaskManager.soft_cancel],
  [`hard_cancel`][pydantic_ai_subagents.TaskManager.hard_cancel],
  [`answer`][pydantic_ai_subagents.TaskManager.answer]) may be called from any thread: off the loop they hand the
  call to it and wait for its answer.
- A task's status becomes terminal only after its run has really exited, and exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RunUsage, UsageLimits

from ._bus import Answer, BusClosedError, CancelRequest, InMemoryMessageBus, Message, MessageBus, Question
from ._config import SubAgentConfig
from ._delivery import Delivery
from ._errors import (
    ManagerClosedError,
    ReplyTimeoutError,
    SubagentsError,
    TaskAlreadyFinishedError,
    TaskLimitError,
    TaskNotFoundError,
    UnknownRecipientError,
)
from ._events import TaskEvent, cancel_requested_event, event_for_change, run_event
from ._otel import capture_context, end_attributes, task_span
from ._phrasing import describe_record
from ._remote import ClaimReply, TaskClaim, WorkerBackend, WorkerJob, WorkerUpdate, limits_dict
from ._runner import (
    SOFT_CANCEL_NOTICE,
    TaskRuntime,
    Watcher,
    bounded_limits,
    current_task,
    render_output,
    run_subagent,
    safe_error,
    sync_tool_names,
    task_agent,
    usage_snapshot,
)
from ._state import InMemoryTaskStore, SharedTaskStore, StatusChange, TaskMode, TaskRecord, TaskStatus, TaskStore

__all__ = ('OnRunEnd', 'TaskEventMessage', 'TaskManager', 'WaitMode')

OnRunEnd = Literal['keep', 'wait', 'cancel']
"""What happens to a run's background tasks when the run ends: they go on (`keep`), the run waits for them
(`wait`), or they are cancelled (`cancel`)."""

WaitMode = Literal['all', 'any']
"""Wait until all the given tasks, or any one of them, finished or asked a question."""

_R = TypeVar('_R')

logger = logging.getLogger('pydantic_ai_subagents')

_REFRESH_EVERY_BEATS = 5
"""How often (in heartbeats of a shared store) a manager reads the other processes' live tasks again."""

MANAGER_PREFIX = 'manager:'
"""Each manager's participant name on the bus is this prefix and a random id (`TaskManager.participant`)."""
EVENTS_TOPIC = 'subagents.events'
"""The bus topic every task event is published on."""


@dataclass(frozen=True, kw_only=True)
class TaskEventMessage(Message):
    """A task event, as published on the bus."""

    event: TaskEvent
    """The event."""
    record: TaskRecord | None = None
    """The task as the event left it: how other processes sharing the store learn of the change."""


class TaskManager:
    """Owns subagent tasks: runs them, limits them, keeps their records and lets code watch and control them.

    A toolset created by [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset] makes one; an
    application can make its own and pass it in, to control the tasks from outside the agent (another thread, an
    HTTP handler). Use it as `async with TaskManager() as manager:` or call
    [`aclose`][pydantic_ai_subagents.TaskManager.aclose] when done; if neither is done, it starts itself on first
    use on the running asyncio loop.
    """

    def __init__(
        self,
        *,
        max_concurrent_tasks: int | None = 8,
        max_nesting_depth: int = 3,
        max_tasks_per_scope: int = 100,
        default_timeout: float | None = None,
        question_timeout: float = 600.0,
        soft_cancel_grace: float = 30.0,
        soft_cancel_grace_turns: int = 2,
        hard_cancel_wait: float = 2.0,
        max_retained: int = 1000,
        retention_seconds: float | None = 3600.0,
        forward_subagent_events: bool = False,
        store: TaskStore | None = None,
        bus: MessageBus | None = None,
    ) -> None:
        """Create a manager.

        Args:
            max_concurrent_tasks: Tasks running at once at each nesting level; more wait `PENDING` and start in
                order. Per level, so a task waiting on its own nested tasks can never starve them. `None`: no limit.
            max_nesting_depth: How deep subagents may delegate: 1 allows no nested tasks.
            max_tasks_per_scope: Live (unfinished) tasks one conversation may have; a bound an LLM cannot get around.
            default_timeout: Wall-clock seconds per task when its config sets none; `None`: no limit.
            question_timeout: How long a subagent's question waits for an answer before it is told to go on alone.
            soft_cancel_grace: Seconds a soft-cancelled subagent has to wrap up before the cancel turns hard.
            soft_cancel_grace_turns: Model turns a soft-cancelled subagent may take after the notice before the
                cancel turns hard (its wrap-up answer is one turn).
            hard_cancel_wait: How long `hard_cancel_task` waits for the run to stop before replying that the stop
                is pending (a sync tool in a thread can delay it).
            max_retained: Finished tasks kept for `check_task` and the application (oldest dropped first).
            retention_seconds: Finished tasks older than this are dropped; `None`: only `max_retained` applies.
            forward_subagent_events: Also send each subagent's own run events (text deltas, tool calls and
                results), wrapped in [`TaskRunEvent`][pydantic_ai_subagents.TaskRunEvent], to `events()` subscribers
                and the parent's event stream. Off by default: it streams every model response of every subagent.
            store: Where records live; the in-memory store by default.
            bus: The message bus; the in-memory bus by default.
        """
        if max_concurrent_tasks is not None and max_concurrent_tasks < 1:
            raise ValueError('max_concurrent_tasks must be at least 1 (or None)')
        if max_nesting_depth < 1:
            raise ValueError('max_nesting_depth must be at least 1')
        self.max_concurrent_tasks = max_concurrent_tasks
        self.max_nesting_depth = max_nesting_depth
        self.max_tasks_per_scope = max_tasks_per_scope
        self.default_timeout = default_timeout
        self.question_timeout = question_timeout
        self.soft_cancel_grace = soft_cancel_grace
        self.soft_cancel_grace_turns = soft_cancel_grace_turns
        self.hard_cancel_wait = hard_cancel_wait
        self.forward_subagent_events = forward_subagent_events
        self.store: TaskStore = (
            store
            if store is not None
            else InMemoryTaskStore(max_retained=max_retained, retention_seconds=retention_seconds)
        )
        self.bus: MessageBus = bus if bus is not None else InMemoryMessageBus()
        self.participant = f'{MANAGER_PREFIX}{secrets.token_hex(8)}'
        """This manager's name on the bus: its mailbox, the `owner` of its tasks' records, the sender of its events."""
        self._shared: SharedTaskStore | None = self.store if isinstance(self.store, SharedTaskStore) else None
        self._remote_watchers: dict[str, list[Watcher]] = {}
        self._remote_requests: dict[str, str] = {}
        self._runtimes: dict[str, TaskRuntime] = {}
        self._questions: dict[str, Message] = {}
        self._running: dict[int, int] = {}
        self._queued: dict[int, OrderedDict[str, TaskRuntime]] = {}
        self._delivery = Delivery(self._notice_text)
        self._agents: dict[int, tuple[SubAgentConfig, Agent[Any, Any]]] = {}
        self._live_per_scope: dict[str, int] = {}
        self._transcripts: dict[str, list[ModelMessage]] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing: anyio.Event | None = None
        self._host_done: anyio.Event | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> TaskManager:
        await self._ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether [`aclose`][pydantic_ai_subagents.TaskManager.aclose] was called."""
        return self._closed

    async def _ensure_started(self) -> anyio.abc.TaskGroup:
        if self._closed:
            raise ManagerClosedError('the task manager is closed')
        loop = self._loop
        if loop is asyncio.get_running_loop():
            if self._tg is not None:
                return self._tg
            self._forget_dead_loop()  # the host was cancelled from outside; start again
        elif loop is not None:
            if not (loop.is_closed() or (not loop.is_running() and not self._runtimes)):
                raise SubagentsError(
                    'this task manager has live tasks on another event loop: use one manager (one toolset) per '
                    'loop, or close it first'
                )
            self._forget_dead_loop()
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        started = anyio.Event()
        self._closing = anyio.Event()
        self._host_done = anyio.Event()
        self._loop = _spawn_host_task(self._host, started)
        await started.wait()
        if self._tg is None:
            raise ManagerClosedError('the task manager could not start')
        return self._tg

    def _forget_dead_loop(self) -> None:
        """Move to a new loop: the old one was closed (its tasks died with it) or is idle with no live task."""
        for runtime in list(self._runtimes.values()):
            record = self.store.get(runtime.id)
            if record is not None and not record.is_terminal:
                with contextlib.suppress(TaskAlreadyFinishedError):
                    self.store.transition(runtime.id, TaskStatus.FAILED, error='its event loop was closed')
        self._runtimes.clear()
        self._questions.clear()
        self._live_per_scope.clear()
        self._delivery.clear()
        self._running.clear()
        self._queued.clear()
        self._tg = None
        self.bus = InMemoryMessageBus() if isinstance(self.bus, InMemoryMessageBus) else self.bus

    async def _host(self, started: anyio.Event) -> None:
        assert self._closing is not None
        assert self._host_done is not None
        shared = self._shared
        inbox = self.bus.open_mailbox(self.participant, max_buffer=100_000, overflow='error')
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._serve_inbox, inbox)
                if shared is not None:
                    await shared.register_owner(self.participant)
                    remote = self.bus.subscribe(EVENTS_TOPIC, max_buffer=100_000, overflow='drop_oldest')
                    tg.start_soon(self._serve_remote_events, remote)
                    tg.start_soon(self._sweep_orphans, shared)
                started.set()
                try:
                    await self._closing.wait()
                finally:
                    # Also when the loop itself shuts down (asyncio.run cancels what is left): stop the tasks first.
                    with anyio.CancelScope(shield=True):
                        await self._stop_all()
                    tg.cancel_scope.cancel()
        finally:
            inbox.close()
            self._tg = None
            if shared is not None:
                with anyio.CancelScope(shield=True):
                    await shared.unregister_owner(self.participant)
            self._host_done.set()
            started.set()

    async def aclose(self) -> None:
        """Hard-cancel every live task, wait for all of them to stop, and close the bus. Idempotent."""
        if self._closed:
            if self._host_done is not None:
                await self._host_done.wait()
            return
        self._closed = True
        if self._closing is not None and self._host_done is not None:
            self._closing.set()
            await self._host_done.wait()
        await self.bus.aclose()

    async def _stop_all(self) -> None:
        for runtime in list(self._runtimes.values()):
            self._hard_cancel_now(runtime, 'close')
        for runtime in list(self._runtimes.values()):
            with anyio.move_on_after(self.hard_cancel_wait):
                await runtime.stopped.wait()
        for runtime in list(self._runtimes.values()):
            runtime.cancel_scope.cancel()

    # ----------------------------------------------------------------- starting tasks

    async def start(
        self,
        config: SubAgentConfig,
        description: str,
        *,
        scope: str,
        mode: TaskMode = 'async',
        model: Model | str | None = None,
        deps: Any = None,
        parent_usage: RunUsage | None = None,
        parent_limits: UsageLimits | None = None,
        agent: Agent[Any, Any] | None = None,
    ) -> TaskRecord:
        """Create a task for `config` and start it in the background (or queue it); return its first snapshot.

        Args:
            config: The subagent.
            description: The work, as the subagent will read it.
            scope: Whose task it is (a conversation id); only that scope's callers can see it through the tools.
            mode: Recorded on the task; `sync` callers then wait with
                [`wait_for`][pydantic_ai_subagents.TaskManager.wait_for].
            model: The model when the config has none (the parent's).
            deps: The subagent's deps (already mapped).
            parent_usage: The parent's usage, into which the task's usage is rolled up when it ends.
            parent_limits: The parent's limits; the task's own budget is lowered to what they have left.
            agent: The agent to run, if already built.

        Raises:
            TaskLimitError: the nesting depth or the per-scope task limit is reached.
            ManagerClosedError: the manager is closed.
        """
        tg = await self._ensure_started()
        parent = current_task.get()
        depth = 1 if parent is None else parent[1].depth + 1
        if depth > self.max_nesting_depth:
            raise TaskLimitError(f'nesting depth limit reached ({self.max_nesting_depth})')
        live = self._live_per_scope.get(scope, 0)
        if live >= self.max_tasks_per_scope:
            raise TaskLimitError(f'{live} tasks are live in this conversation; the limit is {self.max_tasks_per_scope}')
        task_id = secrets.token_hex(12)
        runtime = TaskRuntime(
            id=task_id,
            config=config,
            agent=agent or self._agent_for(config),
            prompt=description,
            model=config.model or (None if config.agent is not None and config.agent.model is not None else model),
            deps=deps,
            usage_limits=bounded_limits(config.usage_limits, parent_limits, parent_usage),
            timeout=config.timeout or self.default_timeout,
            depth=depth,
            parent_usage=parent_usage,
            sync_tool_names=sync_tool_names(config.toolsets),
            trace_context=capture_context(),
        )
        record = TaskRecord(
            id=task_id,
            subagent=config.name,
            description=description,
            mode=mode,
            scope=scope,
            parent_task_id=None if parent is None else parent[1].id,
            depth=depth,
            owner=self.participant,
        )
        self._runtimes[task_id] = runtime
        if parent is not None:
            parent[1].children.append((self, task_id))
        change = self.store.create(record)
        self._changed(runtime, change)
        if self._take_slot(depth):
            self._spawn(tg, runtime)
        else:
            # A queued task is only its runtime and its record: its asyncio task, span and cancel scope come when
            # a slot frees (`_release_slot`), so a long queue costs little memory and no scheduling.
            self._queued.setdefault(depth, OrderedDict())[task_id] = runtime
        self._prune()
        return change.record

    def _spawn(self, tg: anyio.abc.TaskGroup, runtime: TaskRuntime) -> None:
        # A fresh context: the task must not inherit the parent run's deadline or other run-scoped state;
        # how long it may run is its own `timeout`, and a sync task stops with its parent through a hard cancel.
        contextvars.Context().run(partial(tg.start_soon, name=f'subagent task {runtime.id}'), self._run, runtime)

    def _agent_for(self, config: SubAgentConfig) -> Agent[Any, Any]:
        # Built once per config: building an agent costs more than running a short task.
        cached = self._agents.get(id(config))
        if cached is None or cached[0] is not config:
            cached = self._agents[id(config)] = (config, task_agent(config))
        return cached[1]

    def _take_slot(self, depth: int) -> bool:
        """Take one of the level's `max_concurrent_tasks` slots if one is free (and the level has no queue)."""
        limit = self.max_concurrent_tasks
        if limit is None:
            return True
        running = self._running.get(depth, 0)
        if running >= limit or self._queued.get(depth):
            return False
        self._running[depth] = running + 1
        return True

    def _release_slot(self, depth: int) -> None:
        """A task of the level ended: its slot goes to the level's oldest queued task, else it is freed."""
        if self.max_concurrent_tasks is None:
            return
        queue = self._queued.get(depth)
        if queue and self._tg is not None:
            _, runtime = queue.popitem(last=False)
            if not queue:
                del self._queued[depth]
            self._spawn(self._tg, runtime)
            return
        left = self._running.get(depth, 1) - 1
        if left > 0:
            self._running[depth] = left
        else:
            self._running.pop(depth, None)

    async def _run(self, runtime: TaskRuntime) -> None:
        record = self.store.get(runtime.id)
        if record is None:
            # Cancelled while queued and already dropped by retention before this task got to run.
            runtime.stopped.set()
            self._runtimes.pop(runtime.id, None)
            return
        with task_span(record, runtime.trace_context, start_time=record.created_at) as span:
            try:
                await self._run_in_span(runtime)
            finally:
                final = self.store.get(runtime.id)
                if final is not None:
                    end_attributes(span, final)

    async def _run_in_span(self, runtime: TaskRuntime) -> None:
        try:
            with runtime.cancel_scope:
                try:
                    record = self.store.get(runtime.id)
                    if record is None or record.status.is_terminal:
                        return  # cancelled between its spawn and its start
                    if runtime.config.worker_queue is not None:
                        await self._run_on_worker(runtime, runtime.config.worker_queue)
                        return
                    self._changed(runtime, self.store.transition(runtime.id, TaskStatus.RUNNING))
                    if runtime.timeout is not None:
                        self._require_tg().start_soon(self._timeout_timer, runtime)
                    await run_subagent(self, runtime)
                    # A subagent's conversation ends with its task: nobody could collect what its own background
                    # tasks produce, so they stop with it.
                    for manager, child_id in runtime.children:
                        manager._hard_cancel_by_id(child_id, 'parent')
                finally:
                    self._release_slot(runtime.depth)
        finally:
            record = self.store.get(runtime.id)
            if record is not None and not record.status.is_terminal:
                # Reached only when the run was torn down from outside (manager closed past its grace).
                self._finish(runtime, TaskStatus.CANCELLED, note='stopped because the task manager was closed')
            runtime.stopped.set()
            self._runtimes.pop(runtime.id, None)
            self._questions.pop(runtime.id, None)

    def _require_tg(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise ManagerClosedError('the task manager is closed')
        return self._tg

    async def _serve_inbox(self, inbox: Any) -> None:
        """The manager's mailbox: questions from subagents, and cancel requests and answers for its tasks."""
        async for message in inbox:
            if isinstance(message, Question):
                self._on_question(message)
            elif isinstance(message, CancelRequest):
                if message.sender != self.participant:
                    # From a manager in another process, for a task of ours.
                    if message.kind == 'soft':
                        self._soft_cancel_now(message.task_id, message.requested_by)
                    else:
                        self._hard_cancel_by_id(message.task_id, message.requested_by)
                elif message.kind == 'soft':
                    # The cooperative half of a soft cancel: a notice inside the subagent's own run.
                    runtime = self._runtimes.get(message.task_id)
                    if runtime is not None:
                        runtime.send_soft_notice()
            elif isinstance(message, Answer):
                self._answer_now(message.task_id, message.answer)
            elif isinstance(message, TaskClaim):
                accepted = self._accept_claim(message)
                self.bus.reply(message, ClaimReply(sender=self.participant, task_id=message.task_id, accepted=accepted))
            elif isinstance(message, WorkerUpdate):
                self._on_worker_update(message)

    # ----------------------------------------------------------------- several processes, one store

    def _remote_owner(self, record: TaskRecord | None) -> str | None:
        """The manager in another process that runs this live task, if it is one of those."""
        if self._shared is None or record is None or record.is_terminal or record.owner is None:
            return None
        return None if record.owner == self.participant or record.id in self._runtimes else record.owner

    def _send_across(self, message: Message) -> bool:
        """Send to a manager or worker in another process; `False` when it is known to be gone."""
        try:
            self.bus.send(message)
        except UnknownRecipientError:
            # Maybe only not yet in this process's copy of the participants (it started a moment ago): wait for it.
            wait_for: Any = getattr(self.bus, 'wait_for_participant', None)
            if wait_for is None or self._tg is None:
                return False
            self._tg.start_soon(self._send_when_known, wait_for, message)
        except SubagentsError:
            return False
        return True

    async def _send_when_known(self, wait_for: Any, message: Message) -> None:
        try:
            await wait_for(message.recipient, timeout=5.0)
            self.bus.send(message)
        except (TimeoutError, SubagentsError) as exc:
            # Its process is gone: the lease watch (orphan sweep, worker watch) settles the task.
            task_id = getattr(message, 'task_id', '?')
            logger.warning('could not deliver a %s for task %s: %s', type(message).__name__, task_id, exc)

    def _send_to_owner(self, message: Message) -> bool:
        if not self._send_across(message):
            return False
        if isinstance(message, CancelRequest):
            # Until the owner's event says so, this process remembers the request, so a repeat is refused here too.
            self._remote_requests[message.task_id] = message.kind
        return True

    def _apply_remote(self, record: TaskRecord) -> None:
        assert self._shared is not None
        self._shared.apply(record)
        self._remote_changed(record)

    def _remote_changed(self, record: TaskRecord) -> None:
        if record.is_terminal:
            self._remote_requests.pop(record.id, None)
        for event in self._remote_watchers.pop(record.id, ()):
            event.set()

    async def _serve_remote_events(self, subscription: Any) -> None:
        """Keep this process's copy of the shared store current with the tasks of other processes."""
        async for message in subscription:
            if (
                isinstance(message, TaskEventMessage)
                and message.record is not None
                and message.sender != self.participant
            ):
                self._apply_remote(message.record)

    # ----------------------------------------------------------------- tasks that run on worker processes

    async def _run_on_worker(self, runtime: TaskRuntime, queue: str) -> None:
        """Queue the task for a worker, then watch it until its terminal state is recorded."""
        shared = self._shared
        if shared is None:
            self._finish(
                runtime,
                TaskStatus.FAILED,
                error=f'subagent {runtime.config.name!r} runs on worker processes (worker_queue={queue!r}), which '
                'needs a task manager on a shared store (see pydantic_ai_subagents.redis.redis_task_manager)',
            )
            return
        backend = WorkerBackend(manager=self, runtime=runtime)
        runtime.backend = backend
        interval = float(getattr(shared, 'heartbeat_interval', 1.0))
        try:
            if not await self._submit(shared, queue, runtime, backend.attempt):
                return
            while True:
                with anyio.move_on_after(interval):
                    await backend.done.wait()
                    return
                worker = backend.worker
                if worker is None:
                    continue
                try:
                    if worker in await shared.owners_alive({worker}):
                        continue
                except Exception as e:  # Redis unreachable for a moment: look again at the next beat
                    logger.warning('could not check the lease of worker %s: %s', worker, e)
                    continue
                record = self.store.get(runtime.id)
                if record is None or record.is_terminal:
                    return
                if backend.attempt < runtime.config.retries and record.cancel is None:
                    backend.attempt += 1
                    backend.worker = None
                    if record.status is TaskStatus.WAITING_FOR_ANSWER:
                        self._resume(runtime.id)
                    self.store.update(
                        runtime.id, note=f'its worker {worker} stopped; started again (attempt {backend.attempt + 1})'
                    )
                    if not await self._submit(shared, queue, runtime, backend.attempt):
                        return
                    continue
                self._finish(
                    runtime, TaskStatus.FAILED, error=f'the worker running it stopped (the lease of {worker} ran out)'
                )
                return
        finally:
            if runtime.parent_usage is not None:
                runtime.parent_usage.incr(runtime.usage)

    async def _submit(self, shared: SharedTaskStore, queue: str, runtime: TaskRuntime, attempt: int) -> bool:
        try:
            await shared.submit(queue, self._job(runtime, attempt))
        except Exception as e:
            self._finish(
                runtime, TaskStatus.FAILED, error=f'the task could not be queued for a worker: {safe_error(e)}'
            )
            return False
        return True

    def _job(self, runtime: TaskRuntime, attempt: int) -> dict[str, Any]:
        job = WorkerJob(
            task_id=runtime.id,
            owner=self.participant,
            subagent=runtime.config.name,
            description=runtime.prompt,
            attempt=attempt,
            usage_limits=limits_dict(runtime.usage_limits),
            timeout=runtime.timeout,
        )
        return {f: getattr(job, f) for f in job.__dataclass_fields__}

    def _accept_claim(self, claim: TaskClaim) -> bool:
        runtime = self._runtimes.get(claim.task_id)
        backend = None if runtime is None else runtime.backend
        record = self.store.get(claim.task_id)
        if (
            runtime is None
            or not isinstance(backend, WorkerBackend)
            or backend.worker is not None
            or claim.attempt != backend.attempt
            or record is None
            or record.is_terminal
            or record.cancel is not None
        ):
            return False
        backend.worker = claim.sender
        if record.status is TaskStatus.PENDING:
            self._changed(runtime, self.store.transition(runtime.id, TaskStatus.RUNNING))
            if runtime.timeout is not None:
                self._require_tg().start_soon(self._timeout_timer, runtime)
        return True

    def _on_worker_update(self, update: WorkerUpdate) -> None:
        runtime = self._runtimes.get(update.task_id)
        backend = None if runtime is None else runtime.backend
        if runtime is None or not isinstance(backend, WorkerBackend) or backend.worker != update.sender:
            return  # from a worker this task no longer waits on
        record = self.store.get(runtime.id)
        if record is None or record.is_terminal:
            return
        usage = update.usage
        runtime.usage = RunUsage(
            requests=usage.requests,
            tool_calls=usage.tool_calls,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        status = update.status
        if status is TaskStatus.RUNNING:
            if record.status is TaskStatus.WAITING_FOR_ANSWER:
                self._resume(runtime.id)
            self.store.update(runtime.id, usage=usage)
        elif status is TaskStatus.WAITING_FOR_ANSWER:
            if record.status is TaskStatus.RUNNING:
                self._changed(runtime, self.store.transition(runtime.id, status, question=update.question, usage=usage))
        elif status.is_terminal:
            if runtime.timed_out and status is not TaskStatus.COMPLETED:
                self._finish(runtime, TaskStatus.FAILED, error=f'timed out after {runtime.timeout:g} s')
            elif status is TaskStatus.COMPLETED:
                self._finish(runtime, status, result=update.result)
            elif status is TaskStatus.FAILED:
                self._finish(runtime, status, error=update.error, **_note(update.note))
            else:
                self._finish(runtime, status, partial_result=update.partial_result, **_note(update.note))
            backend.done.set()

    def worker_task_ended_here(self, runtime: TaskRuntime) -> None:
        """A hard cancel or timeout of a worker task that no worker runs right now (between two attempts)."""
        if runtime.timed_out:
            self._finish(runtime, TaskStatus.FAILED, error=f'timed out after {runtime.timeout:g} s')
        else:
            self._finish(runtime, TaskStatus.CANCELLED)
        if isinstance(runtime.backend, WorkerBackend):
            runtime.backend.done.set()

    def send_to_worker(self, runtime: TaskRuntime, message: Message) -> bool:
        """Send a cancel request or an answer to the worker running the task; `False` if it cannot be reached."""
        return self._send_across(message)  # if the worker is gone, the lease watch in `_run_on_worker` settles it

    async def _sweep_orphans(self, shared: SharedTaskStore) -> None:
        """Mark `FAILED` the live tasks of managers whose process died (their lease ran out).

        Every few beats, also read the other processes' live tasks again, in case an event was lost on the way.
        """
        interval = float(getattr(shared, 'heartbeat_interval', 1.0))
        beats = 0
        while True:
            beats += 1
            if beats % _REFRESH_EVERY_BEATS == 0:
                try:
                    for record in await shared.refresh():
                        self._remote_changed(record)
                except Exception:
                    logger.exception('reading the tasks of other processes again failed')
            try:
                orphans = await shared.orphans()
            except Exception:
                logger.exception('looking for orphaned tasks failed')
                orphans = []
            for record in orphans:
                try:
                    change = self.store.transition(
                        record.id,
                        TaskStatus.FAILED,
                        error=f'the process running it stopped (the lease of {record.owner} ran out)',
                    )
                except (TaskAlreadyFinishedError, TaskNotFoundError):
                    continue
                self._changed(None, change)
            await anyio.sleep(interval)

    # ----------------------------------------------------------------- called by the runner

    def on_turn(self, runtime: TaskRuntime) -> None:
        """A model turn of the task's subagent starts: update usage, and escalate an overdue soft cancel."""
        usage = usage_snapshot(runtime.usage)
        record = self.store.get(runtime.id)
        if record is None or record.usage != usage:  # the first turn has used nothing yet
            self.store.update(runtime.id, usage=usage)
        asked = runtime.soft_requested_turn
        if asked is not None and runtime.turns - asked > self.soft_cancel_grace_turns:
            self._escalate(runtime)

    def forward_run_event(self, runtime: TaskRuntime, event: Any) -> None:
        """Called by the runner, with `forward_subagent_events` on: pass one event of the subagent's run up."""
        record = self.store.get(runtime.id)
        if record is not None and self._heard(record.scope):
            self._dispatch(run_event(record, event, time.monotonic()), None)

    def finish_completed(self, runtime: TaskRuntime, output: Any) -> None:
        """The subagent's run returned `output`."""
        record = self.store.get(runtime.id)
        if record is not None and record.cancel is not None:
            self._finish(runtime, TaskStatus.CANCELLED, partial_result=render_output(output))
        else:
            self._finish(runtime, TaskStatus.COMPLETED, result=output)

    def finish_failed(self, runtime: TaskRuntime, error: str) -> None:
        """The subagent's run failed."""
        record = self.store.get(runtime.id)
        if record is not None and record.cancel is not None and record.cancel.kind == 'hard':
            self._finish(runtime, TaskStatus.CANCELLED)
        else:
            self._finish(runtime, TaskStatus.FAILED, error=error)

    def finish_cancelled(self, runtime: TaskRuntime, partial: str | None) -> None:
        """The subagent's run was stopped by its cancellation token."""
        record = self.store.get(runtime.id)
        escalated = record is not None and record.cancel is not None and record.cancel.requested_by == 'escalation'
        if runtime.transcript is not None:
            self._transcripts[runtime.id] = runtime.transcript
        self._finish(runtime, TaskStatus.CANCELLED, partial_result=partial if escalated else None)

    def _finish(self, runtime: TaskRuntime, status: TaskStatus, **fields: Any) -> None:
        record = self.store.get(runtime.id)
        waiting = TaskStatus.WAITING_FOR_ANSWER
        if record is not None and record.status is waiting and not waiting.can_become(status):
            # The run ended while a question was still recorded: it is no longer waiting.
            self._resume(runtime.id)
        fields['usage'] = usage_snapshot(runtime.usage)
        if runtime.thread_note and 'note' not in fields:
            fields['note'] = runtime.thread_note
        try:
            change = self.store.transition(runtime.id, status, **fields)
        except TaskAlreadyFinishedError:
            return
        runtime.final = change.record
        self._changed(runtime, change)
        self._prune()

    async def ask_parent(self, task_id: str, question: str) -> str:
        """Called by a subagent's `ask_parent` tool: wait for the answer (or a cancel, or the timeout)."""
        correlation_id = secrets.token_hex(8)
        message = Question(
            sender=f'task:{task_id}',
            recipient=self.participant,
            task_id=task_id,
            question=question,
            correlation_id=correlation_id,
        )
        runtime = self._runtimes.get(task_id)
        if runtime is not None:
            runtime.asking = correlation_id
        try:
            reply = await self.bus.ask(message, timeout=self.question_timeout)
        except ReplyTimeoutError:
            self._resume(task_id)
            return (
                f'No answer came within {self.question_timeout:g} s. Go on with your best judgement and say '
                'in your result which assumption you made.'
            )
        except BusClosedError:
            return 'No answer: the parent is shutting down. Stop and reply with what you have.'
        self._resume(task_id)
        assert isinstance(reply, Answer)
        return reply.answer

    def _resume(self, task_id: str) -> None:
        self._questions.pop(task_id, None)
        runtime = self._runtimes.get(task_id)
        if runtime is not None:
            runtime.asking = None  # a question still on its way to the manager is withdrawn
        record = self.store.get(task_id)
        if runtime is not None and record is not None and record.status is TaskStatus.WAITING_FOR_ANSWER:
            self._changed(runtime, self.store.transition(task_id, TaskStatus.RUNNING))

    def _on_question(self, message: Question) -> None:
        runtime = self._runtimes.get(message.task_id)
        record = self.store.get(message.task_id)
        if runtime is not None and runtime.asking != message.correlation_id:
            return  # the subagent stopped waiting (timed out) before the question got here
        if runtime is None or record is None or record.status is not TaskStatus.RUNNING:
            self.bus.reply(
                message, Answer(sender=self.participant, task_id=message.task_id, answer='The task is ending.')
            )
            return
        if record.cancel is not None:
            self.bus.reply(message, Answer(sender=self.participant, task_id=message.task_id, answer=SOFT_CANCEL_NOTICE))
            return
        self._questions[message.task_id] = message
        self._changed(
            runtime, self.store.transition(message.task_id, TaskStatus.WAITING_FOR_ANSWER, question=message.question)
        )

    # ----------------------------------------------------------------- status changes, events, notices

    def _changed(self, runtime: TaskRuntime | None, change: StatusChange) -> None:
        scope = change.record.scope
        if change.old is None:
            self._live_per_scope[scope] = self._live_per_scope.get(scope, 0) + 1
        elif change.new.is_terminal:
            left = self._live_per_scope.get(scope, 1) - 1
            if left:
                self._live_per_scope[scope] = left
            else:
                self._live_per_scope.pop(scope, None)
        if self._heard(scope):
            self._dispatch(event_for_change(change), change.record)
        if runtime is not None:
            runtime.notify()
        if change.new.is_terminal or change.new is TaskStatus.WAITING_FOR_ANSWER:
            self._notify_parent(change.record)

    def _heard(self, scope: str) -> bool:
        """Whether a task event of `scope` would reach anyone; if not, it is not even built.

        Only the in-memory bus can tell: another bus (Redis) may carry the event to other processes.
        """
        bus = self.bus
        if type(bus) is not InMemoryMessageBus or bus.has_subscribers(EVENTS_TOPIC):
            return True
        return self._delivery.forwards(scope)

    def _dispatch(self, event: TaskEvent, record: TaskRecord | None) -> None:
        if not self.bus.closed:
            self.bus.publish(TaskEventMessage(sender=self.participant, topic=EVENTS_TOPIC, event=event, record=record))
        self._delivery.forward(event)

    def _notify_parent(self, record: TaskRecord) -> None:
        """Tell the parent's model what happened, unless one of its tool calls is waiting on the task right now."""
        runtime = self._runtimes.get(record.id)
        if runtime is None or not runtime.direct_waiters:
            self._delivery.owe(record)

    def mark_seen(self, record: TaskRecord) -> None:
        """The parent's model has now seen this task's state: no notice about it is owed any more."""
        self._delivery.seen(record)

    def attach_run(
        self, ctx: RunContext[Any], scope: str, *, forward_events: bool
    ) -> AbstractAsyncContextManager[None]:
        """Register a live parent run of `scope` for the block.

        Notices (and, with `forward_events`, task events) go into it. On entry, what the scope is owed from
        earlier runs is delivered at once.
        """
        return self._delivery.attach(ctx, scope, forward_events=forward_events)

    # ----------------------------------------------------------------- reading

    def get(self, task_id: str, *, scope: str | None = None) -> TaskRecord | None:
        """A task's snapshot, or `None` if unknown, pruned, or (with `scope`) not that scope's."""
        self._prune()
        record = self.store.get(task_id)
        if record is None or (scope is not None and record.scope != scope):
            return None
        return record

    def list(self, scope: str | None = None, *, active_only: bool = False) -> list[TaskRecord]:
        """Tasks in creation order: all, or one scope's; all states, or only the live ones."""
        self._prune()
        return self.store.list(scope, active_only=active_only)

    def transcript(self, task_id: str) -> list[ModelMessage] | None:
        """The messages of a cancelled task's stopped run, for the application (never shown to the parent)."""
        return self._transcripts.get(task_id)

    def queue_position(self, task_id: str) -> int | None:
        """1-based position of a `PENDING` task among those waiting at its nesting level, else `None`."""
        record = self.store.get(task_id)
        if record is None or record.status is not TaskStatus.PENDING:
            return None
        waiting = [
            r for r in self.store.list(active_only=True) if r.status is TaskStatus.PENDING and r.depth == record.depth
        ]
        return next((i for i, r in enumerate(waiting, 1) if r.id == task_id), None)

    notice_chars: int = 2000
    """Characters of a result quoted in a notice to the parent; the rest is behind `check_task`."""

    def _notice_text(self, task_id: str) -> str | None:
        record = self.store.get(task_id)
        return None if record is None else self.describe(record, self.notice_chars)

    def describe(self, record: TaskRecord, max_chars: int) -> str:
        """One task's state in the words the parent's model reads."""
        return describe_record(record, max_chars, position=self.queue_position(record.id))

    async def wait_for(self, task_id: str, *, until_question: bool = True, timeout: float | None = None) -> TaskRecord:
        """Wait until the task is finished (or, with `until_question`, asks a question); return its snapshot.

        At the timeout it returns the task as it is then: check its status.

        Raises:
            TaskNotFoundError: unknown task.
        """
        records = await self.wait([task_id], mode='all', until_question=until_question, timeout=timeout)
        return records[0]

    async def wait(
        self,
        task_ids: Sequence[str],
        *,
        mode: WaitMode = 'all',
        until_question: bool = True,
        timeout: float | None = None,
        _direct: bool = False,
    ) -> list[TaskRecord]:
        """Wait until all (or any) of the tasks are finished or asking a question; return their snapshots.

        Returns at the timeout too, with the tasks as they are then: check the statuses.

        Raises:
            TaskNotFoundError: an id is unknown.
        """

        def settled(record: TaskRecord) -> bool:
            return record.is_terminal or (until_question and record.status is TaskStatus.WAITING_FOR_ANSWER)

        held = {task_id: self._runtimes[task_id] for task_id in task_ids if task_id in self._runtimes}
        # A task that finishes while we wait gives back its runtime and leaves its final snapshot here, so a wait on
        # many tasks keeps one record per finished task alive, not everything its run needed.
        finals: dict[str, TaskRecord] = {}

        def final(task_id: str) -> TaskRecord | None:
            if (record := finals.get(task_id)) is not None:
                return record
            runtime = held.get(task_id)
            return None if runtime is None else runtime.final

        def snapshot() -> list[TaskRecord]:
            records: list[TaskRecord] = []
            for task_id in task_ids:
                # Retention may have dropped a task that finished while we waited: its final snapshot stands.
                record = self.store.get(task_id) or final(task_id)
                if record is None:
                    raise TaskNotFoundError(task_id)
                records.append(record)
            return records

        records = snapshot()
        runtimes = list(held.values()) if _direct else []
        # Only the tasks that report a change are looked at again: a wait on many tasks costs O(changes), not
        # O(tasks) per change, and each task holds one watch of this call at a time.
        unsettled = {record.id for record in records if not settled(record)}
        if mode == 'all':
            wanted = len(unsettled)
        else:
            wanted = 1 if records and len(unsettled) == len({record.id for record in records}) else 0
        waiter = _Waiter()
        watches: dict[str, _Watch] = {}

        def watch(task_id: str) -> None:
            found = watches.get(task_id)
            if found is None:
                found = watches[task_id] = _Watch(task_id, waiter)
            if (runtime := held.get(task_id)) is not None:
                runtime.watchers.append(found)
            elif self._shared is not None:
                self._remote_watchers.setdefault(task_id, []).append(found)

        if _direct:
            for runtime in runtimes:
                runtime.direct_waiters += 1
        try:
            for task_id in unsettled:
                watch(task_id)
            with anyio.move_on_after(timeout):
                while wanted > 0:
                    await waiter.event.wait()
                    waiter.event = anyio.Event()
                    changed, waiter.changed = waiter.changed, []
                    for task_id in changed:
                        if task_id not in unsettled:
                            continue
                        record = self.store.get(task_id) or final(task_id)
                        if record is None or settled(record):
                            unsettled.discard(task_id)
                            wanted -= 1
                            if record is not None and record.is_terminal:
                                finals[task_id] = record
                                held.pop(task_id, None)
                        else:
                            watch(task_id)
        finally:
            if _direct:
                for runtime in runtimes:
                    runtime.direct_waiters -= 1
            for task_id in unsettled:
                # A watch its task has not used yet is taken back, so repeated waits on a long task leave nothing.
                found = watches[task_id]
                if (runtime := held.get(task_id)) is not None:
                    with contextlib.suppress(ValueError):
                        runtime.watchers.remove(found)
                else:
                    self._forget_remote_watcher(task_id, found)
        return snapshot()

    def _forget_remote_watcher(self, task_id: str, watcher: Watcher) -> None:
        watchers = self._remote_watchers.get(task_id)
        if watchers is not None:
            with contextlib.suppress(ValueError):
                watchers.remove(watcher)
            if not watchers:
                del self._remote_watchers[task_id]

    async def events(self, scope: str | None = None, *, max_buffer: int = 1000) -> AsyncGenerator[TaskEvent]:
        """Task events as they happen, for all scopes or one.

        First comes a [`TaskCreated`][pydantic_ai_subagents.TaskCreated] for each task that is live when you
        subscribe (with its current status), so a late subscriber knows the current state.

        Bounded: a subscriber that falls more than `max_buffer` events behind loses the oldest ones (counted on the
        subscription). Ends when the manager is closed.
        """
        await self._ensure_started()
        from ._events import TaskCreated

        subscription = self.bus.subscribe(EVENTS_TOPIC, max_buffer=max_buffer, overflow='drop_oldest')
        try:
            for record in self.store.list(scope, active_only=True):
                yield TaskCreated(
                    task_id=record.id,
                    subagent=record.subagent,
                    scope=record.scope,
                    parent_task_id=record.parent_task_id,
                    status=record.status,
                    at=record.history[-1].at if record.history else 0.0,
                    description=record.description,
                    mode=record.mode,
                )
            async for message in subscription:
                if isinstance(message, TaskEventMessage) and (scope is None or message.event.scope == scope):
                    if message.record is not None and self._shared is not None and message.sender != self.participant:
                        # Whoever reads the record on this event sees at least what the event says.
                        self._apply_remote(message.record)
                    yield message.event
        except BusClosedError:
            return
        finally:
            subscription.close()

    # ----------------------------------------------------------------- control (any thread)

    def _call(self, func: Callable[[], bool]) -> bool:
        """Run `func` on the manager's loop and return its answer; `False` once the manager is closed.

        On the loop's thread, or while the loop is not running (between two `run_sync` calls, say), it is called
        directly: nothing else touches the manager then. Otherwise it is handed to the loop through anyio's thread
        portal and this thread waits for the answer.
        """
        if self._closed:
            return False
        loop = self._loop
        if self._token is None or loop is None or threading.get_ident() == self._loop_thread or not loop.is_running():
            if loop is not None and loop.is_closed():
                return False
            return func()
        try:
            return anyio.from_thread.run_sync(func, token=self._token)
        except (anyio.RunFinishedError, RuntimeError):
            return False  # the loop stopped while the call was on its way

    def soft_cancel(self, task_id: str, *, requested_by: str = 'application') -> bool:
        """Ask a task's subagent to stop and return partial results. Safe from any thread.

        A `PENDING` task is cancelled at once; a waiting question is released with a cancellation answer. If the
        subagent has not finished within the grace period (`soft_cancel_grace` seconds or
        `soft_cancel_grace_turns` model turns), the cancel turns hard.

        Returns:
            Whether the request was accepted: `False` for an unknown or finished task, or a repeated request.
        """
        return self._call(lambda: self._soft_cancel_now(task_id, requested_by))

    def hard_cancel(self, task_id: str, *, requested_by: str = 'application') -> bool:
        """Stop a task's subagent now, and every task it started, at any depth. Safe from any thread.

        Returns at once; the status becomes `CANCELLED` when the run has really stopped
        (await [`wait_for`][pydantic_ai_subagents.TaskManager.wait_for] to know when).

        Returns:
            Whether the request was accepted: `False` for an unknown or finished task, or a repeated request.
        """
        return self._call(lambda: self._hard_cancel_by_id(task_id, requested_by))

    def answer(self, task_id: str, answer: str) -> bool:
        """Answer the question a task's subagent is waiting on. Safe from any thread.

        Returns:
            `False` if the task is unknown or not waiting for an answer.
        """
        return self._call(lambda: self._answer_now(task_id, answer))

    def _answer_now(self, task_id: str, answer: str) -> bool:
        record = self.store.get(task_id)
        if record is not None and record.cancel is not None:
            return False  # being cancelled: the subagent will not use an answer any more
        owner = self._remote_owner(record)
        if owner is not None:
            assert record is not None
            if record.status is not TaskStatus.WAITING_FOR_ANSWER:
                return False
            return self._send_to_owner(Answer(sender=self.participant, recipient=owner, task_id=task_id, answer=answer))
        runtime = self._runtimes.get(task_id)
        if runtime is not None and isinstance(runtime.backend, WorkerBackend):
            worker = runtime.backend.worker
            if worker is None or record is None or record.status is not TaskStatus.WAITING_FOR_ANSWER:
                return False
            return self.send_to_worker(
                runtime, Answer(sender=self.participant, recipient=worker, task_id=task_id, answer=answer)
            )
        question = self._questions.pop(task_id, None)
        if question is None:
            return False
        return self.bus.reply(question, Answer(sender=self.participant, task_id=task_id, answer=answer))

    def _soft_cancel_now(self, task_id: str, requested_by: str) -> bool:
        record = self.store.get(task_id)
        owner = self._remote_owner(record)
        if owner is not None:
            assert record is not None
            if record.cancel is not None or task_id in self._remote_requests:
                return False
            return self._send_to_owner(
                CancelRequest(
                    sender=self.participant, recipient=owner, task_id=task_id, kind='soft', requested_by=requested_by
                )
            )
        runtime = self._runtimes.get(task_id)
        if record is None or runtime is None or record.is_terminal or record.cancel is not None:
            return False
        record = self.store.request_cancel(task_id, 'soft', requested_by)
        if self._heard(record.scope):
            self._dispatch(cancel_requested_event(record), record)
        if record.status is TaskStatus.PENDING:
            self._cancel_pending(runtime)
            return True
        runtime.soft_requested_turn = runtime.turns
        question = self._questions.pop(task_id, None)
        if question is not None:
            self.bus.reply(question, Answer(sender=self.participant, task_id=task_id, answer=SOFT_CANCEL_NOTICE))
        try:
            self.bus.send(
                CancelRequest(
                    sender=self.participant,
                    recipient=self.participant,
                    task_id=task_id,
                    kind='soft',
                    requested_by=requested_by,
                )
            )
        except SubagentsError:
            runtime.send_soft_notice()
        self._require_tg().start_soon(self._grace_timer, runtime)
        return True

    async def _timeout_timer(self, runtime: TaskRuntime) -> None:
        """Stop a task that runs past its `timeout` (it ends `FAILED`).

        The task's own timer rather than Pydantic AI's `timeout=`, so that the stop goes through the same
        cancellation path as a hard cancel, which never lands while the run is still being set up.
        """
        assert runtime.timeout is not None
        with anyio.move_on_after(runtime.timeout):
            await runtime.stopped.wait()
            return
        record = self.store.get(runtime.id)
        if record is None or record.is_terminal:
            return
        runtime.timed_out = True
        runtime.stop()

    async def _grace_timer(self, runtime: TaskRuntime) -> None:
        with anyio.move_on_after(self.soft_cancel_grace):
            await runtime.stopped.wait()
            return
        self._escalate(runtime)

    def _escalate(self, runtime: TaskRuntime) -> None:
        record = self.store.get(runtime.id)
        if record is None or record.is_terminal:
            return
        self._hard_cancel_now(runtime, 'escalation')

    def _hard_cancel_by_id(self, task_id: str, requested_by: str) -> bool:
        record = self.store.get(task_id)
        owner = self._remote_owner(record)
        if owner is not None:
            assert record is not None
            if (record.cancel is not None and record.cancel.kind == 'hard') or self._remote_requests.get(
                task_id
            ) == 'hard':
                return False
            return self._send_to_owner(
                CancelRequest(
                    sender=self.participant, recipient=owner, task_id=task_id, kind='hard', requested_by=requested_by
                )
            )
        runtime = self._runtimes.get(task_id)
        if record is None or runtime is None or record.is_terminal:
            return False
        if record.cancel is not None and record.cancel.kind == 'hard':
            return False
        self._hard_cancel_now(runtime, requested_by)
        return True

    def _hard_cancel_now(self, runtime: TaskRuntime, requested_by: str) -> None:
        try:
            record = self.store.request_cancel(runtime.id, 'hard', requested_by)
        except (TaskAlreadyFinishedError, TaskNotFoundError):
            return
        if self._heard(record.scope):
            self._dispatch(cancel_requested_event(record), record)
        for manager, child_id in runtime.children:
            manager._hard_cancel_by_id(child_id, 'parent')
        if record.status is TaskStatus.PENDING:
            self._cancel_pending(runtime)
            return
        if runtime.inflight_sync_tools:
            names = ', '.join(sorted(runtime.inflight_sync_tools))
            runtime.thread_note = (
                f'a sync tool ({names}) was still running in a worker thread when the task was stopped; '
                'Python cannot stop a thread, so it may still finish, and its late result is discarded'
            )
        runtime.stop()

    def _cancel_pending(self, runtime: TaskRuntime) -> None:
        queue = self._queued.get(runtime.depth)
        if queue is None or queue.pop(runtime.id, None) is None:
            self._finish(runtime, TaskStatus.CANCELLED)
            runtime.cancel_scope.cancel()
            return
        if not queue:
            del self._queued[runtime.depth]
        self._finish(runtime, TaskStatus.CANCELLED)
        # It never ran, so nothing else ends it: its span, as it would have had, and its runtime.
        record = self.store.get(runtime.id) or runtime.final
        if record is not None:
            with task_span(record, runtime.trace_context, start_time=record.created_at) as span:
                end_attributes(span, record)
        runtime.stopped.set()
        self._runtimes.pop(runtime.id, None)
        self._questions.pop(runtime.id, None)

    def _prune(self) -> None:
        for task_id in self.store.prune():
            self._transcripts.pop(task_id, None)
            self._remote_requests.pop(task_id, None)
            self._delivery.forget(task_id)


class _Waiter:
    """One `wait` call: the tasks it waits on add their id to `changed` and wake it."""

    __slots__ = ('changed', 'event')

    def __init__(self) -> None:
        self.changed: list[str] = []
        self.event = anyio.Event()


class _Watch:
    """What a `wait` call leaves with one task: its `Watcher`."""

    __slots__ = ('task_id', 'waiter')

    def __init__(self, task_id: str, waiter: _Waiter) -> None:
        self.task_id = task_id
        self.waiter = waiter

    def set(self) -> None:
        self.waiter.changed.append(self.task_id)
        self.waiter.event.set()


def _note(note: str | None) -> dict[str, Any]:
    return {} if note is None else {'note': note}


def _spawn_host_task(func: Callable[[anyio.Event], Any], started: anyio.Event) -> asyncio.AbstractEventLoop:
    """Start the manager's host task, which must outlive the agent run that first used the manager.

    Pydantic AI runs agents on asyncio, so the host is an asyncio task; it is kept referenced until done.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(func(started), name='pydantic-ai-subagents manager')
    _HOST_TASKS.add(task)
    task.add_done_callback(_HOST_TASKS.discard)
    return loop


_HOST_TASKS: set[asyncio.Task[Any]] = set()
