"""The subagent toolset: the eight tools, and the per-run registration for notices and `on_run_end`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Unpack, cast

from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset

from ._config import GENERAL_PURPOSE, SubAgentConfig
from ._manager import ManagerOptions, OnRunEnd, TaskManager, check_manager_options
from ._runs import ParentRuns, apply_on_run_end, ending_badly, scope_of
from ._state import SharedTaskStore
from ._tools import INSTRUCTIONS, RepeatGuard, SubagentTools

__all__ = ('INSTRUCTIONS', 'TOOLSET_OPTIONS', 'SubAgentToolset', 'create_subagent_toolset', 'scope_of')

TOOLSET_OPTIONS = (
    'manager',
    'general_purpose',
    'on_run_end',
    'max_description_chars',
    'max_result_chars',
    'max_wait_seconds',
    'id',
)
"""The toolset's own options, besides the subagents and the manager's options."""


class SubAgentToolset(AbstractToolset[Any]):
    """The subagent tools for a parent agent.

    The tools: `task`, `check_task`, `list_active_tasks`, `soft_cancel_task`, `hard_cancel_task`,
    `answer_subagent` and `wait_tasks`.

    Create it with [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset]. One instance may serve
    many agents and concurrent conversations: each conversation sees and controls only its own tasks.
    `async with toolset:` (or [`aclose`][pydantic_ai_subagents.SubAgentToolset.aclose]) stops every task at the end.
    """

    subagents: dict[str, SubAgentConfig]
    """The subagents by name."""
    manager: TaskManager
    """The manager that runs and records the tasks; use it to control them from application code."""
    on_run_end: OnRunEnd
    """What happens to a run's background tasks when the run ends."""
    max_description_chars: int
    """Longest task description accepted from the model."""
    max_result_chars: int
    """Characters of a result shown to the model; the full result stays in the task record."""
    max_wait_seconds: float
    """Upper bound on `wait_tasks`'s timeout."""

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
        **manager_options: Unpack[ManagerOptions],
    ) -> None:
        """Build the toolset; see [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset]."""
        configs = _configs(subagents)
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
        if max_description_chars < 1 or max_result_chars < 1:
            raise ValueError('max_description_chars and max_result_chars must be at least 1')
        if not (math.isfinite(max_wait_seconds) and max_wait_seconds > 0):
            raise ValueError(f'max_wait_seconds must be a finite number of seconds > 0, got {max_wait_seconds!r}')
        check_manager_options(manager_options, where='SubAgentToolset()', also=TOOLSET_OPTIONS)
        if manager is not None and manager_options:
            raise TypeError(f'pass manager options to the TaskManager you give: {", ".join(manager_options)}')
        self.subagents = {c.name: c for c in configs}
        self.manager = manager or TaskManager(**manager_options)
        _check_worker_queues(configs, self.manager)
        self.on_run_end = on_run_end
        self.max_description_chars = max_description_chars
        self.max_result_chars = max_result_chars
        self.max_wait_seconds = max_wait_seconds
        self._id = id
        self._runs = ParentRuns()
        self._by_capability = False
        """Set by the `SubAgents` capability, which then registers runs and keeps `on_run_end` itself."""
        self._tools = SubagentTools(self, self._runs).toolset()

    @property
    def id(self) -> str | None:
        return self._id

    @property
    def label(self) -> str:
        return f'SubAgentToolset({", ".join(self.subagents)})'

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


def _configs(subagents: object) -> list[SubAgentConfig]:
    if isinstance(subagents, SubAgentConfig):
        raise TypeError(
            f'subagents must be a sequence of SubAgentConfig, not one config: write `[SubAgentConfig(...)]` '
            f'(subagent {subagents.name!r})'
        )
    if isinstance(subagents, str | bytes) or not isinstance(subagents, Iterable):
        raise TypeError(f'subagents must be a list or tuple of SubAgentConfig, not {type(subagents).__name__}')
    configs = list(cast('Iterable[object]', subagents))
    for i, config in enumerate(configs):
        if not isinstance(config, SubAgentConfig):
            raise TypeError(f'subagents[{i}] must be a SubAgentConfig, not {type(config).__name__}')
    return cast('list[SubAgentConfig]', configs)


def _check_worker_queues(configs: Sequence[SubAgentConfig], manager: TaskManager) -> None:
    """A subagent run by workers needs a manager whose store the workers share: found now, not at its first task."""
    if isinstance(manager.store, SharedTaskStore):
        return
    for config in configs:
        if config.worker_queue is not None:
            raise ValueError(
                f'subagent {config.name!r}: worker_queue={config.worker_queue!r} sends its tasks to worker processes, '
                'which needs a task manager on a shared store and bus (see '
                "pydantic_ai_subagents.redis.redis_task_manager), but this manager's store is "
                f'{type(manager.store).__name__}: pass such a manager as `manager=`, or leave worker_queue unset'
            )


@dataclass
class _RunToolset(WrapperToolset[Any]):
    """The toolset as one parent run sees it: registers the run for notices and applies `on_run_end` at its end."""

    owner: SubAgentToolset = field(repr=False)
    ctx: RunContext[Any] = field(repr=False)
    _stack: AsyncExitStack | None = field(default=None, repr=False)
    _tools: dict[str, ToolsetTool[Any]] | None = field(default=None, init=False, repr=False)
    _repeats: RepeatGuard = field(default_factory=RepeatGuard, init=False, repr=False)

    async def for_run(self, ctx: RunContext[Any]) -> AbstractToolset[Any]:
        return self

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        # Listed once per run: the tools have no `prepare` and a fixed retry budget, so their definitions never
        # depend on the step, and building seven of them at every step of a long conversation adds up. Their replies
        # are plain text, so the definitions carry no return schema: Pydantic AI would copy each one at every request
        # to drop it.
        if self._tools is None:
            listed = await self.wrapped.get_tools(ctx)
            self._tools = {
                name: replace(tool, tool_def=replace(tool.tool_def, return_schema=None))
                for name, tool in listed.items()
            }
        return self._tools

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        reply = await self.wrapped.call_tool(name, tool_args, ctx, tool)
        return self._repeats.check(name, tool_args, reply)

    async def __aenter__(self) -> _RunToolset:
        owner = self.owner
        if not owner._by_capability:  # pyright: ignore[reportPrivateUsage]
            await owner.manager._ensure_started()  # pyright: ignore[reportPrivateUsage]
        owner._runs.enter(self.ctx)  # pyright: ignore[reportPrivateUsage]
        if not owner._by_capability:  # pyright: ignore[reportPrivateUsage]
            self._stack = AsyncExitStack()
            await self._stack.enter_async_context(
                owner.manager.attach_run(self.ctx, scope_of(self.ctx), forward_events=False)
            )
        return self

    async def __aexit__(self, *args: Any) -> bool | None:
        owner = self.owner
        runs = owner._runs  # pyright: ignore[reportPrivateUsage]
        run = runs.get(self.ctx)
        completed = run is not None and not ending_badly(run)
        run = runs.leave(self.ctx)
        try:
            if run is not None and not owner._by_capability:  # pyright: ignore[reportPrivateUsage]
                await apply_on_run_end(owner.manager, owner.on_run_end, run.started, completed=completed)
        finally:
            if self._stack is not None:
                await self._stack.aclose()
        return None


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
    **manager_options: Unpack[ManagerOptions],
) -> SubAgentToolset:
    """Create the subagent toolset to put in `Agent(toolsets=[...])`.

    Args:
        subagents: The subagents the parent may delegate to.
        manager: A [`TaskManager`][pydantic_ai_subagents.TaskManager] to share with the application; by default the
            toolset makes its own from `manager_options`.
        general_purpose: Also offer `general-purpose`, a subagent with the parent's model and no tools of its own.
        on_run_end: What happens to a run's background tasks when the run ends: `keep` (default: they go on and
            their results are delivered into the next run of the conversation), `wait` (the run waits for them; a
            run that fails or is cancelled cancels them instead), or `cancel`.
        max_description_chars: Longest task description accepted from the model (a longer one gets a retry).
        max_result_chars: Characters of a result shown to the model; the full result stays in the record.
        max_wait_seconds: Upper bound on `wait_tasks`'s timeout.
        id: Toolset id (needed for durable execution).
        **manager_options: Options of [`TaskManager`][pydantic_ai_subagents.TaskManager] (`max_concurrent_tasks`,
            `max_nesting_depth`, `soft_cancel_grace`, ...), typed as
            [`ManagerOptions`][pydantic_ai_subagents.ManagerOptions]: a type checker catches a misspelt one.

    Raises:
        TypeError: an unknown option (the message names the closest one), or manager options with `manager`.
        ValueError: no subagents, duplicate names, or a limit out of range.
    """
    check_manager_options(manager_options, where='create_subagent_toolset()', also=TOOLSET_OPTIONS)
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
