"""Starting a task: the limits an LLM cannot get around, where the task runs, and its first record."""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Callable
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage, UsageLimits

from .._budget import Ledger, bounded_limits
from .._config import SubAgentConfig
from .._errors import TaskLimitError
from .._otel import capture_context
from .._run import Cascade, Executor, TaskJob, current_task, task_agent
from .._state import TaskMode, TaskRecord, TaskUsage
from ._runtime import TaskRuntime

__all__ = ('Starter',)

_NO_USAGE = TaskUsage()
"""The usage of every new record: one immutable object shared by all of them rather than one each."""
_DEFAULT_LIMITS = UsageLimits()
"""The limits of a task with none of its own and no parent's to respect; nothing changes a job's limits."""


class Starter:
    """Builds new tasks for one manager; caches each config's agent while the config lives.

    The cache holds its configs weakly: a config passed once to `manager.start` (and its agent) goes when nothing
    else holds it, that is once its task has ended and the caller dropped it.
    """

    def __init__(
        self,
        *,
        owner: str,
        cascade: Cascade,
        max_nesting_depth: int,
        max_tasks_per_scope: int,
        default_timeout: float | None,
        forward_events: bool,
        live_in: Callable[[str], int],
        executor_for: Callable[[SubAgentConfig], Executor],
    ) -> None:
        self.owner = owner
        self.cascade = cascade
        self.max_nesting_depth = max_nesting_depth
        self.max_tasks_per_scope = max_tasks_per_scope
        self.default_timeout = default_timeout
        self.forward_events = forward_events
        self._live_in = live_in
        self._executor_for = executor_for
        self._agents: dict[int, tuple[weakref.ref[SubAgentConfig], Agent[Any, Any]]] = {}

    def new_task(
        self,
        config: SubAgentConfig,
        description: str,
        *,
        scope: str,
        mode: TaskMode,
        model: Model | str | None,
        deps: Any,
        parent_usage: RunUsage | None,
        parent_limits: UsageLimits | None,
        agent: Agent[Any, Any] | None,
        ledger: Ledger | None,
        history: tuple[str | None, list[ModelMessage]] | None = None,
    ) -> tuple[TaskRuntime, TaskRecord]:
        """The runtime and first record of a new task, checked against the limits.

        `history` is the id (if known here) and conversation of the finished task this one continues.

        Raises:
            TaskLimitError: the nesting depth or the per-scope task limit is reached.
        """
        parent = current_task.get()
        depth = 1 if parent is None else parent.depth + 1
        if depth > self.max_nesting_depth:
            raise TaskLimitError(f'nesting depth limit reached ({self.max_nesting_depth})')
        live = self._live_in(scope)
        if live >= self.max_tasks_per_scope:
            raise TaskLimitError(f'{live} tasks are live in this conversation; the limit is {self.max_tasks_per_scope}')
        if parent is not None:
            ledger = parent.ledger
        elif ledger is None and parent_usage is not None:
            ledger = Ledger(parent_usage, parent_limits)
        task_id = secrets.token_hex(12)
        if config.usage_limits is None and (parent_limits is None or parent_usage is None):
            limits = _DEFAULT_LIMITS
        else:
            limits = bounded_limits(config.usage_limits, parent_limits, parent_usage)
        job = TaskJob(
            id=task_id,
            config=config,
            agent=agent or self._agent_for(config),
            prompt=description,
            model=config.model or (None if config.agent is not None and config.agent.model is not None else model),
            deps=deps,
            usage_limits=limits,
            depth=depth,
            forward_events=self.forward_events,
            message_history=None if history is None else history[1],
        )
        job.ledger = None if ledger is None else ledger.child(job.usage, limits)
        runtime = TaskRuntime(
            job=job,
            id=job.id,
            depth=job.depth,
            executor=self._executor_for(config),
            timeout=config.timeout or self.default_timeout,
            parent_usage=parent_usage,
            trace_context=capture_context(),
        )
        record = TaskRecord(
            id=task_id,
            subagent=config.name,
            description=description,
            mode=mode,
            scope=scope,
            parent_task_id=None if parent is None else parent.id,
            depth=depth,
            owner=self.owner,
            continued_from=None if history is None else history[0],
            usage=_NO_USAGE,
        )
        if parent is not None:
            parent.add_child(self.cascade, task_id)
        return runtime, record

    def _agent_for(self, config: SubAgentConfig) -> Agent[Any, Any]:
        # Built once per config: building an agent costs more than running a short task.
        key = id(config)
        cached = self._agents.get(key)
        if cached is not None and cached[0]() is config:
            return cached[1]
        agents = self._agents

        def forget(ref: weakref.ref[SubAgentConfig]) -> None:
            entry = agents.get(key)
            if entry is not None and entry[0] is ref:
                del agents[key]

        agent = task_agent(config)
        agents[key] = (weakref.ref(config, forget), agent)
        return agent
