"""The `SubAgents` capability: the subagent toolset plus the run lifecycle and the parent's event stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack, cast

from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.tools import RunContext

from ._config import SubAgentConfig, SubAgentSpec, config_from_spec
from ._manager import ManagerOptions, OnRunEnd, TaskManager, check_manager_options
from ._runs import apply_on_run_end, scope_of
from ._toolset import TOOLSET_OPTIONS, SubAgentToolset

__all__ = ('SubAgents',)


@dataclass(init=False)
class SubAgents(AbstractCapability[Any]):
    """Subagents as a Pydantic AI capability, for `Agent(capabilities=[SubAgents(...)])`.

    Compared with registering the toolset alone, the capability also forwards every
    [`TaskEvent`][pydantic_ai_subagents.TaskEvent] into the parent's own event stream (`run_stream_events`,
    `event_stream_handler`) and applies `on_run_end` around the whole run, seeing directly how it ended.

    It can be named in an agent spec, as `SubAgents` (pass `custom_capability_types=[SubAgents]` to
    `Agent.from_spec`); see [`from_spec`][pydantic_ai_subagents.SubAgents.from_spec].
    """

    toolset: SubAgentToolset = field(repr=False)
    """The toolset the capability provides; its `manager` controls the tasks from application code."""

    def __init__(
        self,
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
    ) -> None:
        """Create the capability.

        Arguments as for [`create_subagent_toolset`][pydantic_ai_subagents.create_subagent_toolset].

        Raises:
            TypeError: an unknown option (the message names the closest one), or manager options with `manager`.
            ValueError: no subagents, duplicate names, or a limit out of range.
        """
        check_manager_options(manager_options, where='SubAgents()', also=TOOLSET_OPTIONS)
        self.toolset = SubAgentToolset(
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
        self.toolset._by_capability = True  # pyright: ignore[reportPrivateUsage]

    @property
    def manager(self) -> TaskManager:
        """The task manager behind the tools."""
        return self.toolset.manager

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return 'SubAgents'

    @classmethod
    def from_spec(
        cls,
        subagents: Sequence[SubAgentSpec] = (),
        *,
        general_purpose: bool = True,
        on_run_end: OnRunEnd = 'keep',
        max_description_chars: int = 20_000,
        max_result_chars: int = 8_000,
        max_wait_seconds: float = 300.0,
        id: str | None = None,
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
    ) -> SubAgents:
        """Build the capability from an agent spec: subagents described by plain values, and the options.

        Each subagent is a [`SubAgentSpec`][pydantic_ai_subagents.SubAgentSpec]: its name, description,
        instructions, model name and the other plain fields of a config, checked as a config built in code is. The
        store and the bus are objects, so a spec's capability uses the in-memory ones; build it in code to share them.

        YAML form:

            capabilities:
              - SubAgents:
                  subagents:
                    - name: researcher
                      description: Finds sources on a topic.
                      instructions: You research the topic you are given and list your sources.
                      model: openai:gpt-5-mini
                  max_concurrent_tasks: 4
                  on_run_end: wait

        Raises:
            ValueError: a subagent entry is not valid (the message names it and the field), or an option is out of
                range.
        """
        given = cast('object', subagents)  # spec arguments reach here unvalidated
        if isinstance(given, str | bytes) or not isinstance(given, Sequence):
            raise ValueError(f'`subagents` in the agent spec must be a list of subagents, got {subagents!r}')
        configs = [config_from_spec(entry, i) for i, entry in enumerate(subagents)]
        return cls(
            configs,
            general_purpose=general_purpose,
            on_run_end=on_run_end,
            max_description_chars=max_description_chars,
            max_result_chars=max_result_chars,
            max_wait_seconds=max_wait_seconds,
            id=id,
            max_concurrent_tasks=max_concurrent_tasks,
            max_nesting_depth=max_nesting_depth,
            max_tasks_per_scope=max_tasks_per_scope,
            default_timeout=default_timeout,
            question_timeout=question_timeout,
            soft_cancel_grace=soft_cancel_grace,
            soft_cancel_grace_turns=soft_cancel_grace_turns,
            hard_cancel_wait=hard_cancel_wait,
            max_retained=max_retained,
            retention_seconds=retention_seconds,
            forward_subagent_events=forward_subagent_events,
        )

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
