"""Per parent run: what it started, its request budget, and its `on_run_end` policy, whichever way it ended.

Rules it keeps:

- One entry per live parent run, shared by the toolset and the capability that registered it, so what the run
  started is known in one place.
- `on_run_end` keeps its word for a run that completes (`wait` waits, `cancel` cancels), fails or is cancelled
  (token, deadline, outer cancel): a run that did not complete cannot wait, so `wait` then cancels. With the
  capability the run's end is seen directly (`wrap_run`); registered as a toolset alone, the end is read from the
  exception in flight as the toolset is left, or from the cancellation of the task leaving it, never from the
  arguments of `__aexit__` (Pydantic AI's combined toolset leaves its members without them).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai.tools import RunContext

from ._budget import PARENT_RESERVE, Ledger
from ._manager import OnRunEnd, TaskManager

__all__ = ('ParentRun', 'ParentRuns', 'apply_on_run_end', 'ending_badly', 'scope_of')


def scope_of(ctx: RunContext[Any]) -> str:
    """The scope a parent run's tasks belong to: its conversation id, else its run id."""
    return ctx.conversation_id or ctx.run_id or 'default'


@dataclass(eq=False)
class ParentRun:
    """One live parent run."""

    ledger: Ledger
    """The budget the run's tasks draw their requests from."""
    started: list[str] = field(default_factory=list[str])
    """The tasks the run started, for its `on_run_end` policy."""
    jobs: dict[tuple[str, str], str] = field(default_factory=dict[tuple[str, str], str])
    """The latest task the run gave each (subagent, description), so a job already done is not run again."""
    users: int = 0
    in_flight: BaseException | None = None
    """The exception already being handled when the run began (not the run's own)."""


class ParentRuns:
    """The live parent runs of one toolset, by run id."""

    def __init__(self) -> None:
        self._runs: dict[str, ParentRun] = {}

    def enter(self, ctx: RunContext[Any]) -> ParentRun:
        """Register the run (or join its registration); pair with [`leave`][..ParentRuns.leave]."""
        run = self._runs.get(ctx.run_id or '')
        if run is None:
            run = self._runs[ctx.run_id or ''] = ParentRun(
                ledger=Ledger(ctx.usage, ctx.usage_limits, reserve=PARENT_RESERVE), in_flight=sys.exc_info()[1]
            )
        run.users += 1
        return run

    def leave(self, ctx: RunContext[Any]) -> ParentRun | None:
        """One registration of the run ends; the run (when it was the last) is returned and forgotten."""
        run = self._runs.get(ctx.run_id or '')
        if run is None:
            return None
        run.users -= 1
        if run.users > 0:
            return None
        del self._runs[ctx.run_id or '']
        return run

    def get(self, ctx: RunContext[Any]) -> ParentRun | None:
        """The live run of `ctx`, if registered."""
        return self._runs.get(ctx.run_id or '')


def ending_badly(run: ParentRun) -> bool:
    """Whether the run is being left by an exception or a cancellation rather than having completed."""
    in_flight = sys.exc_info()[1]
    if in_flight is not None and in_flight is not run.in_flight:
        return True
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def apply_on_run_end(manager: TaskManager, policy: OnRunEnd, task_ids: list[str], *, completed: bool) -> None:
    """Keep, wait for, or cancel the live tasks a run started, as its `on_run_end` policy says.

    A run that did not complete cannot wait: `wait` then cancels.
    """
    if policy == 'keep' or manager.closed:
        return
    live = [t for t in task_ids if (r := manager.get(t)) is not None and not r.is_terminal]
    if not live:
        return
    if policy == 'wait' and completed:
        try:
            await manager.wait(live, mode='all', until_question=False)
        except BaseException:
            # Cancelled while waiting (an outer cancel, a deadline): the run is not waiting any more.
            await _cancel(manager, live)
            raise
        return
    await _cancel(manager, live)


async def _cancel(manager: TaskManager, live: list[str]) -> None:
    with anyio.CancelScope(shield=True):
        for task_id in live:
            manager.hard_cancel(task_id, requested_by='parent')
        with anyio.move_on_after(manager.hard_cancel_wait):
            await manager.wait(live, mode='all', until_question=False)
