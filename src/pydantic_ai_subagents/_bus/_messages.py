"""The messages the bus carries: typed, immutable dataclasses.

Every message is a frozen [`Message`][pydantic_ai_subagents.Message], so one instance can be put into many inboxes
and read by many readers without a copy. The rule this module keeps: a message is plain data. It has no behaviour
and no reference to the bus, a task or a run, so any backend can carry it (the Redis bus encodes it as JSON).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Literal, TypeVar

__all__ = (
    'Answer',
    'CancelRequest',
    'Message',
    'MessageT',
    'Progress',
    'Question',
    'StatusChanged',
    'TaskAssigned',
    'TaskResult',
)


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base class of everything carried by the bus; immutable, so one instance can safely reach many readers."""

    sender: str
    """Name of the participant that sent the message; replies to a request go back to it."""
    recipient: str | None = None
    """Name of the participant whose mailbox receives the message; required by `send` and `ask`."""
    topic: str | None = None
    """Topic the message is published under; required by `publish`."""
    correlation_id: str | None = None
    """Ties a reply to its request; `ask` fills it in when it is missing."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Unique id of this message."""
    created_at: float = field(default_factory=time.time)
    """When the message was created, in seconds since the epoch."""


MessageT = TypeVar('MessageT', bound=Message)
"""A type variable standing for any [`Message`][pydantic_ai_subagents.Message] subclass."""


@dataclass(frozen=True, kw_only=True)
class TaskAssigned(Message):
    """A task was handed to a subagent."""

    task_id: str
    """The task concerned."""
    subagent: str
    """Name of the subagent that runs the task."""
    description: str
    """What the subagent was asked to do."""


@dataclass(frozen=True, kw_only=True)
class CancelRequest(Message):
    """Someone asks for a task to be cancelled."""

    task_id: str
    """The task to cancel."""
    kind: Literal['soft', 'hard']
    """`'soft'` lets the task wind down at its next safe point; `'hard'` stops it at once."""
    requested_by: str
    """Who asked for the cancellation."""


@dataclass(frozen=True, kw_only=True)
class Question(Message):
    """A task asks its parent something and waits for the [`Answer`][pydantic_ai_subagents.Answer]."""

    task_id: str
    """The task that asks."""
    question: str
    """The question, in plain text."""


@dataclass(frozen=True, kw_only=True)
class Answer(Message):
    """The answer to a [`Question`][pydantic_ai_subagents.Question]."""

    task_id: str
    """The task that asked."""
    answer: str
    """The answer, in plain text."""


@dataclass(frozen=True, kw_only=True)
class Progress(Message):
    """A task reports how it is getting on."""

    task_id: str
    """The task reporting."""
    text: str
    """The progress note, in plain text."""


@dataclass(frozen=True, kw_only=True)
class TaskResult(Message):
    """A task finished, one way or another."""

    task_id: str
    """The task that finished."""
    status: str
    """The state the task ended in."""
    output: str | None = None
    """What the task produced, if it succeeded."""
    error: str | None = None
    """What went wrong, if it failed."""


@dataclass(frozen=True, kw_only=True)
class StatusChanged(Message):
    """A task moved from one state to another."""

    task_id: str
    """The task that changed."""
    old: str | None
    """The state it left, or `None` when the task was just created."""
    new: str
    """The state it entered."""
