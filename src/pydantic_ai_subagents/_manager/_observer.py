"""What a running task reports to its manager: the manager's side of the run observer protocol."""

from __future__ import annotations

import time
from typing import Any

from .._events import retrying_event, run_event
from .._otel import retry_event
from .._run import usage_snapshot
from .._state import TERMINAL, TaskStatus
from ._cancelling import Cancelling
from ._questions import Questions
from ._runtime import TaskRuntime
from ._settle import Settler

__all__ = ('TaskObserver',)


class TaskObserver:
    """Turns what one task's executor reports into status changes, usage and events."""

    __slots__ = ('cancelling', 'questions', 'runtime', 'settler')

    def __init__(self, runtime: TaskRuntime, settler: Settler, questions: Questions, cancelling: Cancelling) -> None:
        self.runtime = runtime
        self.settler = settler
        self.questions = questions
        self.cancelling = cancelling

    def started(self) -> None:
        runtime = self.runtime
        record = self.settler.store.get(runtime.id)
        if record is None or record.status is not TaskStatus.PENDING:
            return
        self.settler.transition(runtime, TaskStatus.RUNNING)
        tg = self.cancelling.tg
        if runtime.timeout is not None and tg is not None:
            tg.start_soon(self.cancelling.timeout_timer, runtime)

    def turn(self) -> None:
        self.progress()
        self.cancelling.on_turn(self.runtime)

    def progress(self) -> None:
        store, job = self.settler.store, self.runtime.job
        usage = usage_snapshot(job)
        record = store.get(job.id)
        if record is not None and record.status not in TERMINAL and record.usage != usage:
            store.update(job.id, usage=usage)

    def run_event(self, event: Any) -> None:
        settler = self.settler
        record = settler.store.get(self.runtime.id)
        if record is not None and settler.heard(record.scope):
            settler.dispatch(run_event(record, event, time.monotonic()), None)

    async def ask(self, question: str) -> str:
        return await self.questions.ask(self.runtime.id, question)

    def waiting(self, question: str) -> None:
        record = self.settler.store.get(self.runtime.id)
        if record is not None and record.status is TaskStatus.RUNNING:
            self.settler.transition(
                self.runtime, TaskStatus.WAITING_FOR_ANSWER, question=question, usage=usage_snapshot(self.runtime.job)
            )

    def resumed(self) -> None:
        self.questions.resume(self.runtime.id)

    def note(self, text: str) -> None:
        self.settler.store.update(self.runtime.id, note=text)

    def retrying(self, attempt: int, error: str, delay: float) -> None:
        settler, job = self.settler, self.runtime.job
        record = settler.store.get(job.id)
        if record is None or record.is_terminal:
            return
        record = settler.store.update(job.id, attempts=attempt, usage=usage_snapshot(job))
        retry_event(attempt, error, delay)
        if settler.heard(record.scope):
            settler.dispatch(retrying_event(record, attempt, error, delay, time.monotonic()), record)
