"""The tools the parent agent gets. Thin: check the arguments, call the manager, phrase the reply for a model.

Bad input never crashes the parent run: an unknown subagent or a malformed argument raises
[`ModelRetry`][pydantic_ai.ModelRetry] naming the valid choices; an unknown, foreign or finished task id gets a plain
status reply the model can act on. A foreign task id gets exactly the reply an unknown one gets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import anyio
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, ToolsetTool, WrapperToolset

from ._config import GENERAL_PURPOSE, SubAgentConfig
from ._errors import TaskLimitError
from ._manager import OnRunEnd, TaskManager
from ._phrasing import describe_record, list_line, truncate
from ._runner import render_output
from ._state import TaskRecord, TaskStatus

__all__ = ('INSTRUCTIONS', 'SubAgentToolset', 'create_subagent_toolset', 'scope_of')

INSTRUCTIONS = (
    'Delegate work to subagents with `task`. mode="sync" waits for the result; mode="async" returns a task ID at once '
    'and you are told when it finishes, so you can run tasks in parallel. Wait with `wait_tasks`, do not poll '
    '`check_task` in a loop. If a subagent asks a question, reply with `answer_subagent`. To stop a task, prefer '
    '`soft_cancel_task` (it returns partial results); `hard_cancel_task` stops it at once with none.'
)
"""What the toolset adds to the parent's instructions."""


def scope_of(ctx: RunContext[Any]) -> str:
    """The scope a parent run's tasks belong to: its conversation id, else its run id."""
    return ctx.conversation_id or ctx.run_id or 'default'


@dataclass(eq=False)
class _RunState:
    """What one parent run started, for its `on_run_end` policy."""

    started: list[str] = field(default_factory=list[str])


class SubAgentToolset(AbstractToolset[Any]):
    """The subagent tools for a parent agent.

    The tools: `task`, `check_task`, `list_active_tasks`, `soft_cancel_task`, `hard_cancel_task`,
    `answer_subagent` and `wait_tasks`.

    Create it with [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset]. One instance may serve
    many agents and concurrent conversations: each conversation sees and controls only its own tasks.
    `async with toolset:` (or [`aclose`][pydantic_ai_subagents.SubAgentToolset.aclose]) stops every task at the end.
    """

    def __init__(
        self,
        subagents: Sequence[SubAgentConfig],
        *,
        manager: TaskManager | None = None,
        general_purpose: bool = True,
        on_run_end: OnRunEnd = 'keep',
        max_description_chars: int = 20_000,
        max_result_chars: int = 8_000,
        max_wait_seconds: float = 300.0,
        id: str | None = None,
        attach_runs: bool = True,
        **manager_options: Any,
    ) -> None:
        """Build the toolset; see [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset]."""
        configs = list(subagents)
        if general_purpose and all(c.name != GENERAL_PURPOSE for c in configs):
            configs.append(
                SubAgentConfig(
                    name=GENERAL_PURPOSE,
                    description='General assistant for any self-contained job; uses your model.',
                    instructions='You are a capable assistant. Do the task you are given and reply with the result.',
                )
            )
        if not configs:
            raise ValueError('no subagents: pass at least one SubAgentConfig or keep general_purpose=True')
        names = [c.name for c in configs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f'duplicate subagent names: {", ".join(duplicates)}')
        if on_run_end not in ('keep', 'wait', 'cancel'):
            raise ValueError(f"on_run_end must be 'keep', 'wait' or 'cancel', not {on_run_end!r}")
        if manager is not None and manager_options:
            raise TypeError(f'pass manager options to the TaskManager you give: {", ".join(manager_options)}')
        self.subagents: dict[str, SubAgentConfig] = {c.name: c for c in configs}
        """The subagents by name."""
        self.manager: TaskManager = manager or TaskManager(**manager_options)
        """The manager that runs and records the tasks; use it to control them from application code."""
        self.on_run_end: OnRunEnd = on_run_end
        """What happens to a run's background tasks when the run ends."""
        self.max_description_chars = max_description_chars
        """Longest task description accepted from the model."""
        self.max_result_chars = max_result_chars
        """Characters of a result shown to the model; the full result stays in the task record."""
        self.max_wait_seconds = max_wait_seconds
        """Upper bound on `wait_tasks`'s timeout."""
        self._id = id
        self._attach_runs = attach_runs
        self._runs: dict[str, _RunState] = {}
        self._tools = self._build_tools()

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def label(self) -> str:
        return f'SubAgentToolset({", ".join(self.subagents)})'

    # ----------------------------------------------------------------- toolset protocol

    async def for_run(self, ctx: RunContext[Any]) -> AbstractToolset[Any]:
        return _RunToolset(wrapped=self._tools, owner=self, ctx=ctx)

    async def __aenter__(self) -> SubAgentToolset:
        return self

    async def __aexit__(self, *args: Any) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        """Stop every remaining task and close the manager."""
        await self.manager.aclose()

    async def get_instructions(self, ctx: RunContext[Any]) -> Any:
        return await self._tools.get_instructions(ctx)

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, Any]:
        return await self._tools.get_tools(ctx)

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: Any) -> Any:
        return await self._tools.call_tool(name, tool_args, ctx, tool)

    # ----------------------------------------------------------------- the tools

    def _build_tools(self) -> FunctionToolset[Any]:
        manager = self.manager
        listing = '; '.join(f'{name}: {config.summary}' for name, config in self.subagents.items())

        async def task(
            ctx: RunContext[Any], description: str, subagent_type: str, mode: Literal['sync', 'async'] = 'sync'
        ) -> str:
            description = description.strip()
            if not description:
                raise ModelRetry('description is empty: say what the subagent should do.')
            if len(description) > self.max_description_chars:
                raise ModelRetry(
                    f'description has {len(description)} characters; the limit is {self.max_description_chars}. '
                    'Shorten it.'
                )
            config = self.subagents.get(subagent_type)
            if config is None:
                raise ModelRetry(f'Unknown subagent_type {subagent_type!r}. Valid: {", ".join(self.subagents)}.')
            scope = scope_of(ctx)
            deps = config.deps(ctx.deps) if config.deps is not None else ctx.deps
            try:
                record = await manager.start(
                    config,
                    description,
                    scope=scope,
                    mode=mode,
                    model=_parent_model(ctx),
                    deps=deps,
                    parent_usage=ctx.usage,
                    parent_limits=ctx.usage_limits,
                )
            except TaskLimitError as e:
                return f'Task not started: {e}. Finish or cancel tasks first, or do this work yourself.'
            run_state = self._runs.get(ctx.run_id or '')
            if run_state is not None:
                run_state.started.append(record.id)
            if mode == 'async':
                return f'Task started with ID: {record.id}'
            try:
                (record,) = await manager.wait([record.id], _direct=True)
            except BaseException:
                # The parent run was cancelled (or failed) while waiting: its sync task stops with it.
                manager.hard_cancel(record.id, requested_by='parent')
                raise
            manager.mark_seen(record)
            if record.status is TaskStatus.COMPLETED:
                return truncate(render_output(record.result), self.max_result_chars)
            if record.status is TaskStatus.WAITING_FOR_ANSWER:
                return (
                    f'Task {record.id} paused: the subagent asks: {record.question}\n'
                    f'Reply with answer_subagent(task_id="{record.id}", answer=...); it then goes on in the '
                    'background and you are told when it finishes.'
                )
            return describe_record(record, self.max_result_chars)

        task.__doc__ = f'Delegate a task to a subagent. Subagents: {listing}.'

        async def check_task(ctx: RunContext[Any], task_id: str) -> str:
            """Get a task's status and its result, question, error or partial result."""
            record = self._own(ctx, task_id)
            if record is None:
                return self._unknown(ctx, task_id)
            manager.mark_seen(record)
            return manager.describe(record, self.max_result_chars)

        async def list_active_tasks(ctx: RunContext[Any]) -> str:
            """List your unfinished tasks."""
            records = manager.list(scope_of(ctx), active_only=True)
            if not records:
                return 'No active tasks.'
            return '\n'.join(list_line(r) for r in records)

        async def soft_cancel_task(ctx: RunContext[Any], task_id: str) -> str:
            """Ask a task to stop and return partial results."""
            record = self._own(ctx, task_id)
            if record is None:
                return self._unknown(ctx, task_id)
            if refusal := _cancel_refusal(record):
                return refusal
            task_id = record.id
            if record.cancel is not None:
                return f'Cancellation already requested for task {task_id} ({record.cancel.kind}).'
            manager.soft_cancel(task_id, requested_by='model')
            if record.status is TaskStatus.PENDING:
                return f'Task {task_id} was queued and is now cancelled.'
            return f'Cancellation requested for task {task_id}'

        async def hard_cancel_task(ctx: RunContext[Any], task_id: str) -> str:
            """Stop a task now, with the tasks it started; no partial results."""
            record = self._own(ctx, task_id)
            if record is None:
                return self._unknown(ctx, task_id)
            if refusal := _cancel_refusal(record):
                return refusal
            task_id = record.id
            manager.hard_cancel(task_id, requested_by='model')
            with anyio.move_on_after(manager.hard_cancel_wait):
                (record,) = await manager.wait([task_id], until_question=False, _direct=True)
            record = manager.get(task_id) or record
            if record.is_terminal:
                manager.mark_seen(record)
                return f'Task {task_id} stopped.'
            return f'Stop requested for task {task_id}; it is still finishing a blocking call and will end cancelled.'

        async def answer_subagent(ctx: RunContext[Any], task_id: str, answer: str) -> str:
            """Answer the question a subagent asked."""
            record = self._own(ctx, task_id)
            if record is None:
                return self._unknown(ctx, task_id)
            if not answer.strip():
                raise ModelRetry('answer is empty: write the answer to the question.')
            task_id = record.id
            if record.status is not TaskStatus.WAITING_FOR_ANSWER or not manager.answer(task_id, answer):
                return f'Task {task_id} is not waiting for an answer (status: {record.status.value}).'
            return f'Answer delivered; task {task_id} goes on.'

        async def wait_tasks(
            ctx: RunContext[Any], task_ids: list[str], mode: Literal['all', 'any'] = 'all', timeout: float = 60
        ) -> str:
            """Wait until all (or any) of the tasks finish or ask a question; timeout in seconds."""
            if not task_ids:
                raise ModelRetry('task_ids is empty: pass the IDs of the tasks to wait for.')
            own: list[str] = []
            lines: list[str] = []
            for task_id in dict.fromkeys(task_ids):
                if (record := self._own(ctx, task_id)) is None:
                    lines.append(self._unknown(ctx, task_id))
                elif record.id not in own:
                    own.append(record.id)
            if own:
                timeout = min(max(timeout, 0.0), self.max_wait_seconds) if math.isfinite(timeout) else 0.0
                records = await manager.wait(own, mode=mode, timeout=timeout, _direct=True)
                for record in records:
                    manager.mark_seen(record)
                    lines.append(manager.describe(record, self.max_result_chars))
            return '\n'.join(lines)

        return FunctionToolset(
            [task, check_task, list_active_tasks, soft_cancel_task, hard_cancel_task, answer_subagent, wait_tasks],
            # Retries count consecutive failures of one tool; an LLM deserves a few before its run is ended.
            max_retries=5,
            instructions=INSTRUCTIONS,
        )

    def _own(self, ctx: RunContext[Any], task_id: str) -> TaskRecord | None:
        return self.manager.get(task_id.strip(), scope=scope_of(ctx))

    def _unknown(self, ctx: RunContext[Any], task_id: str) -> str:
        store = self.manager.store
        was_pruned: Callable[[str], str | None] | None = getattr(store, 'was_pruned', None)
        if was_pruned is not None and was_pruned(task_id) == scope_of(ctx):
            return f'Task {task_id} finished long ago; its record is no longer kept.'
        shown = task_id if len(task_id) <= 64 else task_id[:64] + '...'
        return f'No task with ID {shown!r} in this conversation. Use list_active_tasks to see yours.'


def _parent_model(ctx: RunContext[Any]) -> Model[Any] | None:
    model: Any = ctx.model
    if isinstance(model, Model):
        return cast('Model[Any]', model)
    return None


def _cancel_refusal(record: TaskRecord) -> str | None:
    if record.status is TaskStatus.CANCELLED:
        return f'Task {record.id} is already cancelled.'
    if record.status.is_terminal:
        return f'Task {record.id} cannot be cancelled (already done: {record.status.value}).'
    return None


@dataclass
class _RunToolset(WrapperToolset[Any]):
    """The toolset as one parent run sees it: registers the run for notices and applies `on_run_end` at its end."""

    owner: SubAgentToolset = field(repr=False)
    ctx: RunContext[Any] = field(repr=False)
    _stack: AsyncExitStack | None = field(default=None, repr=False)
    _tools: dict[str, ToolsetTool[Any]] | None = field(default=None, init=False, repr=False)

    async def for_run(self, ctx: RunContext[Any]) -> AbstractToolset[Any]:
        return self

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        # Listed once per run: the tools have no `prepare` and a fixed retry budget, so their definitions never
        # depend on the step, and building seven of them at every step of a long conversation adds up.
        if self._tools is None:
            self._tools = await self.wrapped.get_tools(ctx)
        return self._tools

    async def __aenter__(self) -> _RunToolset:
        owner = self.owner
        run_id = self.ctx.run_id or ''
        owner._runs[run_id] = _RunState()  # pyright: ignore[reportPrivateUsage]
        if owner._attach_runs:  # pyright: ignore[reportPrivateUsage]
            self._stack = AsyncExitStack()
            await owner.manager._ensure_started()  # pyright: ignore[reportPrivateUsage]
            await self._stack.enter_async_context(
                owner.manager.attach_run(self.ctx, scope_of(self.ctx), forward_events=False)
            )
        return self

    async def __aexit__(self, *args: Any) -> bool | None:
        owner = self.owner
        state = owner._runs.pop(self.ctx.run_id or '', None)  # pyright: ignore[reportPrivateUsage]
        try:
            if state is not None:
                await apply_on_run_end(owner.manager, owner.on_run_end, state.started, cancelled=args[0] is not None)
        finally:
            if self._stack is not None:
                await self._stack.aclose()
        return None


async def apply_on_run_end(manager: TaskManager, policy: OnRunEnd, task_ids: list[str], *, cancelled: bool) -> None:
    """Keep, wait for, or cancel the live tasks a run started, as its `on_run_end` policy says.

    A run that ends with an error or a cancellation cannot wait: `wait` then cancels.
    """
    if policy == 'keep' or manager.closed:
        return
    live = [t for t in task_ids if (r := manager.get(t)) is not None and not r.is_terminal]
    if not live:
        return
    if policy == 'wait' and not cancelled:
        await manager.wait(live, mode='all', until_question=False)
        return
    with anyio.CancelScope(shield=True):
        for task_id in live:
            manager.hard_cancel(task_id, requested_by='parent')
        with anyio.move_on_after(manager.hard_cancel_wait):
            await manager.wait(live, mode='all', until_question=False)


def create_subagent_toolset(
    subagents: Sequence[SubAgentConfig] = (),
    *,
    manager: TaskManager | None = None,
    general_purpose: bool = True,
    on_run_end: OnRunEnd = 'keep',
    max_description_chars: int = 20_000,
    max_result_chars: int = 8_000,
    max_wait_seconds: float = 300.0,
    id: str | None = None,
    **manager_options: Any,
) -> SubAgentToolset:
    """Create the subagent toolset to put in `Agent(toolsets=[...])`.

    Args:
        subagents: The subagents the parent may delegate to.
        manager: A [`TaskManager`][pydantic_ai_subagents.TaskManager] to share with the application; by default the
            toolset makes its own from `manager_options`.
        general_purpose: Also offer `general-purpose`, a subagent with the parent's model and no tools of its own.
        on_run_end: What happens to a run's background tasks when the run ends: `keep` (default: they go on and
            their results are delivered into the next run of the conversation), `wait`, or `cancel`.
        max_description_chars: Longest task description accepted from the model (a longer one gets a retry).
        max_result_chars: Characters of a result shown to the model; the full result stays in the record.
        max_wait_seconds: Upper bound on `wait_tasks`'s timeout.
        id: Toolset id (needed for durable execution).
        **manager_options: Options of [`TaskManager`][pydantic_ai_subagents.TaskManager] (`max_concurrent_tasks`,
            `max_nesting_depth`, `soft_cancel_grace`, ...).
    """
    return SubAgentToolset(
        subagents,
        manager=manager,
        general_purpose=general_purpose,
        on_run_end=on_run_end,
        max_description_chars=max_description_chars,
        max_result_chars=max_result_chars,
        max_wait_seconds=max_wait_seconds,
        id=id,
        **manager_options,
    )
