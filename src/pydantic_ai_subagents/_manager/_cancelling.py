"""Cancelling: soft (the subagent wraps up), hard (now, with the tasks it started), timeouts, remote requests.

A soft cancel has a grace period and then turns hard; a request for a task another process owns goes to its owner.

Rules it keeps:

- A request is recorded on the task first (one soft, then at most one hard), so a repeat is refused and the task's
  record shows who asked.
- A task that has not started (`PENDING`) ends at once, `CANCELLED`; a running one ends when its run has really
  stopped, through the settle point like every other end.
- A soft cancel turns hard after `soft_cancel_grace` seconds or `soft_cancel_grace_turns` model turns.
- A hard cancel returns at once and does little inside the call: no garbage collection lands in it (collection waits
  until the call returns), and the event announcing the request of a running task is built and published just after
  it, from the event loop, still before anything the stop causes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import anyio
import anyio.abc

from .._bus import CancelRequest, MessageBus
from .._errors import SubagentsError, TaskAlreadyFinishedError, TaskNotFoundError
from .._events import cancel_requested_event
from .._run import SOFT_CANCEL_NOTICE
from .._state import CancelKind, TaskRecord, TaskStatus
from ._questions import Questions
from ._runtime import TaskRuntime
from ._settle import Settler
from ._sharing import Sharing

__all__ = ('Cancelling',)


class Cancelling:
    """Cancel requests, their grace periods and escalation, timeouts, and the cascade to nested tasks."""

    def __init__(
        self,
        *,
        settler: Settler,
        questions: Questions,
        sharing: Sharing,
        bus: Callable[[], MessageBus],
        participant: str,
        end_unstarted: Callable[[TaskRuntime], None],
        grace: float,
        grace_turns: int,
    ) -> None:
        self.settler = settler
        self.questions = questions
        self.sharing = sharing
        self._bus = bus
        self.participant = participant
        self._end_unstarted = end_unstarted
        self.grace = grace
        self.grace_turns = grace_turns
        self.tg: anyio.abc.TaskGroup | None = None

    # ----------------------------------------------------------------- soft

    def soft(self, task_id: str, requested_by: str) -> bool:
        """Ask the task's subagent to wrap up; `False` for an unknown or finished task, or a repeated request."""
        store = self.settler.store
        record = store.get(task_id)
        owner = self.sharing.owner_of(record)
        if owner is not None:
            assert record is not None
            if record.cancel is not None or task_id in self.sharing.requests:
                return False
            return self._send_to_owner(owner, task_id, 'soft', requested_by)
        runtime = self.settler.runtimes.get(task_id)
        if record is None or runtime is None or record.is_terminal or record.cancel is not None:
            return False
        record = self._record(runtime, 'soft', requested_by)
        if record is None:
            return False
        if record.status is TaskStatus.PENDING:
            self._cancel_pending(runtime)
            return True
        runtime.soft_requested_turn = runtime.job.turns
        self.questions.release(task_id, SOFT_CANCEL_NOTICE)
        try:
            # Through the manager's own mailbox, so the request is on the bus like every other control message.
            self._bus().send(
                CancelRequest(
                    sender=self.participant,
                    recipient=self.participant,
                    task_id=task_id,
                    kind='soft',
                    requested_by=requested_by,
                )
            )
        except SubagentsError:
            runtime.job.request_notice()
        if self.tg is not None:
            self.tg.start_soon(self._grace_timer, runtime)
        return True

    def on_turn(self, runtime: TaskRuntime) -> None:
        """A model turn of the task began: a soft cancel past its grace turns becomes hard."""
        asked = runtime.soft_requested_turn
        if asked is not None and runtime.job.turns - asked > self.grace_turns:
            self.escalate(runtime)

    async def _grace_timer(self, runtime: TaskRuntime) -> None:
        with anyio.move_on_after(self.grace):
            await runtime.stopped.wait()
            return
        self.escalate(runtime)

    def escalate(self, runtime: TaskRuntime) -> None:
        """The soft cancel's grace is over: stop the task now."""
        record = self.settler.store.get(runtime.id)
        if record is not None and not record.is_terminal:
            self.hard_now(runtime, 'escalation')

    # ----------------------------------------------------------------- hard

    def hard(self, task_id: str, requested_by: str) -> bool:
        """Stop the task now; `False` for an unknown or finished task, or a repeated request.

        The collector is held off for the call (a few microseconds): a collection due during it, which walks every
        object of a thousand live runs, runs at the first allocation after it instead.
        """
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            return self._hard(task_id, requested_by)
        finally:
            if collecting:
                gc.enable()

    def _hard(self, task_id: str, requested_by: str) -> bool:
        record = self.settler.store.get(task_id)
        owner = self.sharing.owner_of(record)
        if owner is not None:
            assert record is not None
            if (record.cancel is not None and record.cancel.kind == 'hard') or self.sharing.requests.get(
                task_id
            ) == 'hard':
                return False
            return self._send_to_owner(owner, task_id, 'hard', requested_by)
        runtime = self.settler.runtimes.get(task_id)
        if record is None or runtime is None or record.is_terminal:
            return False
        if record.cancel is not None and record.cancel.kind == 'hard':
            return False
        self.hard_now(runtime, requested_by)
        return True

    def hard_now(self, runtime: TaskRuntime, requested_by: str) -> None:
        """Record a hard cancel and stop the run (and the tasks it started)."""
        record = self._record(runtime, 'hard', requested_by, announce=False)
        if record is None:
            return
        job = runtime.job
        for manager, child_id in job.children or ():
            manager.cascade_hard_cancel(child_id)
        if record.status is TaskStatus.PENDING:
            self._announce(record)  # it ends within this call: its request is announced first
            self._cancel_pending(runtime)
            return
        if self.settler.heard(record.scope):
            # The run ends on a later step of the loop, so the announcement can wait for the loop too: scheduled
            # before the stop is, it still comes before the task's end.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._announce(record)
            else:
                loop.call_soon(self._announce, record)
        if job.inflight_sync_tools:
            names = ', '.join(sorted(job.inflight_sync_tools))
            runtime.thread_note = (
                f'a sync tool ({names}) was still running in a worker thread when the task was stopped; '
                'Python cannot stop a thread, so it may still finish, and its late result is discarded'
            )
        job.request_stop()

    async def timeout_timer(self, runtime: TaskRuntime) -> None:
        """Stop a task that runs past its `timeout` (it ends `FAILED`).

        The task's own timer rather than Pydantic AI's `timeout=`, so that the stop goes through the same
        cancellation path as a hard cancel, which never lands while the run is still being set up.
        """
        assert runtime.timeout is not None
        with anyio.move_on_after(runtime.timeout):
            await runtime.stopped.wait()
            return
        record = self.settler.store.get(runtime.id)
        if record is None or record.is_terminal:
            return
        runtime.timed_out = True
        runtime.job.request_stop()

    # ----------------------------------------------------------------- helpers

    def _record(
        self, runtime: TaskRuntime, kind: CancelKind, requested_by: str, *, announce: bool = True
    ) -> TaskRecord | None:
        try:
            record = self.settler.store.request_cancel(runtime.id, kind, requested_by)
        except (TaskAlreadyFinishedError, TaskNotFoundError):
            return None
        if announce:
            self._announce(record)
        return record

    def _announce(self, record: TaskRecord) -> None:
        """Publish the event of the cancel request recorded on `record`, if anyone would hear it."""
        if self.settler.heard(record.scope):
            self.settler.dispatch(cancel_requested_event(record), record)

    def _cancel_pending(self, runtime: TaskRuntime) -> None:
        """A task that never started ends now: out of its queue, or stopped before its run begins."""
        runtime.job.request_stop()
        self._end_unstarted(runtime)

    def _send_to_owner(self, owner: str, task_id: str, kind: CancelKind, requested_by: str) -> bool:
        return self.sharing.send_to_owner(
            CancelRequest(
                sender=self.participant, recipient=owner, task_id=task_id, kind=kind, requested_by=requested_by
            )
        )
