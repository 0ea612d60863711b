"""How a manager's collaborators are made and wired to each other: each gets only the others it works with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .._bus import MessageBus
from .._config import SubAgentConfig
from .._delivery import Delivery
from .._notices import TaskNotice
from .._run import Cascade, Executor, InProcessExecutor, ProcessExecutor, WorkerExecutor
from .._state import SharedTaskStore, TaskStore
from ._cancelling import Cancelling
from ._inbox import Inbox
from ._observer import TaskObserver
from ._questions import Questions
from ._running import Running
from ._runtime import TaskRuntime
from ._settle import Settler
from ._sharing import Sharing
from ._slots import Slots
from ._starting import Starter
from ._waiting import Waiting

__all__ = ('Parts',)


@dataclass(kw_only=True, eq=False)
class Parts:
    """The collaborators of one manager."""

    delivery: Delivery
    settler: Settler
    questions: Questions
    waiting: Waiting
    sharing: Sharing
    cancelling: Cancelling
    running: Running
    workers: WorkerExecutor
    starter: Starter

    @classmethod
    def build(
        cls,
        *,
        store: TaskStore,
        bus: Callable[[], MessageBus],
        participant: str,
        notice: Callable[[str], TaskNotice | None],
        cascade: Cascade,
        max_concurrent_tasks: int | None,
        max_nesting_depth: int,
        max_tasks_per_scope: int,
        default_timeout: float | None,
        question_timeout: float,
        soft_cancel_grace: float,
        soft_cancel_grace_turns: int,
        hard_cancel_wait: float,
        forward_subagent_events: bool,
    ) -> Parts:
        """Make and wire the collaborators of a manager."""
        shared = store if isinstance(store, SharedTaskStore) else None
        delivery = Delivery(notice)
        parts: list[Parts] = []  # the settler's callbacks reach collaborators made after it
        settler = Settler(
            store=store,
            bus=bus,
            participant=participant,
            delivery=delivery,
            resume=lambda task_id: parts[0].questions.resume(task_id),
            forget=lambda task_id: parts[0].sharing.forget(task_id),
        )
        questions = Questions(settler=settler, bus=bus, participant=participant, timeout=question_timeout)
        waiting = Waiting(settler=settler, shared=shared is not None)
        sharing = Sharing(
            shared=shared, settler=settler, bus=bus, participant=participant, on_remote_change=waiting.remote_changed
        )
        cancelling = Cancelling(
            settler=settler,
            questions=questions,
            sharing=sharing,
            bus=bus,
            participant=participant,
            end_unstarted=lambda runtime: parts[0].running.end_unstarted(runtime),
            grace=soft_cancel_grace,
            grace_turns=soft_cancel_grace_turns,
        )
        running = Running(
            settler=settler,
            slots=Slots(max_concurrent_tasks),
            observer=lambda runtime: TaskObserver(runtime, settler, questions, cancelling),
            forget=questions.forget,
        )
        workers = WorkerExecutor(
            participant=participant, shared=shared, send=sharing.send, timeout_of=_timeouts(settler)
        )
        starter = Starter(
            owner=participant,
            cascade=cascade,
            max_nesting_depth=max_nesting_depth,
            max_tasks_per_scope=max_tasks_per_scope,
            default_timeout=default_timeout,
            forward_events=forward_subagent_events,
            live_in=lambda scope: settler.live_per_scope.get(scope, 0),
            executor_for=_executors(workers, ProcessExecutor(grace=hard_cancel_wait), InProcessExecutor()),
        )
        parts.append(
            cls(
                delivery=delivery,
                settler=settler,
                questions=questions,
                waiting=waiting,
                sharing=sharing,
                cancelling=cancelling,
                running=running,
                workers=workers,
                starter=starter,
            )
        )
        return parts[0]

    def inbox(self, bus: Callable[[], MessageBus], participant: str) -> Inbox:
        """The handler of the manager's mailbox."""
        return Inbox(
            settler=self.settler,
            questions=self.questions,
            cancelling=self.cancelling,
            sharing=self.sharing,
            workers=self.workers,
            bus=bus,
            participant=participant,
        )


def _executors(
    workers: WorkerExecutor, process: ProcessExecutor, in_process: InProcessExecutor
) -> Callable[[SubAgentConfig], Executor]:
    """Where a config's tasks run: on workers, in a child process each, or in this event loop."""

    def executor_for(config: SubAgentConfig) -> Executor:
        if config.worker_queue is not None:
            return workers
        if config.isolation == 'process':
            return process
        return in_process

    return executor_for


def _timeouts(settler: Settler) -> Callable[[str], float | None]:
    def timeout_of(task_id: str) -> float | None:
        runtime: TaskRuntime | None = settler.runtimes.get(task_id)
        return None if runtime is None else runtime.timeout

    return timeout_of
