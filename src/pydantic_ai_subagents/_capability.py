"""The `SubAgents` capability: the subagent toolset plus the run lifecycle and the parent's event stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.tools import RunContext

from ._config import SubAgentConfig
from ._manager import OnRunEnd, TaskManager
from ._runs import apply_on_run_end, scope_of
from ._toolset import SubAgentToolset

__all__ = ('SubAgents',)


@dataclass(init=False)
class SubAgents(AbstractCapability[Any]):
    """Subagents as a Pydantic AI capability, for `Agent(capabilities=[SubAgents(...)])`.

    Compared with registering the toolset alone, the capability also forwards every
    [`TaskEvent`][pydantic_ai_subagents.TaskEvent] into the parent's own event stream (`run_stream_events`,
    `event_stream_handler`) and applies `on_run_end` around the whole run, seeing directly how it ended.
    """

    toolset: SubAgentToolset = field(repr=False)
    """The toolset the capability provides; its `manager` controls the tasks from application code."""

    def __init__(
        self,
        subagents: Sequence[SubAgentConfig] = (),
        *,
        manager: TaskManager | None = None,
        on_run_end: OnRunEnd = 'keep',
        **options: Any,
    ) -> None:
        """Create the capability.

        Arguments as for [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset].
        """
        self.toolset = SubAgentToolset(subagents, manager=manager, on_run_end=on_run_end, **options)
        self.toolset._by_capability = True  # pyright: ignore[reportPrivateUsage]

    @property
    def manager(self) -> TaskManager:
        """The task manager behind the tools."""
        return self.toolset.manager

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return None

    def get_toolset(self) -> SubAgentToolset:
        return self.toolset

    async def wrap_run(self, ctx: RunContext[Any], *, handler: Any) -> Any:
        toolset = self.toolset
        manager = toolset.manager
        await manager._ensure_started()  # pyright: ignore[reportPrivateUsage]
        runs = toolset._runs  # pyright: ignore[reportPrivateUsage]
        run = runs.enter(ctx)
        completed = False
        try:
            async with manager.attach_run(ctx, scope_of(ctx), forward_events=True):
                result = await handler()
                completed = True
                return result
        finally:
            runs.leave(ctx)
            await apply_on_run_end(manager, toolset.on_run_end, run.started, completed=completed)
