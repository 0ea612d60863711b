"""The in-process executor: the task's run is a coroutine on the manager's own event loop.

A stop cancels the run through its own cancellation, the one [`AgentRun.cancel`][pydantic_ai.run.AgentRun.cancel]
uses, so no [`CancellationToken`][pydantic_ai.CancellationToken] is made per task: Pydantic AI then stops the run and
raises `RunCancelled` with its partial transcript. A stop asked for before the run exists is held on the job and
applied as the run is bound; one asked for between two tries of a run is seen by the retry. The soft-cancel notice is
enqueued into the live run with priority `asap`, as a [`SoftCancelNotice`][pydantic_ai_subagents.SoftCancelNotice],
and so is a message from the parent (steering): Pydantic AI delivers it with the run's next model request, or gives
the run one more turn for it if it was about to end; once the run has ended it refuses it. Whatever the run raises,
`BaseException` included, becomes this task's outcome; only the caller's own cancellation propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from contextvars import Token
from typing import Any, Protocol

from pydantic_ai.exceptions import UserError
from pydantic_ai.run import AgentRun

from .._budget import exhausted_limit
from .._notices import soft_cancel_notice
from ._drive import drive, outcome_of
from ._protocol import Outcome, RunObserver, TaskJob, current_task
from ._support import SOFT_CANCEL_NOTICE, is_real_cancel

__all__ = ('InProcessExecutor', 'Stoppable', 'run_stopper')


class InProcessExecutor:
    """Runs a task in this event loop."""

    def execute(self, job: TaskJob, observer: RunObserver) -> Coroutine[Any, Any, Outcome]:
        """Run the job here; the coroutine never raises except for the caller's own cancellation.

        The coroutine is the drive loop's own: each step of the run resumes every coroutine frame above it, so the
        run is set up here, outside it, and the loop ends it (`on_exit`) and turns what it raises into the outcome.
        """
        exhausted = exhausted_limit(job.usage_limits)
        if exhausted is not None:
            return _ready(Outcome(kind='failed', error=f"usage limit reached: the parent's {exhausted} is used up"))
        job.observer = observer
        control = _Control(job)
        control.reset = current_task.set(job)
        try:
            observer.started()
            # Usage is read again once each response that calls tools is in, so the record counts a request while
            # its tools run; a response that ends the run is counted with its result, one record write fewer.
            return drive(job, on_run=control.bind, after_response=observer.progress, on_exit=control.exit)
        except BaseException as e:
            control.exit()
            if is_real_cancel(e):
                raise
            return _ready(outcome_of(e))


async def _ready(outcome: Outcome) -> Outcome:
    return outcome


class Stoppable(Protocol):
    """What stops a run: its cancellation, or the run itself."""

    def cancel(self) -> None:
        """Stop the run now (a no-op once it has ended)."""
        ...


def run_stopper(run: AgentRun[Any, Any]) -> Stoppable:
    """What cancels `run` as [`AgentRun.cancel`][pydantic_ai.run.AgentRun.cancel] does, with the same effect.

    `AgentRun.cancel()` is `self.ctx.deps.cancellation.cancel()`, and `run.ctx` builds a new context object on each
    read: two objects for the collector and eight calls inside a hard cancel, which is meant to allocate next to
    nothing. This reads the same cancellation from Pydantic AI's non-public `_graph_run` (the object `ctx` is built
    from) once, as the run is bound, so a hard cancel does not walk from the run to it among a thousand live runs'
    objects; should that attribute go, the run itself is the stopper (the public call). `tests/test_cancellation.py`
    checks that the two still name the same cancellation and that `AgentRun.cancel` still does only this.
    """
    try:
        return run._graph_run.deps.cancellation  # pyright: ignore[reportPrivateUsage]
    except AttributeError:  # pragma: no cover - a Pydantic AI that changed its run's insides
        return run


class _Control:
    """The manager's handle on a run in this loop."""

    __slots__ = ('job', 'reset', 'run', 'stopper')

    def __init__(self, job: TaskJob) -> None:
        self.job = job
        self.run: AgentRun[Any, Any] | None = None
        self.stopper: Stoppable | None = None
        self.reset: Token[TaskJob | None] | None = None

    def exit(self) -> None:
        """The run is left: requests from now on are refused, and the task's context no longer names the job."""
        self.job.detach()
        if self.reset is not None:
            current_task.reset(self.reset)
            self.reset = None

    def bind(self, run: AgentRun[Any, Any]) -> None:
        # Pydantic AI can lose a cancellation that lands while a run is being set up: requests made before this
        # point are held on the job and applied now.
        self.run = run
        self.stopper = run_stopper(run)
        self.job.attach(self)

    def stop(self) -> None:
        # Called on the run's loop (the manager's), so it cancels the task driving the run at once; a no-op once the
        # run has ended. Before the run exists there is nothing to cancel: the job holds the stop until `bind`.
        if self.stopper is not None:
            self.stopper.cancel()

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
