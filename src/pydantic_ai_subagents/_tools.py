"""The seven tools the parent's model gets, as methods: check the arguments, call the manager, phrase the reply.

Bad input never crashes the parent run: an unknown subagent or a malformed argument raises
[`ModelRetry`][pydantic_ai.ModelRetry] naming the valid choices; an unknown, foreign or finished task id gets a plain
status reply the model can act on. A foreign task id gets exactly the reply an unknown one gets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol, cast

import anyio
from pydantic_ai import Tool
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import FunctionToolset

from ._config import SubAgentConfig
from ._errors import TaskLimitError, TaskNotContinuableError, TaskNotFoundError, TaskRefusedError
from ._manager import TaskManager
from ._run import render_output
from ._runs import ParentRuns, scope_of
from ._state import TaskRecord, TaskStatus
from ._text import describe_record, list_line, truncate
from ._tools_steer import steer_reply

__all__ = ('INSTRUCTIONS', 'SubagentTools')

INSTRUCTIONS = (
    'Delegate work to subagents with `task`. mode="sync" waits for the result; mode="async" returns a task ID at once '
    'and you are told when it finishes, so you can run tasks in parallel. Wait with `wait_tasks`, do not poll '
    '`check_task` in a loop. If a subagent asks a question, reply with `answer_subagent`. To stop a task, prefer '
    '`soft_cancel_task` (it returns partial results); `hard_cancel_task` stops it at once with none.'
)
"""What the toolset adds to the parent's instructions."""


class ToolsOwner(Protocol):
    """What the tools read of the toolset that offers them."""

    @property
    def manager(self) -> TaskManager:
        """The manager behind the tools."""
        ...

    @property
    def subagents(self) -> Mapping[str, SubAgentConfig]:
        """The subagents by name."""
        ...

    @property
    def max_description_chars(self) -> int:
        """Longest task description accepted from the model."""
        ...

    @property
    def max_result_chars(self) -> int:
        """Characters of a result shown to the model."""
        ...

    @property
    def max_wait_seconds(self) -> float:
        """Upper bound on `wait_tasks`'s timeout."""
        ...


class SubagentTools:
    """The tools of one toolset; each method is one tool, and its docstring is what the model reads."""

    def __init__(self, owner: ToolsOwner, runs: ParentRuns) -> None:
        self.owner = owner
        self.runs = runs

    @property
    def manager(self) -> TaskManager:
        """The manager behind the tools."""
        return self.owner.manager

    @property
    def subagents(self) -> Mapping[str, SubAgentConfig]:
        """The subagents by name."""
        return self.owner.subagents

    def toolset(self) -> FunctionToolset[Any]:
        """The seven tools as a function toolset, with the toolset's instructions."""
        listing = '; '.join(f'{name}: {config.summary}' for name, config in self.subagents.items())
        return FunctionToolset(
            [
                Tool(self.task, name='task', description=f'Delegate a task to a subagent. Subagents: {listing}.'),
                self.check_task,
                self.list_active_tasks,
                self.soft_cancel_task,
                self.hard_cancel_task,
                self.answer_subagent,
                self.wait_tasks,
                self.message_task,
            ],
            # Retries count consecutive failures of one tool; an LLM deserves a few before its run is ended.
            max_retries=5,
            instructions=INSTRUCTIONS,
        )

    async def task(
        self,
        ctx: RunContext[Any],
        description: str,
        subagent_type: str,
        mode: Literal['sync', 'async'] = 'sync',
        continue_task_id: str | None = None,
    ) -> str:
        """Delegate a task to a subagent; `continue_task_id` follows up on a completed task with its conversation."""
        owner, manager = self.owner, self.manager
        description = description.strip()
        if not description:
            raise ModelRetry('description is empty: say what the subagent should do.')
        if len(description) > owner.max_description_chars:
            raise ModelRetry(
                f'description has {len(description)} characters; the limit is {owner.max_description_chars}. '
                'Shorten it.'
            )
        config = self.subagents.get(subagent_type)
        if config is None:
            shown = subagent_type if len(subagent_type) <= 64 else subagent_type[:64] + '...'
            raise ModelRetry(f'Unknown subagent_type {shown!r}. Valid: {", ".join(self.subagents)}.')
        run = self.runs.get(ctx)
        deps = config.deps(ctx.deps) if config.deps is not None else ctx.deps
        try:
            record = await manager.start(
                config,
                description,
                scope=scope_of(ctx),
                mode=mode,
                model=_parent_model(ctx),
                deps=deps,
                parent_usage=ctx.usage,
                parent_limits=ctx.usage_limits,
                ledger=None if run is None else run.ledger,
                continue_task_id=None if continue_task_id is None else continue_task_id.strip(),
            )
        except TaskLimitError as e:
            return f'Task not started: {e}. Finish or cancel tasks first, or do this work yourself.'
        except TaskNotFoundError:
            return self._unknown(ctx, continue_task_id or '')
        except TaskNotContinuableError as e:
            return f'Task not started: {e}.'
        except TaskRefusedError as e:
            return f'Task not started: {e.reason}'
        if run is not None:
            run.started.append(record.id)
        if record.mode == 'async':  # as started: the application's before_task hook may have changed it
            return f'Task started with ID: {record.id}'
        try:
            (record,) = await self._wait([record.id])
        except BaseException:
            # The parent run was cancelled (or failed) while waiting: its sync task stops with it.
            manager.hard_cancel(record.id, requested_by='parent')
            raise
        manager.mark_seen(record)
        if record.status is TaskStatus.COMPLETED:
            return truncate(render_output(record.result), owner.max_result_chars)
        if record.status is TaskStatus.WAITING_FOR_ANSWER:
            return (
                f'Task {record.id} paused: the subagent asks: {record.question}\n'
                f'Reply with answer_subagent(task_id="{record.id}", answer=...); it then goes on in the '
                'background and you are told when it finishes.'
            )
        return describe_record(record, owner.max_result_chars)

    async def check_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Get a task's status and its result, question, error or partial result."""
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        self.manager.mark_seen(record)
        return self.manager.describe(record, self.owner.max_result_chars)

    async def list_active_tasks(self, ctx: RunContext[Any]) -> str:
        """List your unfinished tasks."""
        records = self.manager.list(scope_of(ctx), active_only=True)
        if not records:
            return 'No active tasks.'
        return '\n'.join(list_line(r) for r in records)

    async def soft_cancel_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Ask a task to stop and return partial results."""
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        if refusal := _cancel_refusal(record):
            return refusal
        task_id = record.id
        if record.cancel is not None:
            return f'Cancellation already requested for task {task_id} ({record.cancel.kind}).'
        self.manager.soft_cancel(task_id, requested_by='model')
        if record.status is TaskStatus.PENDING:
            return f'Task {task_id} was queued and is now cancelled.'
        return f'Cancellation requested for task {task_id}'

    async def hard_cancel_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Stop a task now, with the tasks it started; no partial results."""
        manager = self.manager
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        if refusal := _cancel_refusal(record):
            return refusal
        task_id = record.id
        manager.hard_cancel(task_id, requested_by='model')
        with anyio.move_on_after(manager.hard_cancel_wait):
            (record,) = await self._wait([task_id], until_question=False)
        record = manager.get(task_id) or record
        if record.is_terminal:
            manager.mark_seen(record)
            return f'Task {task_id} stopped.'
        return f'Stop requested for task {task_id}; it is still finishing a blocking call and will end cancelled.'

    async def answer_subagent(self, ctx: RunContext[Any], task_id: str, answer: str) -> str:
        """Answer the question a subagent asked."""
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        if not answer.strip():
            raise ModelRetry('answer is empty: write the answer to the question.')
        task_id = record.id
        if record.status is not TaskStatus.WAITING_FOR_ANSWER or not self.manager.answer(task_id, answer):
            return f'Task {task_id} is not waiting for an answer (status: {record.status.value}).'
        return f'Answer delivered; task {task_id} goes on.'

    async def wait_tasks(
        self, ctx: RunContext[Any], task_ids: list[str], mode: Literal['all', 'any'] = 'all', timeout: float = 60
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
            limit = self.owner.max_wait_seconds
            timeout = min(max(timeout, 0.0), limit) if math.isfinite(timeout) else (limit if timeout > 0 else 0.0)
            records = await self._wait(own, mode=mode, timeout=timeout)
            for record in records:
                self.manager.mark_seen(record)
                lines.append(self.manager.describe(record, self.owner.max_result_chars))
        return '\n'.join(lines)

    async def message_task(self, ctx: RunContext[Any], task_id: str, message: str) -> str:
        """Send a running task new information or a correction; the subagent reads it at its next step."""
        return await steer_reply(self, ctx, task_id, message)

    # ----------------------------------------------------------------- helpers

    async def _wait(
        self,
        task_ids: list[str],
        *,
        mode: Literal['all', 'any'] = 'all',
        until_question: bool = True,
        timeout: float | None = None,
    ) -> list[TaskRecord]:
        # The caller reports the outcome itself, so no notice is sent about these tasks while it waits.
        waiting = self.manager._waiting  # pyright: ignore[reportPrivateUsage]
        return await waiting.wait(task_ids, mode=mode, until_question=until_question, timeout=timeout, direct=True)

    def _own(self, ctx: RunContext[Any], task_id: str) -> TaskRecord | None:
        return self.manager.get(task_id.strip(), scope=scope_of(ctx))

    def _unknown(self, ctx: RunContext[Any], task_id: str) -> str:
        if self.manager.store.was_pruned(task_id) == scope_of(ctx):
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
