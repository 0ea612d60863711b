"""The task manager: the front over the collaborators that run, limit, wait on, question, cancel and settle tasks.

Rules it keeps:

- Structured: every task runs in the manager's own anyio task group. Closing the manager
  ([`aclose`][pydantic_ai_subagents.TaskManager.aclose], or leaving `async with manager:`) hard-cancels what is
  still live and waits for it, so nothing is orphaned. Starting it is idempotent and safe under concurrency.
- A failure's blast radius is one task: whatever a task's run raises ends that task through the settle point, and
  nothing else; the task group only ever sees the manager's own cancellation.
- All state changes happen on the manager's event loop. The application entry points (`soft_cancel`, `hard_cancel`,
  `answer`, `message_task`) may be called from any thread: off the loop they hand the call to it and wait for its
  answer.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, Literal

import anyio
import anyio.abc
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RunUsage, UsageLimits

from .._budget import Ledger
from .._bus import InMemoryMessageBus, MessageBus
from .._config import SubAgentConfig
from .._delivery import notice_of
from .._events import EVENTS_TOPIC, TaskEvent
from .._memory_store import InMemoryTaskStore
from .._notices import TaskNotice
from .._run import Outcome
from .._state import TaskMode, TaskRecord, TaskStatus, TaskStore
from .._text import describe_record
from ._continuing import load_conversation
from ._feed import task_events
from ._hooks import AfterTaskHook, BeforeTaskHook, HookedExecutor, before, configured
from ._lifecycle import Host, check_duration
from ._parts import Parts
from ._waiting import WaitMode

__all__ = ('OnRunEnd', 'TaskManager', 'WaitMode')

OnRunEnd = Literal['keep', 'wait', 'cancel']
"""What happens to a run's background tasks when the run ends: they go on (`keep`), the run waits for them
(`wait`), or they are cancelled (`cancel`)."""

MANAGER_PREFIX = 'manager:'
"""Each manager's participant name on the bus is this prefix and a random id (`TaskManager.participant`)."""


class TaskManager:
    """Owns subagent tasks: runs them, limits them, keeps their records and lets code watch and control them.

    A toolset created by [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset] makes one; an
    application can make its own and pass it in, to control the tasks from outside the agent (another thread, an
    HTTP handler). Use it as `async with TaskManager() as manager:` or call
    [`aclose`][pydantic_ai_subagents.TaskManager.aclose] when done; if neither is done, it starts itself on first
    use on the running asyncio loop.
    """

    notice_chars: int = 2000
    """Characters of a result quoted in a notice to the parent; the rest is behind `check_task`."""

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
        before_task: BeforeTaskHook | None = None,
        after_task: AfterTaskHook | None = None,
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
                is pending (a sync tool in a thread can delay it); also the grace between terminating an isolated
                task's process and killing it.
            max_retained: Finished tasks kept for `check_task` and the application (oldest dropped first).
            retention_seconds: Finished tasks older than this are dropped; `None`: only `max_retained` applies.
            forward_subagent_events: Also send each subagent's own run events (text deltas, tool calls and
                results), wrapped in [`TaskRunEvent`][pydantic_ai_subagents.TaskRunEvent], to `events()` subscribers
                and the parent's event stream. Off by default: it streams every model response of every subagent.
            store: Where records live; the in-memory store by default.
            bus: The message bus; the in-memory bus by default.
            before_task: Called before each task starts, with its [`TaskRequest`][pydantic_ai_subagents.TaskRequest]:
                return `None` to allow it, [`RefuseTask`][pydantic_ai_subagents.RefuseTask] to refuse it (the
                parent's model reads the reason), or a changed request to rewrite it. Plain or `async`.
            after_task: Called when each task's run ends, before anyone can read the result, with its
                [`TaskEnd`][pydantic_ai_subagents.TaskEnd]: return `None` to keep it or a changed one to replace the
                result (redact it). Plain or `async`. A hook that raises refuses (before) or fails (after) that task.

        Raises:
            ValueError: a limit or a duration is out of range (durations must be finite numbers).
        """
        if max_concurrent_tasks is not None and max_concurrent_tasks < 1:
            raise ValueError('max_concurrent_tasks must be at least 1 (or None)')
        if max_nesting_depth < 1:
            raise ValueError('max_nesting_depth must be at least 1')
        if max_tasks_per_scope < 1:
            raise ValueError('max_tasks_per_scope must be at least 1')
        if soft_cancel_grace_turns < 0:
            raise ValueError('soft_cancel_grace_turns must be at least 0')
        check_duration('default_timeout', default_timeout, optional=True)
        check_duration('question_timeout', question_timeout, zero=True)
        check_duration('soft_cancel_grace', soft_cancel_grace, zero=True)
        check_duration('hard_cancel_wait', hard_cancel_wait, zero=True)
        check_duration('retention_seconds', retention_seconds, optional=True)
        self.max_concurrent_tasks = max_concurrent_tasks
        self.max_nesting_depth = max_nesting_depth
        self.max_tasks_per_scope = max_tasks_per_scope
        self.default_timeout = default_timeout
        self.hard_cancel_wait = hard_cancel_wait
        self.forward_subagent_events = forward_subagent_events
        self.before_task = before_task
        """The application's hook before each task starts (see `__init__`)."""
        self.after_task = after_task
        """The application's hook when each task's run ends (see `__init__`)."""
        self.store: TaskStore = (
            store
            if store is not None
            else InMemoryTaskStore(max_retained=max_retained, retention_seconds=retention_seconds)
        )
        self.bus: MessageBus = bus if bus is not None else InMemoryMessageBus()
        self.participant = f'{MANAGER_PREFIX}{secrets.token_hex(8)}'
        """This manager's name on the bus: its mailbox, the `owner` of its tasks' records, the sender of its events."""
        parts = Parts.build(
            store=self.store,
            bus=self._get_bus,
            participant=self.participant,
            notice=self._notice,
            cascade=self,
            max_concurrent_tasks=max_concurrent_tasks,
            max_nesting_depth=max_nesting_depth,
            max_tasks_per_scope=max_tasks_per_scope,
            default_timeout=default_timeout,
            question_timeout=question_timeout,
            soft_cancel_grace=soft_cancel_grace,
            soft_cancel_grace_turns=soft_cancel_grace_turns,
            hard_cancel_wait=hard_cancel_wait,
            forward_subagent_events=forward_subagent_events,
        )
        self._delivery, self._settler, self._questions = parts.delivery, parts.settler, parts.questions
        self._waiting, self._sharing, self._cancelling = parts.waiting, parts.sharing, parts.cancelling
        self._running, self._starter = parts.running, parts.starter
        self._inbox = parts.inbox(self._get_bus, self.participant)
        self._steering = self._inbox.steering
        settler = parts.settler
        self._host = Host(
            serve=self._serve,
            stop_all=self._stop_all,
            leave=self._leave,
            forget_loop=self._forget_loop,
            has_live_tasks=lambda: bool(settler.runtimes),
        )

    def _get_bus(self) -> MessageBus:
        return self.bus

    @property
    def soft_cancel_grace(self) -> float:
        """Seconds a soft-cancelled subagent has to wrap up before the cancel turns hard."""
        return self._cancelling.grace

    @property
    def soft_cancel_grace_turns(self) -> int:
        """Model turns a soft-cancelled subagent may take after the notice before the cancel turns hard."""
        return self._cancelling.grace_turns

    @property
    def question_timeout(self) -> float:
        """How long a subagent's question waits for an answer before it is told to go on alone."""
        return self._questions.timeout

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> TaskManager:
        await self._ensure_started()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        """Whether [`aclose`][pydantic_ai_subagents.TaskManager.aclose] was called."""
        return self._host.closed

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the manager's tasks run on; `None` until it first starts."""
        return self._host.loop

    async def aclose(self) -> None:
        """Hard-cancel every live task, wait for all of them to stop, and close the bus. Idempotent."""
        await self._host.aclose(self.bus.aclose)

    async def _ensure_started(self) -> anyio.abc.TaskGroup:
        return await self._host.ensure_started()

    async def _serve(self, tg: anyio.abc.TaskGroup) -> None:
        """Start the manager's own tasks in its new task group: the mailbox and, on a shared store, the sharing."""
        self._running.tg = self._cancelling.tg = self._sharing.tg = tg
        tg.start_soon(self._inbox.serve, self.bus.open_mailbox(self.participant, max_buffer=100_000, overflow='error'))
        shared = self._sharing.shared
        if shared is not None:
            await shared.register_owner(self.participant)
            remote = self.bus.subscribe(EVENTS_TOPIC, max_buffer=100_000, overflow='drop_oldest')
            tg.start_soon(self._sharing.serve_events, remote)
            tg.start_soon(self._sharing.sweep_orphans, shared)

    async def _stop_all(self) -> None:
        await self._running.stop_all(self.hard_cancel_wait, lambda runtime: self._cancelling.hard_now(runtime, 'close'))

    async def _leave(self) -> None:
        self._running.tg = self._cancelling.tg = self._sharing.tg = None
        shared = self._sharing.shared
        if shared is not None:
            await shared.unregister_owner(self.participant)

    def _forget_loop(self) -> None:
        """Move to a new loop: the old one was closed (its tasks died with it) or is idle with no live task."""
        for runtime in list(self._settler.runtimes.values()):
            self._settler.settle(runtime, Outcome(kind='failed', error='its event loop was closed'))
        self._settler.runtimes.clear()
        self._questions.clear()
        self._settler.live_per_scope.clear()
        self._delivery.clear()
        self._running.slots.clear()
        if type(self.bus) is InMemoryMessageBus:
            self.bus = InMemoryMessageBus()

    def _call(self, func: Any) -> bool:
        return self._host.call(func)

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
        ledger: Ledger | None = None,
        continue_task_id: str | None = None,
        message_history: Sequence[ModelMessage] | None = None,
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
            ledger: The request budget of the parent run (the toolset passes it); inside a subagent, its task's.
            continue_task_id: A completed task of the same scope and subagent to follow up on: the new task's run
                starts from that task's conversation, and its record links to it
                ([`continued_from`][pydantic_ai_subagents.TaskRecord.continued_from]).
            message_history: A conversation to start from when no task is continued (a worker's follow-up job).

        Raises:
            TaskLimitError: the nesting depth or the per-scope task limit is reached.
            TaskRefusedError: the `before_task` hook refused the task (or failed).
            TaskNotFoundError: `continue_task_id` is not a task of this scope.
            TaskNotContinuableError: that task is still live, failed, of another subagent, or its conversation is
                no longer kept.
            ManagerClosedError: the manager is closed.
        """
        await self._ensure_started()
        if self.before_task is not None:
            request = await before(self.before_task, config, description, mode, scope, continue_task_id)
            if request.config is not config:
                agent = None
            config, description, mode = configured(request), request.description, request.mode
        history = None
        if continue_task_id is not None:
            messages = await load_conversation(self._settler, continue_task_id, scope=scope, subagent=config.name)
            history = (continue_task_id, messages)
        elif message_history is not None:
            history = (None, list(message_history))
        runtime, record = self._starter.new_task(
            config,
            description,
            scope=scope,
            mode=mode,
            model=model,
            deps=deps,
            parent_usage=parent_usage,
            parent_limits=parent_limits,
            agent=agent,
            ledger=ledger,
            history=history,
        )
        if self.after_task is not None:
            runtime.executor = HookedExecutor(runtime.executor, self.after_task, self.store.get)
        first = self._settler.begin(runtime, record)
        self._running.admit(runtime)
        self._settler.prune()
        return first

    def cascade_hard_cancel(self, task_id: str) -> None:
        """Hard-cancel a task because the task that started it ended (the cascade)."""
        self._cancelling.hard(task_id, 'parent')

    # ----------------------------------------------------------------- reading

    def get(self, task_id: str, *, scope: str | None = None) -> TaskRecord | None:
        """A task's snapshot, or `None` if unknown, pruned, or (with `scope`) not that scope's."""
        self._settler.prune()
        record = self.store.get(task_id)
        if record is None or (scope is not None and record.scope != scope):
            return None
        return record

    def list(self, scope: str | None = None, *, active_only: bool = False) -> list[TaskRecord]:
        """Tasks in creation order: all, or one scope's; all states, or only the live ones."""
        self._settler.prune()
        return self.store.list(scope, active_only=active_only)

    def transcript(self, task_id: str) -> list[ModelMessage] | None:
        """The messages of a finished task's run, where they are kept, for the application (never shown to the parent).

        Kept while the record is retained, for a run in this process or in a child process of it; a completed
        task's conversation is what a follow-up (`start(..., continue_task_id=...)`) starts from. The newest few
        hundred are the run's own message objects; older ones are read back from Pydantic AI's JSON format, as
        equal new objects on each call.
        """
        return self._settler.transcripts.get(task_id)

    def queue_position(self, task_id: str) -> int | None:
        """1-based position of a `PENDING` task among those waiting at its nesting level, else `None`."""
        record = self.store.get(task_id)
        if record is None or record.status is not TaskStatus.PENDING:
            return None
        waiting = [
            r for r in self.store.list(active_only=True) if r.status is record.status and r.depth == record.depth
        ]
        return next((i for i, r in enumerate(waiting, 1) if r.id == task_id), None)

    def _notice(self, task_id: str) -> TaskNotice | None:
        record = self.store.get(task_id)
        return None if record is None else notice_of(record, self.describe(record, self.notice_chars))

    def describe(self, record: TaskRecord, max_chars: int) -> str:
        """One task's state in the words the parent's model reads."""
        return describe_record(record, max_chars, position=self.queue_position(record.id))

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
    ) -> list[TaskRecord]:
        """Wait until all (or any) of the tasks are finished or asking a question; return their snapshots.

        Returns at the timeout too, with the tasks as they are then: check the statuses.

        Raises:
            TaskNotFoundError: an id is unknown.
        """
        return await self._waiting.wait(task_ids, mode=mode, until_question=until_question, timeout=timeout)

    async def events(self, scope: str | None = None, *, max_buffer: int = 1000) -> AsyncGenerator[TaskEvent]:
        """Task events as they happen, for all scopes or one.

        First comes a [`TaskCreated`][pydantic_ai_subagents.TaskCreated] for each task that is live when you
        subscribe (with its current status), so a late subscriber knows the current state.

        Bounded: a subscriber that falls more than `max_buffer` events behind loses the oldest ones (counted on the
        subscription). Ends when the manager is closed.
        """
        await self._ensure_started()
        async for event in task_events(self.bus, self.store, self._sharing, scope, max_buffer):
            yield event

    # ----------------------------------------------------------------- control (any thread)

    def soft_cancel(self, task_id: str, *, requested_by: str = 'application') -> bool:
        """Ask a task's subagent to stop and return partial results. Safe from any thread.

        A `PENDING` task is cancelled at once; a waiting question is released with a cancellation answer. If the
        subagent has not finished within the grace period (`soft_cancel_grace` seconds or
        `soft_cancel_grace_turns` model turns), the cancel turns hard.

        Returns:
            Whether the request was accepted: `False` for an unknown or finished task, or a repeated request.
        """
        return self._call(lambda: self._cancelling.soft(task_id, requested_by))

    def hard_cancel(self, task_id: str, *, requested_by: str = 'application') -> bool:
        """Stop a task's subagent now, and every task it started, at any depth. Safe from any thread.

        Returns at once; the status becomes `CANCELLED` when the run has really stopped
        (await [`wait_for`][pydantic_ai_subagents.TaskManager.wait_for] to know when).

        Returns:
            Whether the request was accepted: `False` for an unknown or finished task, or a repeated request.
        """
        # On the loop's thread, `Cancelling.hard` itself (which holds the collector off for its work): no closure or
        # partial to build, no layer between.
        if self._host.runs_here():
            return self._cancelling.hard(task_id, requested_by)
        return self._call(partial(self._cancelling.hard, task_id, requested_by))

    def answer(self, task_id: str, answer: str) -> bool:
        """Answer the question a task's subagent is waiting on. Safe from any thread.

        Returns:
            `False` if the task is unknown or not waiting for an answer.
        """
        return self._call(lambda: self._inbox.answer(task_id, answer))

    def message_task(self, task_id: str, message: str) -> bool:
        """Send a message into a task's running subagent (steering) without stopping it. Safe from any thread.

        The subagent reads it with its next model request; if it was about to finish, it gets one more turn for
        it. A message sent to a `PENDING` task is held and read as its run starts. Each message taken is recorded
        on the task ([`TaskRecord.messages`][pydantic_ai_subagents.TaskRecord.messages]).

        Returns:
            Whether the message was taken: `False` for an unknown or finished task, a task being cancelled, a task
            of another process without a shared store, or a run that ended just now (its result follows). With a
            shared store, a task of another process gets the message through its owner (taken once sent).
        """
        return self._call(lambda: self._steering.send(task_id, message))

    def steer_refusal(self, record: TaskRecord) -> str | None:
        """Why [`message_task`][pydantic_ai_subagents.TaskManager.message_task] would refuse the task, or `None`."""
        return self._steering.refusal(record)
