"""Continuing a finished task: a follow-up on the same subagent that starts from the earlier task's conversation.

Rules it keeps:

- Only a completed task of the same conversation and the same subagent can be continued, and only while its
  conversation is kept: the settle point keeps it (for as long as the record is retained) when its run ran in this
  process or in a child process of it, and a store that keeps transcripts (Redis) keeps it for every process of
  the namespace, tasks run on workers included. Anything else is a
  [`TaskNotContinuableError`][pydantic_ai_subagents.TaskNotContinuableError] naming the reason; an id the
  conversation never had is a [`TaskNotFoundError`][pydantic_ai_subagents.TaskNotFoundError].
- The conversation is read and the follow-up created in one step, with no await between: retention cannot drop the
  earlier task in between. A conversation read from the store (an await) is checked again in that step: a task
  pruned meanwhile is refused.
- The conversation is copied into the follow-up: retention dropping the earlier task afterwards does not touch it.
"""

from __future__ import annotations

from pydantic_ai.messages import ModelMessage

from .._errors import TaskNotContinuableError, TaskNotFoundError
from .._run import safe_error
from .._state import TaskStatus
from ._settle import Settler

__all__ = ('conversation_to_continue', 'load_conversation')


async def load_conversation(settler: Settler, task_id: str, *, scope: str, subagent: str) -> list[ModelMessage]:
    """The conversation a follow-up of `task_id` starts from, read from the store when it is not kept here.

    Returns with no await after its last check: the caller creates the follow-up in the same step.

    Raises:
        TaskNotFoundError: no task with this id in `scope`.
        TaskNotContinuableError: as `conversation_to_continue`, or the store has no conversation for it.
    """
    fetched = None
    if settler.kept is not None and task_id not in settler.transcripts:
        _check(settler, task_id, scope=scope, subagent=subagent)  # a refusal needs no round trip
        try:
            fetched = await settler.kept.load_transcript(task_id)
        except TaskNotContinuableError:
            raise
        except Exception as e:  # the store is closed or unreachable: a refusal, never the parent run's crash
            raise TaskNotContinuableError(task_id, f'its conversation could not be read ({safe_error(e)})') from e
    return conversation_to_continue(settler, task_id, scope=scope, subagent=subagent, fetched=fetched)


def conversation_to_continue(
    settler: Settler, task_id: str, *, scope: str, subagent: str, fetched: list[ModelMessage] | None = None
) -> list[ModelMessage]:
    """The conversation a follow-up of `task_id` starts from: kept here, or else `fetched` (read from the store).

    Raises:
        TaskNotFoundError: no task with this id in `scope`.
        TaskNotContinuableError: the task is still live, of another subagent, or its conversation is not kept.
    """
    _check(settler, task_id, scope=scope, subagent=subagent)
    messages = settler.transcripts.get(task_id) or fetched
    if not messages:
        where = (
            'by the store any more' if settler.kept is not None else 'here (it ran on a worker or in another process)'
        )
        raise TaskNotContinuableError(task_id, f'its conversation is not kept {where}')
    return list(messages)


def _check(settler: Settler, task_id: str, *, scope: str, subagent: str) -> None:
    """Refuse a task that cannot be continued whatever is kept of its conversation."""
    settler.prune()
    store = settler.store
    record = store.get(task_id)
    if record is None or record.scope != scope:
        if record is None and store.was_pruned(task_id) == scope:
            raise TaskNotContinuableError(task_id, 'it finished long ago and its conversation is no longer kept')
        raise TaskNotFoundError(task_id)
    if not record.is_terminal:
        raise TaskNotContinuableError(
            task_id, f'it has not finished ({record.status.value}); send it a message with message_task instead'
        )
    if record.status is not TaskStatus.COMPLETED:
        # A run that failed or was stopped may end mid-exchange (a request with no response, a tool call with no
        # result): no conversation a model can be asked to go on from.
        raise TaskNotContinuableError(task_id, f'it ended {record.status.value}, not completed; start a new task')
    if record.subagent != subagent:
        raise TaskNotContinuableError(task_id, f'it was a task of {record.subagent!r}, not of {subagent!r}')
