"""The two messages the library puts into a live run, as Pydantic AI capability parts.

- [`TaskNotice`][pydantic_ai_subagents.TaskNotice] goes into the parent's run when one of its background tasks ends
  or asks a question. It is data: the model reads it in a `<task_notice>` frame, with a note saying that the subagent
  wrote it, so a subagent's output never speaks to the parent as the user or the application would, and text in it
  that looks like a framework frame (a `<system>` tag) is marked as the subagent's.
- [`SoftCancelNotice`][pydantic_ai_subagents.SoftCancelNotice] goes into a subagent's run when its task is
  soft-cancelled. It is an instruction in the application's voice: the subagent's model reads it as a system message.

Application code finds them again in a run's messages by type (`isinstance(part, TaskNotice)`), never by their text.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_ai.messages import (
    DataCapabilityPart,
    InstructionCapabilityPart,
    ModelSource,
    OperatorSource,
    OperatorText,
)

__all__ = ('SoftCancelNotice', 'TaskNotice', 'soft_cancel_notice', 'task_notice')

NAMESPACE = 'subagents'
"""The namespace of the library's capability part kinds: `subagents.task_notice`, `subagents.soft_cancel`."""


@dataclass(repr=False, kw_only=True)
class TaskNotice(
    DataCapabilityPart[str],
    namespace=NAMESPACE,
    name='task_notice',
    tag='task_notice',
    attributes=('task_id', 'subagent', 'status'),
    note='The accompanying {frame} is news of a background task you started with the `task` tool.',
):
    """News of a background task, delivered into the live run of the conversation that started it.

    Sent when the task ends or asks a question and no tool call of the parent is waiting on it. `content` is what the
    model reads, the same words `check_task` would reply; the other fields are for application code.
    """

    task_id: str
    """The task's id."""
    subagent: str
    """The subagent that ran the task."""
    status: str
    """The task's status when the notice was written, a [`TaskStatus`][pydantic_ai_subagents.TaskStatus] value:
    `completed`, `failed`, `cancelled` or `waiting_for_answer`."""
    result: str | None = None
    """What the task produced, whole (the model reads it cut to `TaskManager.notice_chars`): a completed task's output
    as text (structured output as JSON), or a cancelled task's partial result; `None` otherwise."""
    question: str | None = None
    """The subagent's question, when the task is waiting for an answer."""
    error: str | None = None
    """Why the task failed, when it did."""


@dataclass(repr=False, kw_only=True)
class SoftCancelNotice(InstructionCapabilityPart, namespace=NAMESPACE, name='soft_cancel'):
    """The request to wrap up, delivered into a soft-cancelled subagent's run as an instruction from the application."""


def task_notice(
    *,
    text: str,
    task_id: str,
    subagent: str,
    status: str,
    result: str | None = None,
    question: str | None = None,
    error: str | None = None,
) -> TaskNotice:
    """A notice whose content `text` the model reads, written by the subagent `subagent` as far as the model knows."""
    return TaskNotice(
        content=text,
        source=ModelSource(f'subagent `{subagent}`'),
        task_id=task_id,
        subagent=subagent,
        status=status,
        result=result,
        question=question,
        error=error,
    )


def soft_cancel_notice(text: str) -> SoftCancelNotice:
    """The soft-cancel request `text`, a fixed text of this library, in the application's voice."""
    return SoftCancelNotice(content=OperatorText(text), source=OperatorSource())
