"""The tools the parent's model gets, as methods: check the arguments, call the manager, phrase the reply.

Bad input never crashes the parent run: an unknown subagent or a malformed argument raises
[`ModelRetry`][pydantic_ai.ModelRetry] naming the valid choices; an unknown, foreign or finished task id gets a plain
status reply the model can act on. A foreign task id gets exactly the reply an unknown one gets.
"""

from __future__ import annotations

import copy
import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal, Protocol, cast

import anyio
from pydantic_ai import Tool
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext, ToolDefinition
from pydantic_ai.toolsets import FunctionToolset

from ._config import SubAgentConfig
from ._errors import TaskLimitError, TaskNotContinuableError, TaskNotFoundError, TaskRefusedError
from ._manager import TaskManager
from ._run import render_output
from ._runs import ParentRun, ParentRuns, scope_of
from ._state import TaskRecord, TaskStatus
from ._text import describe_record, list_line, truncate
from ._tools_steer import steer_reply

__all__ = (
    'CONTINUE_TASK_ID',
    'FOLLOW_UP',
    'INSTRUCTIONS',
    'REPEAT_NOTE',
    'RepeatGuard',
    'SubagentTools',
    'started_reply',
    'sync_reply',
    'task_description',
)

INSTRUCTIONS = (
    'You can delegate work to subagents with `task`, one job per task: for several jobs, start several tasks. '
    'A description is the whole job: the subagent sees nothing else. continue_task_id follows up on a finished task. '
    'mode="sync" waits and returns the result. mode="async" returns a task ID at once, so tasks run in parallel; '
    'get their results with `wait_tasks` before you answer. When a task asks you a question, reply with '
    '`answer_subagent`. To stop a task, `soft_cancel_task` keeps its partial result; `hard_cancel_task` stops it at '
    'once with none. Each tool reply says what you can do next.'
)
"""What the toolset adds to the parent's instructions."""


CONTINUE_TASK_ID = 'ID of a completed task to revise or extend; its subagent remembers it.'
"""The description of `task`'s `continue_task_id` in its schema: a small model left it out without one, and started
the job again in a new task that knew nothing of the first."""


def task_description(summaries: Mapping[str, str]) -> str:
    """`task`'s description: what it does, then each subagent's name and one-line summary."""
    listing = '; '.join(f'{name}: {summary}' for name, summary in summaries.items())
    return f'Delegate one job. Subagents: {listing}' + ('' if listing.endswith('.') else '.')


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
        """The eight tools as a function toolset, with the toolset's instructions.

        `subagent_type` is an enum of the configured names in `task`'s schema, so a model (or `TestModel`) can only
        pick a valid one; a name outside it still gets a `ModelRetry` listing the valid ones. `continue_task_id` has
        a description there too (`CONTINUE_TASK_ID`).
        """
        summaries = {name: config.summary for name, config in self.subagents.items()}
        task = Tool(self.task, name='task', description=task_description(summaries))
        schema = copy.deepcopy(task.function_schema.json_schema)
        schema['properties']['subagent_type']['enum'] = list(self.subagents)
        schema['properties']['continue_task_id']['description'] = CONTINUE_TASK_ID

        async def with_names(ctx: RunContext[Any], tool_def: ToolDefinition) -> ToolDefinition:
            return replace(tool_def, parameters_json_schema=schema)

        task.prepare = with_names
        return FunctionToolset(
            [
                task,
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
        continue_task_id: str = '',
    ) -> str:
        """Delegate one job to a subagent.

        The model learns what `description` is from the toolset's instructions, and `continue_task_id` from them and
        from its description in the schema.
        """
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
            raise ModelRetry(f'Unknown subagent_type {_shown(subagent_type)}. Valid: {", ".join(self.subagents)}.')
        run = self.runs.get(ctx)
        job = (subagent_type, description)
        if run is not None and not continue_task_id.strip() and (done := self._done_before(run, job)) is not None:
            return done
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
                continue_task_id=continue_task_id.strip() or None,
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
            run.jobs[job] = record.id
        if record.mode == 'async':  # as started: the application's before_task hook may have changed it
            return started_reply(record.id)
        return await self._until_settled_or_asked(record)

    async def check_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Get a task's status and result."""
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        self.manager.mark_seen(record)
        reply = self.manager.describe(record, self.owner.max_result_chars)
        if not record.is_terminal and record.status is not TaskStatus.WAITING_FOR_ANSWER:
            reply += f'\n{_wait_hint(record.id)}'
        return reply

    async def list_active_tasks(self, ctx: RunContext[Any]) -> str:
        """List your live tasks."""
        records = self.manager.list(scope_of(ctx), active_only=True)
        if not records:
            return 'No active tasks.'
        count = f'{len(records)} active task{"s" if len(records) > 1 else ""}:'
        return '\n'.join([count, *(list_line(r) for r in records)])

    async def soft_cancel_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Stop a task, keeping its partial result."""
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        if record.is_terminal:
            return self._ended(record)
        task_id = record.id
        if record.cancel is not None:
            return f'Cancellation already requested for task {task_id} ({record.cancel.kind}). {_wait_hint(task_id)}'
        self.manager.soft_cancel(task_id, requested_by='model')
        if record.status is TaskStatus.PENDING:
            return f'Task {task_id} was queued and is now cancelled.'
        return (
            f'Cancellation requested for task {task_id}. wait_tasks(task_ids=["{task_id}"]) returns its partial result.'
        )

    async def hard_cancel_task(self, ctx: RunContext[Any], task_id: str) -> str:
        """Stop a task now; no partial result."""
        manager = self.manager
        record = self._own(ctx, task_id)
        if record is None:
            return self._unknown(ctx, task_id)
        if record.is_terminal:
            return self._ended(record)
        task_id = record.id
        manager.hard_cancel(task_id, requested_by='model')
        with anyio.move_on_after(manager.hard_cancel_wait):
            (record,) = await self._wait([task_id], until_question=False)
        record = manager.get(task_id) or record
        if not record.is_terminal:
            return f'Stop requested for task {task_id}; it is still finishing a blocking call and will end cancelled.'
        manager.mark_seen(record)
        if record.status is TaskStatus.CANCELLED:
            return f'Task {task_id} stopped.'
        return manager.describe(record, self.owner.max_result_chars)

    async def answer_subagent(self, ctx: RunContext[Any], task_id: str, answer: str) -> str:
        """Reply to a question from one of your tasks; not to answer the user."""
        record = self._own(ctx, task_id)
        if record is None:
            if self._pruned(ctx, task_id) or self.manager.list(scope_of(ctx), active_only=True):
                return f'{self._unknown(ctx, task_id)} {_NOT_FOR_THE_USER}'
            return f'No task with ID {_shown(task_id)} asks you anything. {_NOT_FOR_THE_USER}'
        if not answer.strip():
            raise ModelRetry('answer is empty: write the answer to the question.')
        task_id = record.id
        if record.status is not TaskStatus.WAITING_FOR_ANSWER or not self.manager.answer(task_id, answer):
            record = self.manager.get(task_id) or record
            if record.is_terminal:
                return f'Task {task_id} asks nothing now. {self._ended(record)}\n{_NOT_FOR_THE_USER}'
            return (
                f'Task {task_id} asks nothing now; it is {record.status.value}. {_wait_hint(task_id)}\n'
                f'{_NOT_FOR_THE_USER}'
            )
        if record.mode == 'sync':
            # A sync task's question interrupted the wait for its result: answering resumes that wait.
            return await self._until_settled_or_asked(record, answered=True)
        return f'Answer delivered; task {task_id} goes on in the background. {_wait_hint(task_id)}'

    async def wait_tasks(
        self, ctx: RunContext[Any], task_ids: list[str], mode: Literal['all', 'any'] = 'all', timeout: float = 60
    ) -> str:
        """Wait for tasks to finish or ask something; returns results. timeout: seconds."""
        if not task_ids:
            raise ModelRetry('task_ids is empty: pass the IDs of the tasks to wait for.')
        own: list[str] = []
        unknown: list[str] = []
        for task_id in dict.fromkeys(task_ids):
            if (record := self._own(ctx, task_id)) is None:
                unknown.append(task_id)
            elif record.id not in own:
                own.append(record.id)
        lines = self._unknown_many(ctx, unknown)
        if own:
            limit = self.owner.max_wait_seconds
            timeout = min(max(timeout, 0.0), limit) if math.isfinite(timeout) else (limit if timeout > 0 else 0.0)
            records = await self._wait(own, mode=mode, timeout=timeout)
            for record in records:
                self.manager.mark_seen(record)
                lines.append(self.manager.describe(record, self.owner.max_result_chars))
            running = [r.id for r in records if not r.is_terminal and r.status is not TaskStatus.WAITING_FOR_ANSWER]
            if running:
                lines.append(_still_running(running))
        return '\n'.join(lines)

    async def message_task(self, ctx: RunContext[Any], task_id: str, message: str) -> str:
        """Tell a running task something new."""
        return await steer_reply(self, ctx, task_id, message)

    # ----------------------------------------------------------------- helpers

    async def _until_settled_or_asked(self, record: TaskRecord, *, answered: bool = False) -> str:
        """Wait, as a sync task does, until the task ends or asks; the reply carries its result or its question.

        After an answer, the question answered does not count: the wait is for the task's end or its next question.
        """
        manager = self.manager
        asked = _questions_asked(record) if answered else 0
        try:
            while True:
                (record,) = await self._wait([record.id])
                if record.status is not TaskStatus.WAITING_FOR_ANSWER or _questions_asked(record) > asked:
                    break
                # Still on the answered question: only when another process owns the task, until its copy moves on.
                await anyio.sleep(0.05)
        except BaseException:
            # The parent run was cancelled (or failed) while waiting: its sync task stops with it.
            manager.hard_cancel(record.id, requested_by='parent')
            raise
        manager.mark_seen(record)
        if record.status is TaskStatus.COMPLETED:
            reply = sync_reply(truncate(render_output(record.result), self.owner.max_result_chars), record.id)
            # After an answer, a bare result does not read as the task's end: a model would start the job again.
            return f'Answer delivered; task {record.id} completed. Result:\n{reply}' if answered else reply
        if record.status is TaskStatus.WAITING_FOR_ANSWER:
            return (
                f'Task {record.id} paused: the subagent asks: {record.question}\n'
                f'It waits for your reply: call answer_subagent(task_id="{record.id}", answer=...) now; it returns '
                'the result.'
            )
        return describe_record(record, self.owner.max_result_chars)

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

    def _done_before(self, run: ParentRun, job: tuple[str, str]) -> str | None:
        """The reply to a job this run already gave the same subagent and saw completed: that result, not a rerun.

        A model that misses that its job is done starts it again and again; one that wants a fresh run can say so.
        """
        task_id = run.jobs.get(job)
        record = None if task_id is None else self.manager.get(task_id)
        if record is None or record.status is not TaskStatus.COMPLETED:
            return None
        self.manager.mark_seen(record)
        result = truncate(render_output(record.result), self.owner.max_result_chars)
        return (
            f'Not started: you gave this same job to {job[0]} as task {record.id}, and it completed. Result:\n'
            f'{result}\nUse this result. To run the job anew, change the description.'
        )

    def _own(self, ctx: RunContext[Any], task_id: str) -> TaskRecord | None:
        return self.manager.get(task_id.strip(), scope=scope_of(ctx))

    def _ended(self, record: TaskRecord) -> str:
        """The reply about a task that has ended: its end, with its result."""
        self.manager.mark_seen(record)
        return self.manager.describe(record, self.owner.max_result_chars)

    def _pruned(self, ctx: RunContext[Any], task_id: str) -> bool:
        return self.manager.store.was_pruned(task_id) == scope_of(ctx)

    def _unknown(self, ctx: RunContext[Any], task_id: str) -> str:
        if self._pruned(ctx, task_id):
            return f'Task {task_id} finished long ago; its record is no longer kept.'
        return f'No task with ID {_shown(task_id)} in this conversation. {self._yours(ctx)}'

    def _unknown_many(self, ctx: RunContext[Any], task_ids: list[str]) -> list[str]:
        """One line per unknown id for the first few, then one line for the rest: the reply stays bounded."""
        if len(task_ids) <= _MAX_UNKNOWN_LINES:
            return [self._unknown(ctx, t) for t in task_ids]
        shown = ', '.join(_shown(t) for t in task_ids[:_MAX_UNKNOWN_LINES])
        rest = len(task_ids) - _MAX_UNKNOWN_LINES
        return [f'No tasks with IDs {shown} and {rest} more in this conversation. {self._yours(ctx)}']

    def _yours(self, ctx: RunContext[Any]) -> str:
        """What the model can use instead of an unknown id: its own live tasks, or how to start one."""
        records = self.manager.list(scope_of(ctx), active_only=True)
        if not records:
            return 'You have no active tasks: start one with task.'
        ids = ', '.join(f'{r.id} ({r.subagent}, {r.status.value})' for r in records[:_MAX_UNKNOWN_LINES])
        more = f' and {len(records) - _MAX_UNKNOWN_LINES} more' if len(records) > _MAX_UNKNOWN_LINES else ''
        return f'Your active tasks: {ids}{more}.'


class RepeatGuard:
    """Breaks a model's loop: a call that repeats one of the last few calls and gets the same reply is told so.

    Models loop in cycles too (`task`, `answer_subagent`, `task`, ...), so the last few calls count, not only the
    previous one.
    """

    __slots__ = ('_recent',)

    def __init__(self) -> None:
        self._recent: deque[tuple[str, dict[str, Any], object]] = deque(maxlen=_REPEAT_WINDOW)

    def check(self, name: str, args: dict[str, Any], reply: object) -> object:
        """The reply to give for this call: `reply`, with a note when a recent identical call got it too."""
        # A sync task that gives the same result again is a repeat, though each task has an id of its own.
        call = (name, args, _FOLLOW_UP_LINE.sub('', reply) if isinstance(reply, str) else reply)
        repeated = call in self._recent
        self._recent.append(call)
        if not repeated or not isinstance(reply, str):
            return reply
        return f'{reply}\n{REPEAT_NOTE}'


_REPEAT_WINDOW = 4
"""How many of the latest calls a call is compared with."""

REPEAT_NOTE = (
    'You made this same call a moment ago and got this same reply: repeating it changes nothing. '
    'Take another step, or answer the user.'
)
"""Added to the reply of a call that repeats a recent one and gets the same reply."""

_MAX_UNKNOWN_LINES = 5
"""Unknown ids named one by one in a reply; the rest are counted."""


def started_reply(task_id: str) -> str:
    """The reply to an async start: the id, and the next steps."""
    return (
        f'Task started with ID: {task_id}\nIts result is not here yet: call wait_tasks(task_ids=["{task_id}"]) to get '
        'it (start your other tasks first, so they run in parallel).'
    )


def sync_reply(result: str, task_id: str) -> str:
    """The reply of a sync task that completed: its result, then its id, so the model can follow up on it."""
    return result + FOLLOW_UP.format(task_id=task_id)


FOLLOW_UP = '\n\n(To revise or extend this result, call task with continue_task_id="{task_id}".)'
"""The line after a completed sync task's result (the model never learns a sync task's id otherwise): the id once,
and short, since every later request of the conversation sends it again."""

_FOLLOW_UP_LINE = re.compile(re.escape(FOLLOW_UP).replace(re.escape('{task_id}'), r'\S+') + r'\Z')


def _questions_asked(record: TaskRecord) -> int:
    return sum(1 for t in record.history if t.status is TaskStatus.WAITING_FOR_ANSWER)


_NOT_FOR_THE_USER = 'To answer the user, write your answer as plain text, without a tool call.'
"""Models mistake `answer_subagent` for the way to answer the user: a reply that has no question to take says so."""


def _still_running(task_ids: list[str]) -> str:
    """What a model can do about tasks a wait left running, with the calls spelled out: wait more, or stop them."""
    if len(task_ids) == 1:
        task = f'task_id="{task_ids[0]}"'
        return (
            f'Still running. To wait more, call wait_tasks again. To stop it: soft_cancel_task({task}) keeps its '
            f'partial result, hard_cancel_task({task}) stops it at once.'
        )
    return (
        'Tasks still running. To wait more, call wait_tasks again. To stop one: soft_cancel_task keeps its partial '
        'result, hard_cancel_task stops it at once.'
    )


def _wait_hint(task_id: str) -> str:
    return f'wait_tasks(task_ids=["{task_id}"]) returns its result.'


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + '...')


def _parent_model(ctx: RunContext[Any]) -> Model[Any] | None:
    model: Any = ctx.model
    if isinstance(model, Model):
        return cast('Model[Any]', model)
    return None
