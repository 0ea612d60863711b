"""Process isolation, the parent's side: each task of a subagent with `isolation='process'` runs in a child process.

What the process adds is a stop that needs no cooperation: a hard cancel or a timeout terminates the task's whole
process group (`SIGTERM`, so what its tools started goes too), and kills it (`SIGKILL`) if it is still alive
`grace` seconds later. Whatever its tools left running in the group is killed when the task ends, however it ends;
a process that left the group (a new session, `start_new_session=True`) is out of its reach. A soft cancel stays
cooperative: its notice is sent to the child and enqueued into the run.

Rules it keeps:

- The task ends only after its process is gone and reaped, also when the task is torn down from outside (the manager
  closing): the cleanup is shielded, so no process outlives its task, as a zombie or an orphan.
- How the task ends follows what the child said last: its result or error; if it died without saying, a stop
  (or a crash, with its exit code).

The child is forked from a `forkserver` (a clean, single-threaded server process that imported Pydantic AI once;
`spawn`, a fresh interpreter per task, where the platform has no fork), never from the parent itself, so it is
safe with threads and a running event loop. What it runs is pickled: the config's model, tools and output type
defined at module level, and the deps.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from dataclasses import dataclass, field, fields, replace
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from pydantic_ai.usage import RunUsage

from ._child import _child_main
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
from ._protocol import Outcome, RunObserver, TaskJob
from ._support import safe_error

__all__ = ('ProcessExecutor',)


def _process_context() -> ForkServerContext | SpawnContext:
    """How task processes start: `forkserver` where the platform has it, else `spawn`."""
    if 'forkserver' in get_all_start_methods():
        context = get_context('forkserver')
        # Only before the server starts does this take effect; the server then has Pydantic AI imported.
        context.set_forkserver_preload(['pydantic_ai_subagents._run._child'])
        return context
    return get_context('spawn')  # pragma: no cover - platforms without fork


class ProcessExecutor:
    """Runs a task in a child process of its own."""

    def __init__(self, *, grace: float) -> None:
        self.grace = grace
        """Seconds between `SIGTERM` and `SIGKILL`."""

    async def execute(self, job: TaskJob, observer: RunObserver) -> Outcome:
        """Run the job in a child process; never raises except for the caller's own cancellation."""
        if sys.platform == 'win32':  # pragma: no cover
            return Outcome(kind='failed', error='process isolation is not supported on Windows')
        if job.config.agent is not None:
            return Outcome(
                kind='failed',
                error='process isolation: a config with a ready `agent` cannot run in a child process; describe the '
                'agent with the config (instructions, model, toolsets, output type) instead',
            )
        spec = _Job(
            task_id=job.id,
            depth=job.depth,
            # `deps` maps the parent's deps in the parent; the child gets them already mapped.
            config=replace(job.config, deps=None),
            prompt=job.prompt,
            model=job.model,
            deps=job.deps,
            usage_limits=job.usage_limits,
            can_ask_questions=job.config.can_ask_questions,
            forward_events=job.forward_events,
            message_history=job.message_history,
        )
        try:
            payload = _pickle_job(spec)
        except _NotPicklableError as e:
            return Outcome(kind='failed', error=str(e))
        context = _process_context()
        conn, child_conn = context.Pipe()
        process = context.Process(
            target=_child_main, args=(child_conn, payload), name=f'pydantic-ai-subagents task {job.id}'
        )
        child = _ChildProcess(job=job, observer=observer, process=process, conn=conn, grace=self.grace)
        end: _Done | _Failed | None = None
        try:
            try:
                # Writing the job to a new interpreter can block on a large payload: not on the event loop.
                await anyio.to_thread.run_sync(process.start)
            except Exception as e:
                return Outcome(kind='failed', error=f'process isolation: could not start its process: {safe_error(e)}')
            finally:
                child_conn.close()  # the child has its own copy; the parent's would hide the child's exit
            observer.started()
            job.attach(child)
            end = await child.serve()
        finally:
            job.detach()
            with anyio.CancelScope(shield=True):
                await child.reap(ended=end is not None)
            conn.close()
        return child.outcome(end)


class _NotPicklableError(Exception):
    pass


def _pickle_job(job: _Job) -> bytes:
    try:
        return pickle.dumps(job)
    except Exception as error:
        parts: list[tuple[str, Any]] = [
            ('toolsets', job.config.toolsets),
            ('output type', job.config.output_type),
            ('model', job.model),
            ('deps', job.deps),
        ]
        what, cause = 'config', error
        for name, value in parts:
            try:
                pickle.dumps(value)
            except Exception as e:
                what, cause = name, e
                break
        raise _NotPicklableError(
            f"process isolation: the subagent's {what} cannot be pickled to send it to a child process "
            f'({safe_error(cause)}); define its model, tools and output type at module level'
        ) from error


@dataclass(kw_only=True, eq=False)
class _ChildProcess:
    """The parent's handle on one task's child process: the job's `RunControl`."""

    job: TaskJob
    observer: RunObserver
    process: BaseProcess
    conn: Connection
    grace: float
    stop_requested: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    terminated_at: float | None = None
    killed: bool = False
    exitcode: int | None = None
    partial: str | None = None
    _reading: anyio.CancelScope | None = None

    # RunControl: called by the manager, on its loop.

    def stop(self) -> None:
        if self.stop_requested.is_set():
            return
        self.stop_requested.set()
        self._terminate()

    def soft_notice(self) -> None:
        self._send(_Notice())

    def answer(self, answer: str) -> bool | None:
        return None

    def message(self, text: str) -> bool:
        # Taken if the child is still there to read it; one that arrives as its run ends is refused there, and
        # the task's result follows.
        return not self.exited.is_set() and self._send(_Message(text=text))

    # The run.

    async def serve(self) -> _Done | _Failed | None:
        """Report the child's turns and questions until its last message (returned) or its exit (`None`)."""
        end: _Done | _Failed | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_exit)
            tg.start_soon(self._end_when_stopped)
            end = await self._serve_messages(tg)
            tg.cancel_scope.cancel()
        return end

    async def _serve_messages(self, tg: anyio.abc.TaskGroup) -> _Done | _Failed | None:
        job, observer = self.job, self.observer
        while True:
            message = await self._next_message()
            if message is None or isinstance(message, _Done | _Failed):
                return message
            if isinstance(message, _Progress):
                _copy_usage(job.usage, message.usage)
                if message.partial is not None:
                    self.partial = message.partial
                if message.turn:
                    job.turns += 1
                    observer.turn()
            elif isinstance(message, _Partial):
                self.partial = message.text
            elif isinstance(message, _Question):
                tg.start_soon(self._relay_question, message)
            elif isinstance(message, _RunEvent):
                observer.run_event(message.event)
            elif isinstance(message, _Retrying):
                observer.retrying(message.attempt, message.error, message.delay)

    async def _next_message(self) -> Any:
        """The child's next message; `None` once it has exited and everything it sent is read."""
        while not self.conn.poll():
            if self.exited.is_set():
                return None
            with anyio.CancelScope() as self._reading:
                await anyio.wait_readable(self.conn)
            self._reading = None
        try:
            return self.conn.recv()
        except EOFError:
            return None
        except Exception as e:
            return _Failed(error=f'a message from its process could not be read: {safe_error(e)}')

    async def _relay_question(self, question: _Question) -> None:
        answer = await self.observer.ask(question.question)
        self._send(_Answer(id=question.id, answer=answer))

    async def _watch_exit(self) -> None:
        # The sentinel, not the pipe: a process that handed its pipe on (a grandchild) still counts as exited.
        await anyio.wait_readable(self.process.sentinel)
        self.exited.set()
        if self._reading is not None:
            self._reading.cancel()

    async def _end_when_stopped(self) -> None:
        await self.stop_requested.wait()
        await self._end_process()

    # The end.

    async def reap(self, *, ended: bool) -> None:
        """Make sure the process is gone and reaped; shielded by the caller.

        A child that sent its last message exits on its own; one that did not (the task torn down from outside) is
        terminated, then killed after the grace. Once it is gone, what it started and left in its process group is
        killed, however the task ended: nothing outlives its task.
        """
        if self.process.pid is None:
            return  # never started
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_exit)
            if ended and self.terminated_at is None:
                with anyio.move_on_after(self.grace):
                    await self.exited.wait()
            await self._end_process()
        # Before the join: until the child is reaped its pid, the group's id, cannot be taken by another process.
        self._signal_group(signal.SIGKILL)
        # The sentinel fired: the process has exited, so this returns at once.
        self.process.join()
        self.exitcode = self.process.exitcode
        self.process.close()

    async def _end_process(self) -> None:
        """Terminate the process if not yet done, kill it if it still lives after the grace, wait until it is gone."""
        if self.exited.is_set():
            return
        self._terminate()
        assert self.terminated_at is not None
        with anyio.CancelScope(deadline=self.terminated_at + self.grace):
            await self.exited.wait()
        if self.exited.is_set():
            return
        self._signal_group(signal.SIGKILL)
        self.process.kill()
        self.killed = True
        # SIGKILL cannot be ignored: this wait is short (unless the kernel itself is stuck on the process).
        await self.exited.wait()

    def _terminate(self) -> None:
        if self.terminated_at is None and self.process.pid is not None and not self.exited.is_set():
            self.terminated_at = anyio.current_time()
            self._signal_group(signal.SIGTERM)
            self.process.terminate()

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the task's process group: the child made itself its leader, so its own children are in it."""
        pid = self.process.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def outcome(self, end: _Done | _Failed | None) -> Outcome:
        """How the task ended (after the process is gone)."""
        job = self.job
        if isinstance(end, _Done):
            _copy_usage(job.usage, end.usage)
            return Outcome(kind='completed', output=end.output, transcript=end.messages)
        if isinstance(end, _Failed):
            if end.usage is not None:
                _copy_usage(job.usage, end.usage)
            return Outcome(kind='failed', error=end.error)
        if self.stop_requested.is_set():
            if self.killed:
                note = f'killed after {self.grace:g} s: its process did not stop when told to terminate'
            else:
                note = 'stopped by terminating its process'
            return Outcome(kind='stopped', partial=self.partial, note=note)
        return Outcome(kind='failed', error=_describe_exit(self.exitcode))

    def _send(self, message: _Answer | _Notice | _Message) -> bool:
        # A child that is gone cannot be told anything; its exit is reported on its own.
        try:
            self.conn.send(message)
        except OSError:
            return False
        return True


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f'its process was killed by signal {-code} ({signal.Signals(-code).name})'
        return f'its process was killed by signal {-code}'
    return f'its process exited with code {code}'


def _copy_usage(target: RunUsage, source: RunUsage) -> None:
    for f in fields(RunUsage):
        setattr(target, f.name, getattr(source, f.name))
