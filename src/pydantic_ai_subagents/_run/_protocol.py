"""What the manager and the code that runs a task agree on: a job, an observer, a control, an outcome.

An [`Executor`][pydantic_ai_subagents._run.Executor] runs one [`TaskJob`][pydantic_ai_subagents._run.TaskJob] (in
this event loop, in a child process, or on a worker) and hands back one
[`Outcome`][pydantic_ai_subagents._run.Outcome]: completed, failed, or stopped. While it runs, it reports through a
[`RunObserver`][pydantic_ai_subagents._run.RunObserver] (the run started, a model turn began, a question, an event)
and lets the manager reach the run through a [`RunControl`][pydantic_ai_subagents._run.RunControl] it attaches to
the job (stop now, deliver the soft-cancel notice, pass an answer on, put a message into the run).

Rules it keeps:

- Run code never decides a task's terminal state: it says what happened; the manager settles it, once.
- A stop, a notice or a message asked for before the run can take it (it is still being set up) is held on the job
  and applied the moment a control is attached, so no request is lost to timing.
- A message reaches the run or is refused, never lost in between: once the run has ended, a control refuses it.
"""

from __future__ import annotations

import traceback
from collections.abc import Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models import Model
from pydantic_ai.usage import RunUsage, UsageLimits

from .._config import SubAgentConfig

if TYPE_CHECKING:
    from .._budget import Ledger

__all__ = ('Executor', 'Outcome', 'OutcomeKind', 'RunControl', 'RunObserver', 'TaskJob', 'current_task')

OutcomeKind = Literal['completed', 'failed', 'stopped']


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How a task's run ended, as the code that ran it saw it (the manager turns it into the terminal state)."""

    kind: OutcomeKind
    """`completed`: the run returned `output`; `failed`: it raised (`error`); `stopped`: it was stopped from outside."""
    output: Any = None
    error: str | None = None
    partial: str | None = None
    """What a stopped run leaves behind (its last text and tool results)."""
    transcript: list[ModelMessage] | None = None
    """The messages of the run, where they are known: what a follow-up task continues, or what the application
    reads of a run that did not complete."""
    note: str | None = None
    """A remark on how it ended (a thread left running, a process killed, a worker's note)."""
    raised: BaseException | None = field(default=None, repr=False, compare=False)
    """What the run raised, when it ended with an error in this process: held so that its tracebacks are let go of
    ([`release`][pydantic_ai_subagents._run.Outcome.release]) after the task is settled, not before."""

    def release(self) -> None:
        """Let go of the tracebacks of what the run raised, and of the errors it arose from.

        They hold the run's frames, and with them the job, its observer and the run, while the errors are often in
        reference cycles of their own (the context managers the run left hold them): only the collector would then
        free the task's objects. Clearing the frames frees most of the run at once, which takes tens of
        microseconds: the manager does it after it has written the task's status and woken who waits for it.
        """
        error = self.raised
        seen: set[int] = set()
        while error is not None and id(error) not in seen:
            seen.add(id(error))
            traceback.clear_frames(error.__traceback__)
            error.__traceback__ = None
            error = error.__context__


class RunObserver(Protocol):
    """What a running task reports to its manager. Called on the manager's event loop."""

    def started(self) -> None:
        """The run really starts (the task becomes `RUNNING`)."""
        ...

    def turn(self) -> None:
        """A model turn begins; the job's usage is current."""
        ...

    def progress(self) -> None:
        """The job's usage changed (a run elsewhere reported it)."""
        ...

    def run_event(self, event: Any) -> None:
        """One event of the subagent's own run (only when the manager forwards them)."""
        ...

    async def ask(self, question: str) -> str:
        """The subagent asks its parent: wait for the answer (or a cancel, or the timeout)."""
        ...

    def waiting(self, question: str) -> None:
        """A run elsewhere asked a question (its answer goes back through the control)."""
        ...

    def resumed(self) -> None:
        """A run elsewhere got its answer and goes on."""
        ...

    def note(self, text: str) -> None:
        """Something the application should read on the task's record (a retry on another worker)."""
        ...

    def retrying(self, attempt: int, error: str, delay: float) -> None:
        """A try of the run failed on a transient model error: try number `attempt` starts in `delay` seconds."""
        ...


class RunControl(Protocol):
    """How the manager reaches a running task; attached to its job by the executor."""

    def stop(self) -> None:
        """Stop the run now (a hard cancel or a timeout)."""
        ...

    def soft_notice(self) -> None:
        """Deliver the soft-cancel notice into the run."""
        ...

    def answer(self, answer: str) -> bool | None:
        """Pass an answer on to a question asked elsewhere; `None` when the question is this process's own."""
        ...

    def message(self, text: str) -> bool:
        """Put a message from the parent into the live run, read at its next model turn (steering).

        Returns:
            Whether the run took it: `False` once the run has ended (or where runs cannot be reached).
        """
        ...


@dataclass(kw_only=True, eq=False, slots=True)
class TaskJob:
    """Everything needed to run one task, and the handle the manager holds on it while it runs."""

    id: str
    config: SubAgentConfig
    agent: Agent[Any, Any]
    prompt: str
    model: Model | str | None
    deps: Any
    usage_limits: UsageLimits | None
    depth: int
    message_history: list[ModelMessage] | None = None
    """The conversation of the finished task this one continues: the run starts from it."""
    usage: RunUsage = field(default_factory=RunUsage)
    """The task's own usage: its budget is its own, and it is rolled up into the parent's when the task ends."""
    ledger: Ledger | None = None
    """The request budget of the tree this task belongs to."""
    observer: RunObserver | None = None
    forward_events: bool = False
    turns: int = 0
    children: list[tuple[Cascade, str]] | None = None
    """Tasks started by this task's subagent, for the hard-cancel cascade (`None` until the first one)."""
    inflight_sync_tools: dict[str, int] = field(default_factory=dict[str, int])
    """Plain `def` tools running in a worker thread right now (a stop cannot end those)."""
    _control: RunControl | None = None
    _stop: bool = False
    _notice: bool = False
    # Made when first needed: a queued task is a few objects for the garbage collector, and most have no children
    # and get no message before their run starts.
    _messages: list[str] | None = None
    _ended: bool = False

    def add_child(self, cascade: Cascade, task_id: str) -> None:
        """A task this task's subagent started: a hard cancel of this task stops it too."""
        if self.children is None:
            self.children = [(cascade, task_id)]
        else:
            self.children.append((cascade, task_id))

    def attach(self, control: RunControl) -> None:
        """The run exists: requests from now on go to `control`; those made while it was being set up go now."""
        self._control = control
        if self._stop:
            control.stop()
        if self._notice:
            self._notice = False
            control.soft_notice()
        held, self._messages = self._messages, None
        for text in held or ():
            control.message(text)

    def detach(self) -> None:
        """The run is over: a message sent from now on is refused."""
        self._control = None
        self._ended = True

    def request_stop(self) -> None:
        """Stop the run now, or as soon as it exists."""
        self._stop = True
        if self._control is not None:
            self._control.stop()

    def request_notice(self) -> None:
        """Deliver the soft-cancel notice now, or as soon as the run exists."""
        if self._control is None:
            self._notice = True
        else:
            self._control.soft_notice()

    def answer(self, answer: str) -> bool | None:
        """Pass an answer to a question asked elsewhere; `None` when it is not this control's to pass."""
        return None if self._control is None else self._control.answer(answer)

    def request_message(self, text: str) -> bool:
        """Put a message into the run now, or hold it until the run exists.

        Returns:
            Whether it was taken (or held): `False` once the run has ended.
        """
        if self._control is not None:
            return self._control.message(text)
        if self._ended:
            return False
        if self._messages is None:
            self._messages = [text]
        else:
            self._messages.append(text)
        return True

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._stop


class Cascade(Protocol):
    """A manager, as a parent task sees it: it can stop a task it started."""

    def cascade_hard_cancel(self, task_id: str) -> None:
        """Hard-cancel the task because its parent task stopped."""
        ...


class Executor(Protocol):
    """Runs a task somewhere and says how it ended."""

    def execute(self, job: TaskJob, observer: RunObserver) -> Coroutine[Any, Any, Outcome]:
        """Run the job; never raises except for the caller's own cancellation.

        An `async def`, or a function that returns the coroutine to await.
        """
        ...


current_task: ContextVar[TaskJob | None] = ContextVar('pydantic_ai_subagents.current_task', default=None)
"""The task whose subagent runs in this context: how `ask_parent` and a nested task find it."""
