"""Process isolation: each task of a subagent with `isolation='process'` runs its agent in a child process of its own.

The parent side stands in for the in-process run: it reports the child's model turns, questions and end to the
manager exactly as the runner does, so a task's states, usage and replies are the same either way. What the process
adds is a stop that needs no cooperation: a hard cancel or a timeout terminates the process (`SIGTERM`), and kills it
(`SIGKILL`) if it is still alive `hard_cancel_wait` seconds later. A soft cancel stays cooperative: its notice is
sent to the child and enqueued into the run there.

Rules it keeps:

- The task ends only after its process is gone and reaped, also when the task is torn down from outside (the manager
  closing): the cleanup is shielded, so no process outlives its task, as a zombie or an orphan.
- A child whose parent process dies exits: a thread of the child reads the pipe, and its end means nobody is left
  to report to.
- How the task ends follows what the child said last: its result or error; if it died without saying, a stop
  (`CANCELLED`, or `FAILED` after a timeout) or a crash (`FAILED` with its exit code).

The child is forked from a `forkserver` (a clean, single-threaded server process that imported Pydantic AI once;
`spawn`, a fresh interpreter per task, where the platform has no fork), never from the parent itself, so it is
safe with threads and a running event loop. What it runs is pickled: the config's model, tools and output type
defined at module level, and the deps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
from pydantic_ai._agent_graph import CallToolsNode, ModelRequestNode
from pydantic_ai.exceptions import UsageLimitExceeded, UserError
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRun
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_core import to_jsonable_python

from ._config import SubAgentConfig, build_agent
from ._runner import (
    ASK_PARENT_TOOLSET,
    SOFT_CANCEL_NOTICE,
    TaskRuntime,
    current_task,
    partial_from_messages,
    safe_error,
)

if TYPE_CHECKING:
    from ._manager import TaskManager

__all__ = ('run_in_process',)


# ----------------------------------------------------------------- messages


@dataclass(frozen=True, kw_only=True)
class _Job:
    """Everything the child needs to run the task, pickled once by the parent."""

    task_id: str
    depth: int
    config: SubAgentConfig
    prompt: str
    model: Model | str | None
    deps: Any
    usage_limits: UsageLimits | None
    can_ask_questions: bool
    forward_events: bool


@dataclass(frozen=True, kw_only=True)
class _Progress:
    """Child to parent: a model turn starts (`turn`), or a model response came in."""

    turn: bool
    usage: RunUsage
    partial: str | None
    """What a stop would leave as partial result; only sent once a soft cancel has been asked for."""


@dataclass(frozen=True, kw_only=True)
class _Partial:
    """Child to parent: the soft-cancel notice arrived; what a stop right now would leave as partial result."""

    text: str | None


@dataclass(frozen=True, kw_only=True)
class _Question:
    """Child to parent: the subagent called `ask_parent`."""

    id: int
    question: str


@dataclass(frozen=True, kw_only=True)
class _RunEvent:
    """Child to parent: one event of the subagent's run (only with `forward_subagent_events`)."""

    event: Any


@dataclass(frozen=True, kw_only=True)
class _Done:
    """Child to parent, last message: the run returned."""

    output: Any
    usage: RunUsage


@dataclass(frozen=True, kw_only=True)
class _Failed:
    """Child to parent, last message: the run (or loading the job) failed."""

    error: str
    usage: RunUsage | None = None


@dataclass(frozen=True, kw_only=True)
class _Answer:
    """Parent to child: the answer to a question."""

    id: int
    answer: str


@dataclass(frozen=True, kw_only=True)
class _Notice:
    """Parent to child: put the soft-cancel notice into the run."""


# ----------------------------------------------------------------- parent side


def _process_context() -> ForkServerContext | SpawnContext:
    """How task processes start: `forkserver` where the platform has it, else `spawn`.

    The fork server is a clean process that has imported Pydantic AI once, so a task's process starts in a
    fraction of a second; `spawn` starts a fresh interpreter per task.
    """
    if 'forkserver' in get_all_start_methods():
        context = get_context('forkserver')
        # Only before the server starts does this take effect; it imports this module, and with it Pydantic AI.
        context.set_forkserver_preload([__name__])
        return context
    return get_context('spawn')  # pragma: no cover - platforms without fork


async def run_in_process(manager: TaskManager, runtime: TaskRuntime) -> None:
    """Run the task in a child process and report how it ended. Never raises (except for the caller's cancellation).

    Called by the runner in place of the in-process run; usage roll-up into the parent stays with the runner.
    """
    if sys.platform == 'win32':  # pragma: no cover
        manager.finish_failed(runtime, 'process isolation is not supported on Windows')
        return
    if runtime.config.agent is not None:
        manager.finish_failed(
            runtime,
            'process isolation: a config with a ready `agent` cannot run in a child process; describe the agent '
            'with the config (instructions, model, toolsets, output type) instead',
        )
        return
    job = _Job(
        task_id=runtime.id,
        depth=runtime.depth,
        # `deps` maps the parent's deps in the parent; the child gets them already mapped.
        config=replace(runtime.config, deps=None),
        prompt=runtime.prompt,
        model=runtime.model,
        deps=runtime.deps,
        usage_limits=runtime.usage_limits,
        can_ask_questions=runtime.config.can_ask_questions,
        forward_events=manager.forward_subagent_events,
    )
    try:
        payload = _pickle_job(job)
    except _NotPicklableError as e:
        manager.finish_failed(runtime, str(e))
        return
    context = _process_context()
    conn, child_conn = context.Pipe()
    process = context.Process(
        target=_child_main, args=(child_conn, payload), name=f'pydantic-ai-subagents task {runtime.id}'
    )
    child = _ChildProcess(manager=manager, runtime=runtime, process=process, conn=conn, grace=manager.hard_cancel_wait)
    end: _Done | _Failed | None = None
    try:
        try:
            # Writing the job to a new interpreter can block on a large payload: not on the event loop.
            await anyio.to_thread.run_sync(process.start)
        except Exception as e:
            manager.finish_failed(runtime, f'process isolation: could not start its process: {safe_error(e)}')
            return
        finally:
            child_conn.close()  # the child has its own copy; the parent's would hide the child's exit
        runtime.backend = child
        if runtime.cancel_when_started:
            child.stop()
        if runtime.notice_pending:
            runtime.notice_pending = False
            child.soft_notice()
        end = await child.serve()
    finally:
        with anyio.CancelScope(shield=True):
            await child.reap(ended=end is not None)
        runtime.backend = None
        conn.close()
    child.report(end)


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
    """The parent's handle on one task's child process, and the task's `RunBackend`."""

    manager: TaskManager
    runtime: TaskRuntime
    process: BaseProcess
    conn: Connection
    grace: float
    """Seconds between `SIGTERM` and `SIGKILL`."""
    stop_requested: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    terminated_at: float | None = None
    killed: bool = False
    exitcode: int | None = None
    partial: str | None = None
    _reading: anyio.CancelScope | None = None

    # RunBackend: called by the manager, on its loop.

    def stop(self) -> None:
        if self.stop_requested.is_set():
            return
        self.stop_requested.set()
        self._terminate()

    def soft_notice(self) -> None:
        self._send(_Notice())

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
        runtime = self.runtime
        while True:
            message = await self._next_message()
            if message is None or isinstance(message, _Done | _Failed):
                return message
            if isinstance(message, _Progress):
                _copy_usage(runtime.usage, message.usage)
                if message.partial is not None:
                    self.partial = message.partial
                if message.turn:
                    runtime.turns += 1
                    self.manager.on_turn(runtime)
            elif isinstance(message, _Partial):
                self.partial = message.text
            elif isinstance(message, _Question):
                tg.start_soon(self._relay_question, message)
            elif isinstance(message, _RunEvent):
                self.manager.forward_run_event(runtime, message.event)

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
        answer = await self.manager.ask_parent(self.runtime.id, question.question)
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
        terminated, then killed after the grace.
        """
        if self.process.pid is None:
            return  # never started
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_exit)
            if ended and self.terminated_at is None:
                with anyio.move_on_after(self.grace):
                    await self.exited.wait()
            await self._end_process()
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
        self.process.kill()
        self.killed = True
        # SIGKILL cannot be ignored: this wait is short (unless the kernel itself is stuck on the process).
        await self.exited.wait()

    def _terminate(self) -> None:
        if self.terminated_at is None and self.process.pid is not None and not self.exited.is_set():
            self.terminated_at = anyio.current_time()
            self.process.terminate()

    def report(self, end: _Done | _Failed | None) -> None:
        """Tell the manager how the task ended (after the process is gone)."""
        manager, runtime = self.manager, self.runtime
        if isinstance(end, _Done):
            _copy_usage(runtime.usage, end.usage)
            manager.finish_completed(runtime, end.output)
        elif isinstance(end, _Failed):
            if end.usage is not None:
                _copy_usage(runtime.usage, end.usage)
            manager.finish_failed(runtime, end.error)
        elif self.stop_requested.is_set():
            if self.killed:
                runtime.thread_note = f'killed after {self.grace:g} s: its process did not stop when told to terminate'
            else:
                runtime.thread_note = 'stopped by terminating its process'
            if runtime.timed_out:
                manager.finish_failed(runtime, f'timed out after {runtime.timeout:g} s')
            else:
                manager.finish_cancelled(runtime, self.partial)
        else:
            manager.finish_failed(runtime, _describe_exit(self.exitcode))

    def _send(self, message: _Answer | _Notice) -> None:
        # A child that is gone cannot be told anything; its exit is reported on its own.
        with contextlib.suppress(OSError):
            self.conn.send(message)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f'its process was killed by signal {-code} ({signal.Signals(-code).name})'
        return f'its process was killed by signal {-code}'
    return f'its process exited with code {code}'


def _copy_usage(target: RunUsage, source: RunUsage) -> None:
    for f in fields(RunUsage):
        setattr(target, f.name, getattr(source, f.name))


# ----------------------------------------------------------------- child side


def _child_main(conn: Connection, payload: bytes) -> None:
    """The child process's entry point: run the job and send how it ended.

    It then exits normally (atexit handlers run, telemetry is flushed); should a thread keep it alive, the parent
    terminates it after the grace.
    """
    try:
        job = cast('_Job', pickle.loads(payload))
    except Exception as e:
        with contextlib.suppress(OSError):
            conn.send(_Failed(error=f'process isolation: the child process could not load the task: {safe_error(e)}'))
        sys.exit(1)
    asyncio.run(_ChildSide(conn=conn, job=job).run())


def _leave() -> None:
    """The parent process is gone: nobody is left to report to or to stop this process, so it ends now."""
    os._exit(1)


@dataclass(kw_only=True, eq=False)
class _ChildSide:
    """The child's end of the task: drives the run and talks to the parent."""

    conn: Connection
    job: _Job
    parent_gone: Callable[[], None] = _leave
    """Called, from any thread, when the pipe to the parent is closed (the tests drive this side in one process)."""
    run_: AgentRun[Any, Any] | None = None
    notice_pending: bool = False
    noticed: bool = False
    answers: dict[int, asyncio.Future[str]] = field(default_factory=dict[int, asyncio.Future[str]])
    loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> None:
        """Run the task and send the parent its last message."""
        self.loop = asyncio.get_running_loop()
        # What the parent sent while this process was starting (a soft notice) counts from the run's first request.
        while self.conn.poll() and (message := self._receive()) is not None:
            self._on_parent_message(message)
        threading.Thread(target=self._read_parent, name='pydantic-ai-subagents parent pipe', daemon=True).start()
        usage = RunUsage()
        last: _Done | _Failed
        try:
            output = await self._drive(usage)
        except UsageLimitExceeded as e:
            last = _Failed(error=f'usage limit reached: {e}', usage=usage)
        except Exception as e:
            last = _Failed(error=safe_error(e), usage=usage)
        else:
            last = _Done(output=output, usage=usage)
        with contextlib.suppress(OSError):  # the parent is gone
            try:
                self._send(last)
            except (pickle.PicklingError, TypeError, AttributeError):
                # An output that cannot be pickled (it holds a live object): its JSON form still carries the data.
                assert isinstance(last, _Done)
                self._send(_Done(output=to_jsonable_python(last.output, fallback=repr), usage=usage))

    async def _drive(self, usage: RunUsage) -> Any:
        job = self.job
        agent = build_agent(job.config)
        runtime = TaskRuntime(
            id=job.task_id,
            config=job.config,
            agent=agent,
            prompt=job.prompt,
            model=job.model,
            deps=job.deps,
            usage_limits=job.usage_limits,
            timeout=None,
            depth=job.depth,
            usage=usage,
        )
        # `ask_parent` and nested tasks find their task here, as in the parent; the only manager method they reach
        # through it is `ask_parent`, which this side relays to the parent.
        current_task.set((cast('TaskManager', self), runtime))
        async with agent.iter(
            job.prompt,
            model=job.model,
            deps=job.deps,
            usage=usage,
            usage_limits=job.usage_limits,
            toolsets=[ASK_PARENT_TOOLSET] if job.can_ask_questions else [],
        ) as run:
            self.run_ = run
            if self.notice_pending:
                self._deliver_notice()
            async for node in run:
                if isinstance(node, ModelRequestNode | CallToolsNode):
                    # Also after each response, so that a stop during a long tool call keeps the usage so far.
                    partial = self._partial() if self.noticed else None
                    self._send(_Progress(turn=isinstance(node, ModelRequestNode), usage=usage, partial=partial))
                if job.forward_events and isinstance(node, ModelRequestNode | CallToolsNode):
                    async with node.stream(run.ctx) as stream:
                        async for event in stream:
                            # An event that cannot be pickled (a tool result holding a live object) is skipped.
                            with contextlib.suppress(pickle.PicklingError, TypeError, AttributeError):
                                self._send(_RunEvent(event=event))
            assert run.result is not None
            return run.result.output

    async def ask_parent(self, task_id: str, question: str) -> str:
        """What `ask_parent` calls here: send the question to the parent and wait for the answer."""
        assert self.loop is not None
        question_id = len(self.answers)
        answer = self.answers[question_id] = self.loop.create_future()
        self._send(_Question(id=question_id, question=question))
        return await answer

    def _partial(self) -> str | None:
        return None if self.run_ is None else partial_from_messages(self.run_.all_messages())

    def _deliver_notice(self) -> None:
        run = self.run_
        if run is None:
            self.notice_pending = True
            return
        self.notice_pending = False
        self.noticed = True
        # If the run is already ending, enqueue refuses: its result then counts as the wrap-up answer.
        with contextlib.suppress(UserError):
            run.enqueue(SOFT_CANCEL_NOTICE, priority='asap')
        self._send(_Partial(text=self._partial()))

    def _on_parent_message(self, message: Any) -> None:
        if isinstance(message, _Answer):
            answer = self.answers.get(message.id)
            if answer is not None and not answer.done():
                answer.set_result(message.answer)
        elif isinstance(message, _Notice):
            self._deliver_notice()

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
