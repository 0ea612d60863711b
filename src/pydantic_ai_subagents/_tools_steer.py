"""The replies of the parent's tools that steer a task or continue a finished one, kept apart from the seven.

Each reply follows the task's state: a running task takes a message; a queued one holds it until it starts; a
finished one cannot be steered and says so with its result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.tools import RunContext

from ._runs import scope_of
from ._state import TaskStatus

if TYPE_CHECKING:
    from ._tools import SubagentTools

__all__ = ('steer_reply',)


async def steer_reply(tools: SubagentTools, ctx: RunContext[Any], task_id: str, message: str) -> str:
    """Send `message` into the parent's task `task_id` and say what happened, in the model's words."""
    manager, owner = tools.manager, tools.owner
    record = manager.get(task_id.strip(), scope=scope_of(ctx))
    if record is None:
        return tools._unknown(ctx, task_id)  # pyright: ignore[reportPrivateUsage]
    message = message.strip()
    if not message:
        raise ModelRetry('message is empty: write what the subagent should know.')
    if len(message) > owner.max_description_chars:
        raise ModelRetry(
            f'message has {len(message)} characters; the limit is {owner.max_description_chars}. Shorten it.'
        )
    task_id = record.id
    if not record.is_terminal:
        refusal = manager.steer_refusal(record)
        if refusal is not None:
            return f'Message not sent to task {task_id}: {refusal}.'
        if manager.message_task(task_id, message):
            if record.status is TaskStatus.PENDING:
                return f'Message queued for task {task_id}: it has not started yet and reads it when it starts.'
            if record.status is TaskStatus.WAITING_FOR_ANSWER:
                return (
                    f'Message sent to task {task_id}; it is waiting for your answer to its question '
                    f'({record.question}) and reads the message after it. Answer with answer_subagent.'
                )
            return f'Message sent to task {task_id}; the subagent reads it at its next step.'
        record = manager.get(task_id) or record
        if not record.is_terminal:
            return f'Message not sent: task {task_id} is finishing and could not take it; its result follows.'
    manager.mark_seen(record)
    return (
        f'Message not sent: task {task_id} has already finished and cannot be steered '
        f'(for a follow-up, start a task with continue_task_id). {manager.describe(record, owner.max_result_chars)}'
    )
