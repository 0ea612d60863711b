"""Tasks that run on worker processes: the messages between a task's owner and its worker.

A subagent whose config sets [`worker_queue`][pydantic_ai_subagents.SubAgentConfig.worker_queue] does not run in
the process that starts its task. The manager there stays the task's *owner*: it keeps the record, applies every
state change, answers the tools and the application. The work goes to a queue in the shared store, a worker
takes it, asks the owner for it ([`TaskClaim`][pydantic_ai_subagents.TaskClaim]; only one claim per attempt is
accepted), runs it in its own process and reports back ([`WorkerUpdate`][pydantic_ai_subagents.WorkerUpdate]).
Cancel requests and answers go from the owner to the worker as the usual
[`CancelRequest`][pydantic_ai_subagents.CancelRequest] and [`Answer`][pydantic_ai_subagents.Answer] messages, and
messages from the task's parent (steering) as `SteerMessage`. A worker reports each retry of the run after a
transient model failure in a `WorkerUpdate` (`retry_attempt`), so the owner's record counts the attempts, and
sends a completed run's conversation with its end (`transcript`), which the owner keeps as for a run of its own.

While a worker runs the task, the owner watches the worker's lease: if it runs out (the worker died), the task is
queued again when the config's `retries` allow it, else it ends `FAILED`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
from pydantic_ai.usage import UsageLimits

from ._bus import Message
from ._state import TaskStatus, TaskUsage

__all__ = ('ClaimReply', 'SteerMessage', 'TaskClaim', 'WorkerJob', 'WorkerUpdate')


@dataclass(frozen=True, kw_only=True)
class TaskClaim(Message):
    """A worker took a task from the queue and asks its owner whether to run it."""

    task_id: str
    """The task."""
    attempt: int
    """Which attempt of the task the worker took (0 first, then one more per retry)."""


@dataclass(frozen=True, kw_only=True)
class ClaimReply(Message):
    """The owner's reply to a [`TaskClaim`][pydantic_ai_subagents.TaskClaim]."""

    task_id: str
    """The task."""
    accepted: bool
    """Whether the worker is to run it (`False`: it was cancelled meanwhile, or another worker has it)."""
    messages: tuple[str, ...] = ()
    """Steering messages sent to the task before the worker took it: its run starts with them."""


@dataclass(frozen=True, kw_only=True)
class WorkerUpdate(Message):
    """A worker reports a change of a task it runs to the task's owner."""

    task_id: str
    """The task (the owner's id)."""
    status: TaskStatus
    """The task's status on the worker."""
    result: Any = None
    """The output, when `COMPLETED`."""
    error: str | None = None
    """Why it failed, when `FAILED`."""
    partial_result: str | None = None
    """What a cancelled task had produced."""
    question: str | None = None
    """The question, when `WAITING_FOR_ANSWER`."""
    note: str | None = None
    """A remark on how it ended."""
    usage: TaskUsage = field(default_factory=TaskUsage)
    """Usage so far."""
    transcript: str | None = None
    """With `COMPLETED`: the run's conversation, as Pydantic AI's JSON; the owner keeps it for follow-up tasks."""
    retry_attempt: int | None = None
    """Set when a try of the run failed on a transient model error: the number of the try about to start (the
    status is unchanged)."""
    retry_error: str | None = None
    """The failure of the previous try, with `retry_attempt`."""
    retry_delay: float = 0.0
    """Seconds until that try starts, with `retry_attempt`."""


@dataclass(frozen=True, kw_only=True)
class SteerMessage(Message):
    """A message from a task's parent for its live run (steering).

    It goes from another process to the task's owner, or from the owner to the worker running the task.
    """

    task_id: str
    """The task (the owner's id)."""
    text: str
    """The message: as the parent wrote it (to an owner), or as the subagent reads it (to a worker)."""


@dataclass(frozen=True, kw_only=True)
class WorkerJob:
    """What the owner puts on a worker queue: everything a worker needs to run the task."""

    task_id: str
    """The task."""
    owner: str
    """The owning manager's participant name: where claims and updates go."""
    subagent: str
    """Which subagent (by name) runs it."""
    description: str
    """The work."""
    attempt: int = 0
    """0 for the first attempt, then one more per retry."""
    usage_limits: dict[str, int | None] | None = None
    """The budget the owner computed (the config's, lowered to what the parent has left)."""
    timeout: float | None = None
    """The task's timeout in seconds, enforced by the owner (the worker gets it to stop in time too)."""
    history: str | None = None
    """For a follow-up task: the conversation its run starts from, as Pydantic AI's JSON."""

    def messages(self) -> list[ModelMessage] | None:
        """The conversation the run starts from, for a follow-up task."""
        return None if self.history is None else ModelMessagesTypeAdapter.validate_json(self.history)

    def limits(self) -> UsageLimits | None:
        """The budget as Pydantic AI's `UsageLimits`."""
        return None if self.usage_limits is None else UsageLimits(**self.usage_limits)  # pyright: ignore[reportArgumentType]


def limits_dict(limits: UsageLimits | None) -> dict[str, int | None] | None:
    """`UsageLimits` as a JSON-able dict (its int fields)."""
    if limits is None:
        return None
    return {f.name: getattr(limits, f.name) for f in fields(limits) if f.name.endswith('_limit')}
