"""The messages between a task's parent process and the child process that runs it (process isolation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage, UsageLimits

from .._config import SubAgentConfig

__all__ = (
    '_Answer',
    '_Done',
    '_Failed',
    '_Job',
    '_Message',
    '_Notice',
    '_Partial',
    '_Progress',
    '_Question',
    '_Retrying',
    '_RunEvent',
)


@dataclass(frozen=True, kw_only=True)
class _Job:
    """Everything the child needs to run the task, pickled once by the parent."""

    task_id: str
    depth: int
    config: SubAgentConfig
    prompt: str
    model: Model | str | None
    deps: Any
    usage_limits: UsageLimits | None
    can_ask_questions: bool
    forward_events: bool
    message_history: list[ModelMessage] | None = None


@dataclass(frozen=True, kw_only=True)
class _Progress:
    """Child to parent: a model turn starts (`turn`), or a model response came in."""

    turn: bool
    usage: RunUsage
    partial: str | None
    """What a stop would leave as partial result; only sent once a soft cancel has been asked for."""


@dataclass(frozen=True, kw_only=True)
class _Partial:
    """Child to parent: the soft-cancel notice arrived; what a stop right now would leave as partial result."""

    text: str | None


@dataclass(frozen=True, kw_only=True)
class _Question:
    """Child to parent: the subagent called `ask_parent`."""

    id: int
    question: str


@dataclass(frozen=True, kw_only=True)
class _RunEvent:
    """Child to parent: one event of the subagent's run (only with `forward_subagent_events`)."""

    event: Any


@dataclass(frozen=True, kw_only=True)
class _Retrying:
    """Child to parent: a try of the run failed on a transient model error; the next one starts after `delay`."""

    attempt: int
    error: str
    delay: float


@dataclass(frozen=True, kw_only=True)
class _Done:
    """Child to parent, last message: the run returned."""

    output: Any
    usage: RunUsage
    messages: list[ModelMessage] | None = None
    """The run's conversation, for a follow-up task (`None` if it could not be sent)."""


@dataclass(frozen=True, kw_only=True)
class _Failed:
    """Child to parent, last message: the run (or loading the job) failed."""

    error: str
    usage: RunUsage | None = None


@dataclass(frozen=True, kw_only=True)
class _Answer:
    """Parent to child: the answer to a question."""

    id: int
    answer: str


@dataclass(frozen=True, kw_only=True)
class _Notice:
    """Parent to child: put the soft-cancel notice into the run."""


@dataclass(frozen=True, kw_only=True)
class _Message:
    """Parent to child: put the parent's message into the run (steering)."""

    text: str
