"""The options of a task manager as a typed dict, so the toolset and the capability can pass them on checked."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypedDict

from .._bus import MessageBus
from .._state import TaskStore
from ._hooks import AfterTaskHook, BeforeTaskHook

__all__ = ('ManagerOptions', 'check_manager_options')


class ManagerOptions(TypedDict, total=False):
    """The options of [`TaskManager`][pydantic_ai_subagents.TaskManager], for the toolset and the capability to pass on.

    `create_subagent_toolset(..., max_concurrent_tasks=4)` is checked by the type checker against this, so a typo is
    an error there, and a `TypeError` naming the closest option at run time.
    """

    max_concurrent_tasks: int | None
    """Tasks running at once at each nesting level."""
    max_nesting_depth: int
    """How deep subagents may delegate."""
    max_tasks_per_scope: int
    """Live tasks one conversation may have."""
    default_timeout: float | None
    """Wall-clock seconds per task when its config sets none."""
    question_timeout: float
    """How long a subagent's question waits for an answer."""
    soft_cancel_grace: float
    """Seconds a soft-cancelled subagent has to wrap up."""
    soft_cancel_grace_turns: int
    """Model turns a soft-cancelled subagent may take after the notice."""
    hard_cancel_wait: float
    """How long `hard_cancel_task` waits for the run to stop."""
    max_retained: int
    """Finished tasks kept."""
    retention_seconds: float | None
    """Finished tasks older than this are dropped."""
    forward_subagent_events: bool
    """Also forward each subagent's own run events."""
    store: TaskStore | None
    """Where records live."""
    bus: MessageBus | None
    """The message bus."""
    before_task: BeforeTaskHook | None
    """Called before each task starts: allow, refuse or rewrite it."""
    after_task: AfterTaskHook | None
    """Called when each task's run ends, before anyone reads the result."""


def check_manager_options(options: Mapping[str, object], *, where: str, also: Iterable[str] = ()) -> None:
    """Refuse an option that is not one of [`ManagerOptions`][pydantic_ai_subagents.ManagerOptions].

    `where` names the caller in the message; `also` are the caller's own options, offered as corrections too.

    Raises:
        TypeError: an unknown option, with the closest known one.
    """
    known = ManagerOptions.__optional_keys__
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, [*known, *also], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f'; the manager options are {", ".join(sorted(known))}'
            raise TypeError(f'{where} got an unknown option {name!r}{hint}')
