"""The manager's mailbox: questions, cancel requests, answers and steering messages, and workers' claims and updates."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._bus import Answer, CancelRequest, Message, MessageBus, Question
from .._remote import SteerMessage, TaskClaim, WorkerUpdate
from .._run import WorkerExecutor
from .._state import TaskStatus
from ._cancelling import Cancelling
from ._questions import Questions
from ._settle import Settler
from ._sharing import Sharing
from ._steering import Steering

__all__ = ('Inbox',)

logger = logging.getLogger('pydantic_ai_subagents')


class Inbox:
    """Dispatches what reaches the manager's mailbox, and routes answers to wherever the question waits."""

    def __init__(
        self,
        *,
        settler: Settler,
        questions: Questions,
        cancelling: Cancelling,
        sharing: Sharing,
        workers: WorkerExecutor,
        bus: Callable[[], MessageBus],
        participant: str,
    ) -> None:
        self.settler = settler
        self.questions = questions
        self.cancelling = cancelling
        self.sharing = sharing
        self.workers = workers
        self._bus = bus
        self.participant = participant
        self.steering = Steering(settler=settler, sharing=sharing)

    async def serve(self, mailbox: Any) -> None:
        """Handle each message; one that fails to be handled is logged, and the next is handled."""
        async for message in mailbox:
            try:
                self.on_message(message)
            except Exception:
                logger.exception('handling a %s failed', type(message).__name__)

    def on_message(self, message: Message) -> None:
        """Handle one message."""
        if isinstance(message, Question):
            self.questions.on_question(message)
        elif isinstance(message, CancelRequest):
            if message.sender != self.participant:  # from another process, for a task of ours
                if message.kind == 'soft':
                    self.cancelling.soft(message.task_id, message.requested_by)
                else:
                    self.cancelling.hard(message.task_id, message.requested_by)
            elif message.kind == 'soft' and (runtime := self.settler.runtimes.get(message.task_id)) is not None:
                runtime.job.request_notice()  # the cooperative half of a soft cancel: a notice inside the run
        elif isinstance(message, Answer):
            self.answer(message.task_id, message.answer)
        elif isinstance(message, TaskClaim):
            self._bus().reply(message, self.workers.on_claim(message))
        elif isinstance(message, WorkerUpdate):
            self.workers.on_update(message)
        elif isinstance(message, SteerMessage) and message.sender != self.participant:
            self.steering.send(message.task_id, message.text, forward=False)  # for a task of ours

    def answer(self, task_id: str, answer: str) -> bool:
        """Answer a task's question: here, on the worker that runs it, or through the process that owns it."""
        record = self.settler.store.get(task_id)
        if record is not None and record.cancel is not None:
            return False  # being cancelled: the subagent will not use an answer any more
        owner = self.sharing.owner_of(record)
        if owner is not None:
            if record is None or record.status is not TaskStatus.WAITING_FOR_ANSWER:
                return False
            return self.sharing.send_to_owner(
                Answer(sender=self.participant, recipient=owner, task_id=task_id, answer=answer)
            )
        runtime = self.settler.runtimes.get(task_id)
        if runtime is not None and (forwarded := runtime.job.answer(answer)) is not None:
            delivered = forwarded
        else:
            delivered = self.questions.answer(task_id, answer)
        if delivered:
            # The subagent has its answer: from now on it is running, and a wait sees its next question or its end.
            self.questions.resume(task_id)
        return delivered
