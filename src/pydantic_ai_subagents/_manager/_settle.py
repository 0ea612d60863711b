"""The one place a task ends: an outcome (or a cancel, a timeout, a lost lease) becomes its terminal state.

Rules it keeps:

- `Settler.settle` is the only writer of a terminal state for this manager's tasks, and `Settler.fail_orphan` for
  tasks of a process that died. Each task is settled once; a second call does nothing.
- Settling is synchronous and never raises: the terminal transition, its event, the parent's notice, the usage
  roll-up, the cascade to the task's own children and the retention pass happen together, with no await between.
- Every status change (terminal or not) passes through `Settler.changed`: the live count per conversation, the
  event, the watchers and the notices are kept there, and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._bus import InMemoryMessageBus, MessageBus
from .._delivery import Delivery
from .._errors import SubagentsError, TaskAlreadyFinishedError, TaskNotFoundError
from .._events import EVENTS_TOPIC, TaskEvent, TaskEventMessage, event_for_change
from .._run import Outcome, partial_from_messages, render_output, usage_snapshot
from .._state import TERMINAL, StatusChange, TaskRecord, TaskStatus, TaskStore
from ._runtime import TaskRuntime
from ._transcripts import Transcripts, TranscriptStore

__all__ = ('Settler',)

logger = logging.getLogger('pydantic_ai_subagents')


class Settler:
    """Settles tasks and keeps what follows every status change."""

    def __init__(
        self,
        *,
        store: TaskStore,
        bus: Callable[[], MessageBus],
        participant: str,
        delivery: Delivery,
        resume: Callable[[str], None],
        forget: Callable[[str], None],
    ) -> None:
        self.store = store
        self._bus = bus
        self.participant = participant
        self.delivery = delivery
        self._resume = resume
        self._forget = forget
        self.live_per_scope: dict[str, int] = {}
        self.transcripts = Transcripts()
        self.kept: TranscriptStore | None = store if isinstance(store, TranscriptStore) else None
        """The store, when it keeps completed tasks' conversations for other processes too."""
        self.runtimes: dict[str, TaskRuntime] = {}
        """The live tasks of this manager, by id."""

    # ----------------------------------------------------------------- the start

    def begin(self, runtime: TaskRuntime, record: TaskRecord) -> TaskRecord:
        """Record a new task and keep what follows its first status; return its first snapshot.

        A store that refuses the record (closed, full) raises here and leaves nothing behind: no record, no
        runtime, nothing counted toward the conversation's limit.
        """
        change = self.store.create(record)
        self.runtimes[runtime.id] = runtime
        self.changed(runtime, change)
        return change.record

    # ----------------------------------------------------------------- the end

    def settle(self, runtime: TaskRuntime, outcome: Outcome) -> None:
        """End the task as `outcome` says (once): terminal state, event, notice, usage roll-up, cascade, retention."""
        if runtime.settled:
            return
        runtime.settled = True
        job = runtime.job
        try:
            # A subagent's conversation ends with its task: nobody could collect what its own background tasks
            # produce, so they stop with it.
            for manager, child_id in job.children or ():
                manager.cascade_hard_cancel(child_id)
            if runtime.parent_usage is not None:
                runtime.parent_usage.incr(job.usage)
                self._parent_usage_changed(job.id)
            if job.ledger is not None:
                job.ledger.settle()
            if outcome.transcript is not None:
                self.transcripts.keep(job.id, outcome.transcript)
            record = self.store.get(job.id)
            if record is None or record.status in TERMINAL:
                return
            status, fields = _terminal(record, runtime, outcome)
            waiting = TaskStatus.WAITING_FOR_ANSWER
            if record.status is waiting and not waiting.can_become(status):
                self._resume(job.id)  # the run ended while a question was still recorded
            fields['usage'] = usage_snapshot(job)
            note = outcome.note or runtime.thread_note
            if note and 'note' not in fields:
                fields['note'] = note
            try:
                change = self.store.transition(job.id, status, **fields)
            except (TaskAlreadyFinishedError, TaskNotFoundError):
                return
            runtime.final = change.record
            self.changed(runtime, change)
            if self.kept is not None and status is TaskStatus.COMPLETED and outcome.transcript is not None:
                self.kept.keep_transcript(job.id, outcome.transcript)
            self.prune()
        except Exception:  # a store or a listener failing must not take the manager down with this task
            logger.exception('settling task %s failed', job.id)

    def _parent_usage_changed(self, task_id: str) -> None:
        # The parent's record shows the roll-up now, not at its next model turn: readers can tell own from rolled up.
        record = self.store.get(task_id)
        parent = None if record is None or record.parent_task_id is None else self.runtimes.get(record.parent_task_id)
        if parent is None:
            return
        parent_record = self.store.get(parent.id)
        if parent_record is not None and not parent_record.is_terminal:
            self.store.update(parent.id, usage=usage_snapshot(parent.job))

    def fail_orphan(self, record: TaskRecord, error: str) -> None:
        """End a live task of a process that died (its lease ran out) as `FAILED`."""
        try:
            change = self.store.transition(record.id, TaskStatus.FAILED, error=error)
        except (TaskAlreadyFinishedError, TaskNotFoundError):
            return
        self.changed(None, change)

    # ----------------------------------------------------------------- every change

    def transition(self, runtime: TaskRuntime, status: TaskStatus, **fields: Any) -> None:
        """A non-terminal status change of a live task."""
        self.changed(runtime, self.store.transition(runtime.id, status, **fields))

    def changed(self, runtime: TaskRuntime | None, change: StatusChange) -> None:
        """Keep what follows a status change: the live count, the event, the watchers, the parent's notice."""
        scope = change.record.scope
        if change.old is None:
            self.live_per_scope[scope] = self.live_per_scope.get(scope, 0) + 1
        elif change.new in TERMINAL:
            left = self.live_per_scope.get(scope, 1) - 1
            if left:
                self.live_per_scope[scope] = left
            else:
                self.live_per_scope.pop(scope, None)
        if self.heard(scope):
            self.dispatch(event_for_change(change), change.record)
        # What can end a wait: the task finished or asks a question. A start or an answer taken ends none, so it
        # wakes no waiter (a sync delegation's tool call wakes once, for its result).
        news = change.new in TERMINAL or change.new is TaskStatus.WAITING_FOR_ANSWER
        if news and runtime is not None:
            runtime.notify()
        # Tell the parent's model, unless one of its tool calls is waiting on the task right now.
        if news and (runtime is None or not runtime.direct_waiters):
            self.delivery.owe(change.record)

    def heard(self, scope: str) -> bool:
        """Whether a task event of `scope` would reach anyone; if not, it is not even built.

        Only the in-memory bus can tell: another bus (Redis) may carry the event to other processes.
        """
        bus = self._bus()
        if type(bus) is not InMemoryMessageBus or bus.has_subscribers(EVENTS_TOPIC):
            return True
        return self.delivery.forwards(scope)

    def dispatch(self, event: TaskEvent, record: TaskRecord | None) -> None:
        """Publish a task event on the bus and forward it into the attached runs of its scope.

        A bus that refuses the event (a full subscription with the `'error'` policy, a backend that is gone) costs
        that listener the event, never the task its status change: the waiters, the parent's runs and the notice
        do not depend on it.
        """
        bus = self._bus()
        if not bus.closed:
            try:
                bus.publish(TaskEventMessage(sender=self.participant, topic=EVENTS_TOPIC, event=event, record=record))
            except SubagentsError as exc:
                logger.warning('the %s of task %s was not published: %s', type(event).__name__, event.task_id, exc)
        self.delivery.forward(event)

    def prune(self) -> None:
        """Apply retention; forget what belonged to the dropped records."""
        for task_id in self.store.prune():
            self.transcripts.pop(task_id)
            self.delivery.forget(task_id)
            self._forget(task_id)


def _terminal(record: TaskRecord, runtime: TaskRuntime, outcome: Outcome) -> tuple[TaskStatus, dict[str, Any]]:
    """The terminal status and fields for an outcome, given what was asked of the task meanwhile."""
    cancel = record.cancel
    timed_out = f'timed out after {runtime.timeout:g} s' if runtime.timed_out else None
    if outcome.kind == 'completed':
        if cancel is not None:
            # A soft-cancelled subagent's wrap-up answer is its partial result.
            return TaskStatus.CANCELLED, {'partial_result': render_output(outcome.output)}
        return TaskStatus.COMPLETED, {'result': outcome.output}
    if outcome.kind == 'failed':
        if cancel is not None and cancel.kind == 'hard':
            return TaskStatus.CANCELLED, {}  # the stop made the run fail: it was cancelled
        if timed_out is not None:
            return TaskStatus.FAILED, {'error': timed_out}
        return TaskStatus.FAILED, {'error': outcome.error or 'the run failed'}
    hard = cancel is not None and cancel.kind == 'hard'
    if timed_out is not None and not hard:
        return TaskStatus.FAILED, {'error': timed_out}
    # A hard cancel that was accepted wins over a timeout. A stop nobody here asked for (a worker draining) keeps
    # what the run left; a hard cancel keeps nothing, unless it is an overdue soft cancel.
    keeps_partial = cancel is None or cancel.kind == 'soft' or cancel.requested_by == 'escalation'
    if not keeps_partial:
        return TaskStatus.CANCELLED, {'partial_result': None}
    partial = outcome.partial
    if partial is None and outcome.transcript is not None:
        partial = partial_from_messages(outcome.transcript)
    return TaskStatus.CANCELLED, {'partial_result': partial}
