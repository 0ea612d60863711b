"""A worker's side of steering, retries and follow-ups: what it passes between its owners and its local runs.

The rules it keeps:

* **A steering message reaches the live run.** Messages sent while the task was queued come with the claim's reply
  and the local run starts with them; a `SteerMessage` from the task's owner goes into the live local run
  (`TaskManager.message_task`: Pydantic AI's enqueue, read at the run's next model request); one that arrives as
  the run ends is refused there, and the task's result follows.
* **Retries are the subagent's own.** The local manager retries a run after a transient model failure as the
  subagent's config says (`model_retries`, backoff), as any manager does; each retry is reported to the owner
  (`WorkerUpdate.retry_attempt`), in order with the other reports, so the owner's record, events and spans count
  the attempts.
* **A follow-up can start from a worker's task, and run on a worker.** A completed task's conversation goes to its
  owner with the report of its end (`WorkerUpdate.transcript`): the owner keeps it as for a run of its own (its
  `after_task` hook may withhold it, its store caps it). A follow-up's job carries the conversation it starts from
  (`WorkerJob.history`), and one that does not load fails the task rather than run it without its history.
"""

from __future__ import annotations

import dataclasses
import logging

from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

from .._events import TaskRetrying
from .._manager import TaskManager
from .._manager._steering import STEER_PREFIX
from .._remote import ClaimReply, SteerMessage, WorkerJob, WorkerUpdate
from .._state import TaskRecord, TaskStatus, TaskUsage

__all__ = ('history_of', 'retry_update', 'steer', 'steer_held', 'with_transcript')

logger = logging.getLogger('pydantic_ai_subagents.redis')


def history_of(job: WorkerJob, sender: str) -> list[ModelMessage] | WorkerUpdate | None:
    """The conversation a follow-up's run starts from; the report failing the task when it does not load."""
    try:
        return job.messages()
    except ValidationError as exc:
        return WorkerUpdate(
            sender=sender,
            recipient=job.owner,
            task_id=job.task_id,
            status=TaskStatus.FAILED,
            error=f'the conversation it continues does not load on this worker ({exc.error_count()} errors)',
        )


def steer_held(local: TaskManager, local_id: str, reply: ClaimReply) -> None:
    """Give the new local task the messages its owner held while it was queued: its run starts with them."""
    for text in reply.messages:
        local.message_task(local_id, _plain(text))


def steer(local: TaskManager, local_id: str, message: SteerMessage) -> None:
    """Put the owner's steering message into the local run of its task."""
    if not local.message_task(local_id, _plain(message.text)):
        logger.info('task %s ended before the message from its owner reached its run', message.task_id)


def retry_update(sender: str, owner: str, task_id: str, event: TaskRetrying, record: TaskRecord | None) -> WorkerUpdate:
    """The report of a retry of the local run (`record`: its local record, for the usage), for the task's owner."""
    return WorkerUpdate(
        sender=sender,
        recipient=owner,
        task_id=task_id,
        status=event.status,
        usage=TaskUsage() if record is None else record.usage,
        retry_attempt=event.attempt,
        retry_error=event.error,
        retry_delay=event.delay,
    )


def with_transcript(update: WorkerUpdate, local: TaskManager, local_id: str) -> WorkerUpdate:
    """`update` with the conversation of the local run when it reports a completed task, for its owner to keep."""
    if update.status is not TaskStatus.COMPLETED:
        return update
    messages = local.transcript(local_id)
    if messages is None:
        return update
    return dataclasses.replace(update, transcript=ModelMessagesTypeAdapter.dump_json(messages).decode())


def _plain(text: str) -> str:
    # The owner sends the message as its subagent reads it; the local manager introduces it again.
    return text.removeprefix(STEER_PREFIX)
