"""Process isolation, the child's side: runs the task with the shared drive loop and reports over the pipe.

Rules it keeps:

- A child whose parent process dies exits: a thread reads the pipe, and its end means nobody is left to report to.
- Whatever the run raises ends in one last message (`_Done` or `_Failed`); the process then exits normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from pydantic_ai.exceptions import UserError
from pydantic_ai.run import AgentRun
from pydantic_core import to_jsonable_python

from .._notices import soft_cancel_notice
from ._drive import drive, outcome_of
from ._pipe import (
    _Answer,
    _Done,
    _Failed,
    _Job,
    _Message,
    _Notice,
    _Partial,
    _Progress,
    _Question,
    _Retrying,
    _RunEvent,
)
from ._protocol import Outcome, TaskJob, current_task
from ._support import SOFT_CANCEL_NOTICE, partial_from_messages, safe_error, task_agent

__all__ = ('_ChildSide', '_child_main')


def _child_main(conn: Connection, payload: bytes) -> None:
    """The child process's entry point: run the job and send how it ended.

    It then exits normally (atexit handlers run, telemetry is flushed); should a thread keep it alive, the parent
    terminates it after the grace.
    """
    # The task's own process group: a stop from the parent reaches what its tools started, too.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    try:
        job = cast('_Job', pickle.loads(payload))
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(_Failed(error=f'process isolation: the child process could not load the task: {safe_error(e)}'))
        sys.exit(1)
    asyncio.run(_ChildSide(conn=conn, job=job).run())


def _failure(error: BaseException) -> Outcome:
    """What the parent hears of a run that raised `error`: it failed, with the error (a stopped run's too).

    Only an `Exception` is reported: anything else ends this process, which the parent sees as a crash.
    """
    if not isinstance(error, Exception):
        raise error
    return Outcome(kind='failed', error=outcome_of(error).error or safe_error(error), raised=error)


def _leave() -> None:
    """The parent process is gone: nobody is left to report to or to stop this process, so it ends now."""
    os._exit(1)


@dataclass(kw_only=True, eq=False)
class _ChildSide:
    """The child's end of the task: drives the run and talks to the parent (its observer and control)."""

    conn: Connection
    job: _Job
    parent_gone: Callable[[], None] = _leave
    """Called, from any thread, when the pipe to the parent is closed (the tests drive this side in one process)."""
    run_: AgentRun[Any, Any] | None = None
    task: TaskJob | None = None
    noticed: bool = False
    answers: dict[int, asyncio.Future[str]] = field(default_factory=dict[int, asyncio.Future[str]])
    loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Run the task and send the parent its last message."""
        self.loop = asyncio.get_running_loop()
        job = self.job
        self.task = task = TaskJob(
            id=job.task_id,
            config=job.config,
            agent=task_agent(job.config),
            prompt=job.prompt,
            model=job.model,
            deps=job.deps,
            usage_limits=job.usage_limits,
            depth=job.depth,
            observer=self,
            forward_events=job.forward_events,
            message_history=job.message_history,
        )
        # What the parent sent while this process was starting (a soft notice) counts from the run's first request.
        while self.conn.poll() and (message := self._receive()) is not None:
            self._on_parent_message(message)
        threading.Thread(target=self._read_parent, name='pydantic-ai-subagents parent pipe', daemon=True).start()
        usage = task.usage
        last: _Done | _Failed
        current_task.set(task)
        outcome = await drive(task, on_run=self._bind, after_response=self._after_response, failed=_failure)
        if outcome.kind == 'completed':
            last = _Done(output=outcome.output, usage=usage, messages=outcome.transcript)
        else:
            last = _Failed(error=outcome.error or 'the run failed', usage=usage)
        with contextlib.suppress(OSError):  # the parent is gone
            try:
                self._send(last)
            except (pickle.PicklingError, TypeError, AttributeError):
                # An output (or a tool result in the conversation) that cannot be pickled holds a live object: its
                # JSON form still carries the data; the conversation is left out.
                assert isinstance(last, _Done)
                self._send(_Done(output=to_jsonable_python(last.output, fallback=repr), usage=usage))
        outcome.release()

    # RunObserver

    def started(self) -> None:
        pass

    def turn(self) -> None:
        self._progress(turn=True)

    def progress(self) -> None:
        pass

    def run_event(self, event: Any) -> None:
        # An event that cannot be pickled (a tool result holding a live object) is skipped.
        with contextlib.suppress(pickle.PicklingError, TypeError, AttributeError):
            self._send(_RunEvent(event=event))

    async def ask(self, question: str) -> str:
        """What `ask_parent` calls here: send the question to the parent and wait for the answer."""
        assert self.loop is not None
        question_id = len(self.answers)
        answer = self.answers[question_id] = self.loop.create_future()
        self._send(_Question(id=question_id, question=question))
        return await answer

    def waiting(self, question: str) -> None:
        pass

    def resumed(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def retrying(self, attempt: int, error: str, delay: float) -> None:
        self._send(_Retrying(attempt=attempt, error=error, delay=delay))

    # RunControl

    def stop(self) -> None:
        pass  # the parent stops this process from outside

    def soft_notice(self) -> None:
        run = self.run_
        if run is None:
            return
        self.noticed = True
        # If the run is already ending, enqueue refuses: its result then counts as the wrap-up answer.
        with contextlib.suppress(UserError):
            run.enqueue(soft_cancel_notice(SOFT_CANCEL_NOTICE), priority='asap')
        self._send(_Partial(text=self._partial()))

    def answer(self, answer: str) -> bool | None:
        return None

    def message(self, text: str) -> bool:
        if self.run_ is None:
            return False
        try:
            self.run_.enqueue(text, priority='asap')
        except UserError:
            return False  # the run has ended
        return True

    # The pipe.

    def _bind(self, run: AgentRun[Any, Any]) -> None:
        self.run_ = run
        assert self.task is not None
        self.task.attach(self)

    def _after_response(self) -> None:
        # Also after each response, so that a stop during a long tool call keeps the usage so far.
        self._progress(turn=False)

    def _progress(self, *, turn: bool) -> None:
        assert self.task is not None
        partial = self._partial() if self.noticed else None
        self._send(_Progress(turn=turn, usage=self.task.usage, partial=partial))

    def _partial(self) -> str | None:
        return None if self.run_ is None else partial_from_messages(self.run_.all_messages())

    def _on_parent_message(self, message: Any) -> None:
        if isinstance(message, _Answer):
            answer = self.answers.get(message.id)
            if answer is not None and not answer.done():
                answer.set_result(message.answer)
        elif isinstance(message, _Notice) and self.task is not None:
            self.task.request_notice()
        elif isinstance(message, _Message) and self.task is not None:
            self.task.request_message(message.text)

    def _read_parent(self) -> None:
        """Runs in a thread of its own, so that it works even while a tool blocks the event loop."""
        loop = self.loop
        assert loop is not None
        while (message := self._receive()) is not None:
            try:
                loop.call_soon_threadsafe(self._on_parent_message, message)
            except RuntimeError:
                return  # the run is over and the loop closed; the process is exiting

    def _receive(self) -> Any:
        """The parent's next message, or `None` once the pipe is closed (after calling `parent_gone`)."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.parent_gone()
            return None

    def _send(self, message: Any) -> None:
        self.conn.send(message)
