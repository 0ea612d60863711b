"""Questions a subagent asks its parent: the task waits `WAITING_FOR_ANSWER` until an answer, a cancel or a timeout.

Rules it keeps:

- A question travels as a bus request to the manager's mailbox; the answer is the reply. Only the question the
  subagent is still waiting on can be answered: one it gave up on (its timeout) is withdrawn.
- A task that is being cancelled gets the cancellation notice as its answer, never a question on its record.
- A question is bounded where it is recorded (`MAX_QUESTION_CHARS`): a longer one is cut, with a marker the parent
  sees, and the subagent is told with its answer that only the start of its question was seen.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .._bus import Answer, BusClosedError, MessageBus, Question
from .._errors import ReplyTimeoutError
from .._run import SOFT_CANCEL_NOTICE
from .._state import TaskStatus
from ._settle import Settler

__all__ = ('MAX_QUESTION_CHARS', 'Questions')

MAX_QUESTION_CHARS = 4_000
"""The longest question recorded on a task (and so shown to the parent model); the rest is cut."""


def bound_question(question: str) -> tuple[str, str]:
    """The question as recorded (cut to `MAX_QUESTION_CHARS`, with a marker) and a note for the subagent's answer."""
    if len(question) <= MAX_QUESTION_CHARS:
        return question, ''
    cut = len(question) - MAX_QUESTION_CHARS
    note = (
        f'[Your question was {len(question):,} characters long; your parent saw only its first '
        f'{MAX_QUESTION_CHARS:,}. Keep questions short.]\n'
    )
    return f'{question[:MAX_QUESTION_CHARS]} [... {cut:,} more characters cut]', note


class Questions:
    """The questions of this manager's live tasks."""

    def __init__(self, *, settler: Settler, bus: Callable[[], MessageBus], participant: str, timeout: float) -> None:
        self.settler = settler
        self._bus = bus
        self.participant = participant
        self.timeout = timeout
        self.waiting: dict[str, Question] = {}
        """The question each waiting task asked, by task id."""
        self._asking: dict[str, str] = {}
        """The correlation id of the question each task is waiting on."""

    async def ask(self, task_id: str, question: str) -> str:
        """A subagent's `ask_parent`: wait for the answer (or a cancel, or the timeout)."""
        question, note = bound_question(question)
        return note + await self._ask(task_id, question)

    async def _ask(self, task_id: str, question: str) -> str:
        correlation_id = secrets.token_hex(8)
        message = Question(
            sender=f'task:{task_id}',
            recipient=self.participant,
            task_id=task_id,
            question=question,
            correlation_id=correlation_id,
        )
        self._asking[task_id] = correlation_id
        try:
            reply = await self._bus().ask(message, timeout=self.timeout)
        except ReplyTimeoutError:
            self.resume(task_id)
            return (
                f'No answer came within {self.timeout:g} s. Go on with your best judgement and say '
                'in your result which assumption you made.'
            )
        except BusClosedError:
            return 'No answer: the parent is shutting down. Stop and reply with what you have.'
        finally:
            self._asking.pop(task_id, None)
        self.resume(task_id)
        assert isinstance(reply, Answer)
        return reply.answer

    def on_question(self, message: Question) -> None:
        """A question reached the mailbox: record it on the task, or answer at once if the task cannot wait."""
        task_id = message.task_id
        runtime = self.settler.runtimes.get(task_id)
        record = self.settler.store.get(task_id)
        if runtime is not None and self._asking.get(task_id) != message.correlation_id:
            return  # the subagent stopped waiting (timed out) before the question got here
        if runtime is None or record is None or record.status is not TaskStatus.RUNNING:
            self._reply(message, 'The task is ending.')
            return
        if record.cancel is not None:
            self._reply(message, SOFT_CANCEL_NOTICE)
            return
        self.waiting[task_id] = message
        self.settler.transition(runtime, TaskStatus.WAITING_FOR_ANSWER, question=message.question)

    def answer(self, task_id: str, answer: str) -> bool:
        """Answer the question the task waits on; `False` if it waits on none."""
        question = self.waiting.pop(task_id, None)
        if question is None:
            return False
        return self._reply(question, answer)

    def release(self, task_id: str, text: str) -> None:
        """Answer a waiting question with `text` (a cancel releases the subagent)."""
        question = self.waiting.pop(task_id, None)
        if question is not None:
            self._reply(question, text)

    def resume(self, task_id: str) -> None:
        """The task no longer waits: back to `RUNNING`."""
        self.waiting.pop(task_id, None)
        self._asking.pop(task_id, None)  # a question still on its way to the manager is withdrawn
        runtime = self.settler.runtimes.get(task_id)
        record = self.settler.store.get(task_id)
        if runtime is not None and record is not None and record.status is TaskStatus.WAITING_FOR_ANSWER:
            self.settler.transition(runtime, TaskStatus.RUNNING)

    def forget(self, task_id: str) -> None:
        """The task ended."""
        self.waiting.pop(task_id, None)
        self._asking.pop(task_id, None)

    def clear(self) -> None:
        """Forget everything (the event loop the tasks ran on is gone)."""
        self.waiting.clear()
        self._asking.clear()

    def _reply(self, question: Question, text: str) -> bool:
        return self._bus().reply(question, Answer(sender=self.participant, task_id=question.task_id, answer=text))
