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
* **A follow-up can start from a worker's task, and run on a worker.** A completed task's conversation is written
  to the owner's record in Redis before the end is reported, so whoever reads the end can continue the task; a
  follow-up's job carries the conversation it starts from (`WorkerJob.history`), and one that does not load fails
  the task rather than run it without its history.
"""

from __future__ import annotations

import logging
from typing import Final

import anyio
from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage

from .._events import TaskRetrying
from .._manager import TaskManager
from .._manager._steering import STEER_PREFIX
from .._remote import ClaimReply, SteerMessage, WorkerJob, WorkerUpdate
from .._state import TaskRecord, TaskStatus, TaskUsage
from ._store import RedisTaskStore

__all__ = ('history_of', 'keep_transcript', 'retry_update', 'steer', 'steer_held')

logger = logging.getLogger('pydantic_ai_subagents.redis')

_KEEP_TIMEOUT: Final = 5.0
"""Seconds a worker waits for a finished task's conversation to reach Redis before it reports the end anyway."""


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


async def keep_transcript(store: RedisTaskStore, local: TaskManager, local_id: str, task_id: str) -> None:
    """Write the conversation of the completed local run to the owner's record of `task_id` in Redis, and wait for it.

    Bounded: after `_KEEP_TIMEOUT` seconds (Redis away) the end is reported anyway, and a follow-up is refused.
    """
    messages = local.transcript(local_id)
    if messages is None:
        return
    try:
        store.keep_transcript(task_id, messages)
        with anyio.move_on_after(_KEEP_TIMEOUT):
            await store.flush()
    except Exception as exc:  # the worker is closing: the task's end still goes to its owner
        logger.warning('the conversation of task %s was not kept: %s', task_id, exc)


def _plain(text: str) -> str:
    # The owner sends the message as its subagent reads it; the local manager introduces it again.
    return text.removeprefix(STEER_PREFIX)
