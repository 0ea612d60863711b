"""Follow-ups started over HTTP: `POST /tasks/{task_id}/continue` starts a new task from a finished one's conversation.

A follow-up runs on its subagent's config (model, tools, deps), which the agent's toolset holds and the manager,
given a task id, does not: the app is given the configs (`subagents=`), and the parent's model and deps that the
toolset would take from the parent's run (`model=`, `deps=`).

Rules it keeps:

- The manager decides whether a task can be continued (`TaskManager.start(..., continue_task_id=...)`, which reads
  the conversation and creates the follow-up in one step). What is checked here first (a live task, a subagent the
  app was not given or has no model for) only words those refusals for HTTP, and `can_continue` only says what the
  dashboard may offer: a task that changed in between is refused by the manager, with `409`.
- The follow-up is started on the manager's own event loop: awaited there when the app shares the loop, handed to
  it when the app is served from another thread. The app never starts the manager: a manager that is not running
  answers `503`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from fastapi import HTTPException
from pydantic_ai.models import Model

from .._config import SubAgentConfig
from .._errors import (
    ManagerClosedError,
    TaskLimitError,
    TaskNotContinuableError,
    TaskNotFoundError,
    TaskRefusedError,
)
from .._manager import TaskManager, TranscriptStore
from .._state import TaskRecord, TaskStatus
from ._models import ContinueTaskBody

__all__ = ('NOT_CONFIGURED', 'FollowUps', 'subagents_by_name')

T = TypeVar('T')

NOT_CONFIGURED = (
    'this app cannot continue tasks: create it with the subagents whose tasks it may continue '
    '(subagents=toolset.subagents.values())'
)
"""The `501` reply of an app made without `subagents`."""


def subagents_by_name(subagents: Iterable[SubAgentConfig] | None) -> dict[str, SubAgentConfig] | None:
    """The configs by name, or `None` when none were given.

    Raises:
        TypeError: `subagents` is one config, a string, or holds something other than a config.
        ValueError: two configs have the same name.
    """
    if subagents is None:
        return None
    if isinstance(subagents, SubAgentConfig):
        raise TypeError(f'subagents must be a list of SubAgentConfig, not one config (subagent {subagents.name!r})')
    given = cast('object', subagents)
    if isinstance(given, str | bytes | Mapping):
        raise TypeError(f'subagents must be a list of SubAgentConfig, not {type(subagents).__name__}')
    configs: dict[str, SubAgentConfig] = {}
    for i, config in enumerate(cast('Iterable[object]', subagents)):
        if not isinstance(config, SubAgentConfig):
            raise TypeError(f'subagents[{i}] must be a SubAgentConfig, not {type(config).__name__}')
        if config.name in configs:
            raise ValueError(f'duplicate subagent name in subagents: {config.name!r}')
        configs[config.name] = config
    return configs


def _has_own_model(config: SubAgentConfig) -> bool:
    # A worker's config holds the model; the parent's copy of a worker_queue config need not.
    return (
        config.model is not None
        or (config.agent is not None and config.agent.model is not None)
        or config.worker_queue is not None
    )


async def _on_manager_loop(manager: TaskManager, start: Callable[[], Awaitable[T]]) -> T:
    loop = manager.loop
    if loop is not None and loop is asyncio.get_running_loop():
        return await start()
    if loop is None or loop.is_closed() or not loop.is_running():
        raise HTTPException(503, 'the task manager is not running')

    async def run() -> T:
        return await start()

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


class FollowUps:
    """What the app needs to start follow-ups: the subagents' configs, and the parent's model and deps."""

    def __init__(
        self,
        manager: TaskManager,
        configs: dict[str, SubAgentConfig] | None,
        *,
        model: Model | str | None,
        deps: Any,
    ) -> None:
        self.manager = manager
        self.configs = configs
        self.model = model
        self.deps = deps
        self.shared = isinstance(manager.store, TranscriptStore)
        """Whether conversations are kept by the store for every process (a follow-up reads them from it)."""

    def _config_refusal(self, record: TaskRecord) -> str | None:
        assert self.configs is not None
        config = self.configs.get(record.subagent)
        if config is None:
            return f'its subagent {record.subagent!r} is not one this app was given'
        if self.model is None and not _has_own_model(config):
            return (
                f"its subagent {record.subagent!r} has no model of its own (it uses the parent's): "
                'give the app a model for follow-ups (model=...)'
            )
        return None

    def can_continue(self, record: TaskRecord) -> bool:
        """Whether a follow-up of `record` can be started from here now (what the dashboard offers).

        With a store that shares conversations, one kept only there is offered too: it is read when the follow-up
        starts, and one the store no longer has is refused then (`409`, with the reason).
        """
        return (
            self.configs is not None
            and record.status is TaskStatus.COMPLETED
            and self._config_refusal(record) is None
            and (self.shared or bool(self.manager.transcript(record.id)))
        )

    async def start(self, record: TaskRecord, body: ContinueTaskBody) -> TaskRecord:
        """Start the follow-up of `record` on the manager's loop; return the new task's first snapshot.

        Raises:
            HTTPException: `404` the task is gone, `409` it cannot be continued (or the task is refused or over a
                limit), `501` the app has no subagents, `503` the manager is closed or not running.
        """
        if self.configs is None:
            raise HTTPException(501, NOT_CONFIGURED)
        if not record.is_terminal:
            raise HTTPException(
                409,
                f'task {record.id!r} cannot be continued: it has not finished ({record.status.value}); '
                'send it a message instead (POST .../message)',
            )
        refusal = self._config_refusal(record)
        if refusal is not None:
            raise HTTPException(409, f'task {record.id!r} cannot be continued: {refusal}')
        config = self.configs[record.subagent]
        deps = config.deps(self.deps) if config.deps is not None else self.deps
        manager = self.manager

        def start() -> Awaitable[TaskRecord]:
            return manager.start(
                config,
                body.message,
                scope=record.scope,
                mode=body.mode,
                model=self.model,
                deps=deps,
                continue_task_id=record.id,
            )

        try:
            return await _on_manager_loop(manager, start)
        except TaskNotFoundError:
            raise HTTPException(404, f'task {record.id!r} not found') from None
        except (TaskNotContinuableError, TaskLimitError) as e:
            raise HTTPException(409, str(e)) from None
        except TaskRefusedError as e:
            raise HTTPException(409, f'the follow-up was refused: {e.reason}') from None
        except ManagerClosedError:
            raise HTTPException(503, 'the task manager is closed') from None
