"""Getting what background tasks did to the parent's model, without polling.

A parent run that is live in a scope is *attached*. When a task of that scope finishes or asks a question and no
tool call of the parent is waiting on it right now, a short notice is owed to the scope: it is enqueued into an
attached run (`RunContext.enqueue`, priority `asap`), or kept until the scope's next run attaches. A notice the model
has meanwhile read through a tool (`check_task`, `wait_tasks`) is taken back before it is delivered, so the model
never reads the same news twice. With the capability, task events are also forwarded into the attached run's event
stream, in order.

A notice is a [`TaskNotice`][pydantic_ai_subagents.TaskNotice], a data capability part written by the subagent: the
model reads it framed, never as the user's words, whatever the subagent's output says.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai.exceptions import UserError
from pydantic_ai.tools import RunContext

from ._events import TaskEvent
from ._notices import TaskNotice, task_notice
from ._run import render_output
from ._state import TaskRecord, TaskStatus

__all__ = ('Delivery', 'notice_of')


def notice_of(record: TaskRecord, text: str) -> TaskNotice:
    """The notice about `record` whose content, what the model reads, is `text`."""
    status = record.status
    result: str | None = None
    if status is TaskStatus.COMPLETED:
        result = render_output(record.result)
    elif status is TaskStatus.CANCELLED:
        result = record.partial_result
    return task_notice(
        text=text,
        task_id=record.id,
        subagent=record.subagent,
        status=status.value,
        result=result,
        question=record.question if status is TaskStatus.WAITING_FOR_ANSWER else None,
        error=record.error if status is TaskStatus.FAILED else None,
    )


@dataclass(kw_only=True, eq=False)
class _LiveRun:
    ctx: RunContext[Any]
    events: deque[TaskEvent] | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)


class Delivery:
    """Notices owed to each scope, the runs they can go into, and the event forwarding to those runs."""

    def __init__(self, notice: Callable[[str], TaskNotice | None]) -> None:
        """Create it; `notice(task_id)` is the notice about a task's current state (`None` if it is gone)."""
        self._notice = notice
        self._live: dict[str, list[_LiveRun]] = {}
        self._owed: dict[str, dict[str, None]] = {}
        self._queued: dict[str, tuple[_LiveRun, str]] = {}

    def clear(self) -> None:
        """Forget the attached runs (their loop is gone); notices still owed stay owed."""
        self._live.clear()
        self._queued.clear()

    def owe(self, record: TaskRecord) -> None:
        """A notice about `record` is owed to its scope: deliver it into an attached run, or keep it."""
        self._owed.setdefault(record.scope, {})[record.id] = None
        for live in self._live.get(record.scope, ()):
            if self._deliver(live, record.scope):
                return

    def seen(self, record: TaskRecord) -> None:
        """The model has read `record`'s state through a tool: drop the notice owed or still queued about it."""
        if not (record.is_terminal or record.status is TaskStatus.WAITING_FOR_ANSWER):
            return
        owed = self._owed.get(record.scope)
        if owed is not None:
            owed.pop(record.id, None)
        queued = self._queued.pop(record.id, None)
        if queued is not None:
            with contextlib.suppress(UserError):
                queued[0].ctx.dequeue(queued[1])

    def forget(self, task_id: str) -> None:
        """The task's record is gone (retention): no notice about it can be owed any more."""
        for scope, owed in list(self._owed.items()):
            owed.pop(task_id, None)
            if not owed:
                del self._owed[scope]
        self._queued.pop(task_id, None)

    def forwards(self, scope: str) -> bool:
        """Whether an attached run of `scope` forwards task events."""
        lives = self._live.get(scope)
        return lives is not None and any(live.events is not None for live in lives)

    def forward(self, event: TaskEvent) -> None:
        """Pass a task event to the attached runs of its scope that forward events."""
        for live in self._live.get(event.scope, ()):
            if live.events is not None:
                live.events.append(event)
                live.wake.set()

    def _deliver(self, live: _LiveRun, scope: str) -> bool:
        owed = self._owed.get(scope)
        if not owed:
            return True
        for task_id in list(owed):
            notice = self._notice(task_id)
            if notice is not None:
                try:
                    enqueue_id = live.ctx.enqueue(notice, priority='asap')
                except UserError:
                    return False  # that run is ending; the scope's next run gets it
                if enqueue_id is not None:
                    self._queued[task_id] = (live, enqueue_id)
            del owed[task_id]
        return True

    @asynccontextmanager
    async def attach(self, ctx: RunContext[Any], scope: str, *, forward_events: bool) -> AsyncGenerator[None]:
        """Attach a live run of `scope` for the block; deliver what the scope is owed at once."""
        live = _LiveRun(ctx=ctx, events=deque() if forward_events else None)
        self._live.setdefault(scope, []).append(live)
        try:
            self._deliver(live, scope)
            if live.events is None:
                yield
            else:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._forward_events, live)
                    try:
                        yield
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            for task_id, (queued_live, _) in list(self._queued.items()):
                if queued_live is live:
                    del self._queued[task_id]
            lives = self._live.get(scope)
            if lives is not None:
                lives.remove(live)
                if not lives:
                    del self._live[scope]

    async def _forward_events(self, live: _LiveRun) -> None:
        assert live.events is not None
        while True:
            await live.wake.wait()
            live.wake = anyio.Event()
            while live.events:
                event = live.events.popleft()
                try:
                    await live.ctx.emit(event)
                except UserError:
                    return
