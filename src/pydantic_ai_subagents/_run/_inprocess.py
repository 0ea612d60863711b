"""The in-process executor: the task's run is a coroutine on the manager's own event loop.

A stop fires the run's [`CancellationToken`][pydantic_ai.CancellationToken]: Pydantic AI then stops the run and
raises `RunCancelled` with its partial transcript. The soft-cancel notice is enqueued into the live run with
priority `asap`, as a [`SoftCancelNotice`][pydantic_ai_subagents.SoftCancelNotice], and so is a message from the
parent (steering): Pydantic AI delivers it with the run's next model request, or gives the run one more turn for it
if it was about to end; once the run has ended it refuses it. Whatever the run raises, `BaseException` included,
becomes this task's outcome; only the caller's own cancellation propagates.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic_ai import CancellationToken
from pydantic_ai.exceptions import UserError
from pydantic_ai.run import AgentRun

from .._budget import exhausted_limit
from .._notices import soft_cancel_notice
from ._drive import drive, outcome_of
from ._protocol import Outcome, RunObserver, TaskJob, current_task
from ._support import SOFT_CANCEL_NOTICE, is_real_cancel

__all__ = ('InProcessExecutor',)


class InProcessExecutor:
    """Runs a task in this event loop."""

    async def execute(self, job: TaskJob, observer: RunObserver) -> Outcome:
        """Run the job here; never raises except for the caller's own cancellation."""
        exhausted = exhausted_limit(job.usage_limits)
        if exhausted is not None:
            return Outcome(kind='failed', error=f"usage limit reached: the parent's {exhausted} is used up")
        job.observer = observer
        control = _Control(job)
        reset = current_task.set(job)
        try:
            observer.started()
            # Usage is read again once each response is in, so the record counts a request while its tools run.
            output = await drive(job, token=control.token, on_run=control.bind, after_response=observer.progress)
        except BaseException as e:
            if is_real_cancel(e):
                raise
            return outcome_of(e)
        finally:
            job.detach()
            current_task.reset(reset)
        # The conversation is kept, so that a follow-up task can continue it.
        transcript = None if control.run is None else control.run.all_messages()
        return Outcome(kind='completed', output=output, transcript=transcript)


class _Control:
    """The manager's handle on a run in this loop."""

    __slots__ = ('job', 'run', 'token')

    def __init__(self, job: TaskJob) -> None:
        self.job = job
        self.token = CancellationToken()
        self.run: AgentRun[Any, Any] | None = None

    def bind(self, run: AgentRun[Any, Any]) -> None:
        # Pydantic AI can lose a cancellation that lands while a run is being set up: requests made before this
        # point are held on the job and applied now.
        self.run = run
        self.job.attach(self)

    def stop(self) -> None:
        self.token.cancel()

    def soft_notice(self) -> None:
        if self.run is not None:
            # If the run is already ending, enqueue refuses: its result then counts as the wrap-up answer.
            with contextlib.suppress(UserError):
                self.run.enqueue(soft_cancel_notice(SOFT_CANCEL_NOTICE), priority='asap')

    def answer(self, answer: str) -> bool | None:
        return None

    def message(self, text: str) -> bool:
        if self.run is None:
            return False
        try:
            self.run.enqueue(text, priority='asap')
        except UserError:
            return False  # the run has ended: its queue is closed
        return True
