"""The application's say over delegation: a hook before a task starts and a hook after its run ends.

`before_task` sees each request to start a task and allows it (returns `None`), refuses it
([`RefuseTask`][pydantic_ai_subagents.RefuseTask], whose reason the parent's model reads as the tool's reply), or
rewrites it (returns a changed [`TaskRequest`][pydantic_ai_subagents.TaskRequest]: another subagent, description,
mode or limits). `after_task` sees how each run ended ([`TaskEnd`][pydantic_ai_subagents.TaskEnd]) before the task
is settled, so before the parent or anyone else can read it, and may replace its result, error or partial result.
Either may be a plain or an `async` function.

Rules it keeps:

- A hook's failure stays in its task: a `before_task` that raises refuses the task (the reply says the hook
  failed); an `after_task` that raises fails the task with the result withheld, since the hook may exist to redact
  it. Both are logged. Neither reaches the parent's run as an exception.
- `after_task` runs inside the task's cancel scope, before the settle point: the manager closing cancels it like the
  run; a slow hook delays the task's end, so keep it quick.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from pydantic_ai.usage import UsageLimits

from .._config import SubAgentConfig
from .._errors import TaskRefusedError
from .._run import Executor, Outcome, RunObserver, TaskJob, current_task, safe_error
from .._run._support import is_real_cancel
from .._state import TaskMode, TaskRecord

__all__ = (
    'AfterTaskHook',
    'BeforeTaskHook',
    'HookedExecutor',
    'RefuseTask',
    'TaskEnd',
    'TaskRequest',
    'before',
    'configured',
)

logger = logging.getLogger('pydantic_ai_subagents')


@dataclass(frozen=True, kw_only=True)
class TaskRequest:
    """A request to start a task, as `before_task` sees it; return a changed copy (`dataclasses.replace`) to rewrite.

    Only `config`, `description`, `mode`, `usage_limits` and `timeout` can be rewritten; the rest is for reading.
    """

    config: SubAgentConfig
    """The subagent that would run the task; another config runs it elsewhere."""
    description: str
    """The work, as the subagent will read it."""
    mode: TaskMode
    """`sync` (the parent waits) or `async`."""
    usage_limits: UsageLimits | None
    """The task's budget (the config's); still bounded by what the parent has left."""
    timeout: float | None
    """Wall-clock seconds the task may take (the config's); `None` uses the manager's default."""
    scope: str
    """The conversation asking."""
    parent_task_id: str | None = None
    """The task whose subagent asks, for a nested task."""
    continue_task_id: str | None = None
    """The completed task this one would follow up on, if any."""


@dataclass(frozen=True, kw_only=True)
class RefuseTask:
    """What `before_task` returns to refuse a task."""

    reason: str
    """Why, for the parent's model: it reads `Task not started: <reason>`."""


@dataclass(frozen=True, kw_only=True)
class TaskEnd:
    """How a task's run ended, as `after_task` sees it before anyone else; return a changed copy to replace it."""

    task: TaskRecord
    """The task as it is before it is settled (its status is not terminal yet)."""
    kind: Literal['completed', 'failed', 'stopped']
    """`completed` (with `output`), `failed` (with `error`) or `stopped` (cancelled, maybe with `partial_result`)."""
    output: Any = None
    """The subagent's output, for a completed run."""
    error: str | None = None
    """Why the run failed."""
    partial_result: str | None = None
    """What a stopped run left behind."""


BeforeTaskHook: TypeAlias = Callable[
    [TaskRequest], Awaitable[TaskRequest | RefuseTask | None] | TaskRequest | RefuseTask | None
]
"""`before_task(request)`: `None` allows, a [`RefuseTask`][pydantic_ai_subagents.RefuseTask] refuses, a changed
[`TaskRequest`][pydantic_ai_subagents.TaskRequest] rewrites."""

AfterTaskHook: TypeAlias = Callable[[TaskEnd], Awaitable[TaskEnd | None] | TaskEnd | None]
"""`after_task(end)`: `None` keeps the run's end as it is, a changed [`TaskEnd`][pydantic_ai_subagents.TaskEnd]
replaces its output, error or partial result."""


async def _call(hook: Callable[[Any], Any], argument: Any) -> Any:
    result = hook(argument)
    if inspect.isawaitable(result):
        result = await result
    return result


async def before(
    hook: BeforeTaskHook,
    config: SubAgentConfig,
    description: str,
    mode: TaskMode,
    scope: str,
    continue_task_id: str | None,
) -> TaskRequest:
    """The request as the hook lets it start.

    Raises:
        TaskRefusedError: the hook refused the task, failed, or returned something else.
    """
    parent = current_task.get()
    request = TaskRequest(
        config=config,
        description=description,
        mode=mode,
        usage_limits=config.usage_limits,
        timeout=config.timeout,
        scope=scope,
        parent_task_id=None if parent is None else parent.id,
        continue_task_id=continue_task_id,
    )
    try:
        answer = await _call(hook, request)
    except Exception as e:
        logger.exception('the before_task hook failed')
        reason = f'the application could not check it (its before_task hook failed: {safe_error(e)})'
        raise TaskRefusedError(reason) from e
    if answer is None:
        return request
    if isinstance(answer, RefuseTask):
        raise TaskRefusedError(answer.reason)
    if isinstance(answer, TaskRequest):
        return answer
    logger.error('the before_task hook returned %s, not None, a TaskRequest or a RefuseTask', type(answer).__name__)
    raise TaskRefusedError('the application could not check it (its before_task hook returned no decision)')


def configured(request: TaskRequest) -> SubAgentConfig:
    """The config that runs the request: the request's, with the limits it asks for."""
    config = request.config
    if request.usage_limits is config.usage_limits and request.timeout == config.timeout:
        return config
    return replace(config, usage_limits=request.usage_limits, timeout=request.timeout)


class HookedExecutor:
    """An executor whose runs' ends pass through `after_task` before the task is settled."""

    def __init__(self, inner: Executor, hook: AfterTaskHook, record_of: Callable[[str], TaskRecord | None]) -> None:
        self.inner = inner
        self.hook = hook
        self.record_of = record_of

    async def execute(self, job: TaskJob, observer: RunObserver) -> Outcome:
        """Run the job on the inner executor, then let the hook see (and maybe replace) how it ended."""
        outcome = await self.inner.execute(job, observer)
        record = self.record_of(job.id)
        if record is None:
            return outcome
        end = TaskEnd(
            task=record, kind=outcome.kind, output=outcome.output, error=outcome.error, partial_result=outcome.partial
        )
        try:
            changed = await _call(self.hook, end)
        except BaseException as e:
            if is_real_cancel(e):
                raise
            logger.exception('the after_task hook failed on task %s', job.id)
            return Outcome(
                kind='failed', error=f'its result was withheld: the after_task hook failed ({safe_error(e)})'
            )
        if changed is None or changed is end:
            return outcome
        if not isinstance(changed, TaskEnd):
            logger.error('the after_task hook returned %s, not None or a TaskEnd', type(changed).__name__)
            return Outcome(kind='failed', error='its result was withheld: the after_task hook returned no TaskEnd')
        # The conversation is kept only when the result is: a redacted result must not be read back through it.
        transcript = outcome.transcript if changed.output is outcome.output else None
        return replace(
            outcome,
            kind=changed.kind,
            output=changed.output,
            error=changed.error,
            partial=changed.partial_result,
            transcript=transcript,
        )
