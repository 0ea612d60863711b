"""The worker executor, the owner's side: a task whose config names a `worker_queue` runs on a worker process.

The owner keeps the record and settles the task; the work goes to a queue in the shared store. A worker takes it,
claims it ([`TaskClaim`][pydantic_ai_subagents.TaskClaim]: one accepted claim per attempt), runs it and reports
([`WorkerUpdate`][pydantic_ai_subagents.WorkerUpdate]). Cancel requests, answers and steering messages go to the
worker as bus messages; steering messages sent before a worker took the task go in the claim's reply (its run
starts with them), later ones once the worker reports the run, and a new attempt's worker gets them all. While a
worker runs the task, the owner watches its lease: if it runs out, the task is queued again when the config's
`retries` allow, else it fails.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import anyio
from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

from .._bus import Answer, CancelRequest, Message
from .._remote import ClaimReply, SteerMessage, TaskClaim, WorkerJob, WorkerUpdate, limits_dict
from .._state import SharedTaskStore, TaskStatus
from ._protocol import Outcome, RunObserver, TaskJob
from ._support import safe_error

__all__ = ('WorkerExecutor',)

NO_SHARED_STORE = (
    'subagent {name!r} runs on worker processes (worker_queue={queue!r}), which needs a task manager on a shared '
    'store (see pydantic_ai_subagents.redis.redis_task_manager)'
)


class WorkerExecutor:
    """Runs tasks on worker processes, for one manager; routes the workers' claims and updates to their tasks."""

    def __init__(
        self,
        *,
        participant: str,
        shared: SharedTaskStore | None,
        send: Callable[[Message], bool],
        timeout_of: Callable[[str], float | None],
    ) -> None:
        self.participant = participant
        self.shared = shared
        self.send = send
        self.timeout_of = timeout_of
        self.runs: dict[str, _WorkerRun] = {}

    async def execute(self, job: TaskJob, observer: RunObserver) -> Outcome:
        """Queue the job for a worker and follow it to its end; never raises except for the caller's cancellation."""
        queue = job.config.worker_queue
        assert queue is not None
        shared = self.shared
        if shared is None:
            return Outcome(kind='failed', error=NO_SHARED_STORE.format(name=job.config.name, queue=queue))
        run = self.runs[job.id] = _WorkerRun(self, job, observer)
        job.attach(run)
        try:
            return await run.follow(shared, queue)
        finally:
            job.detach()
            del self.runs[job.id]

    def on_claim(self, claim: TaskClaim) -> ClaimReply:
        """A worker asks to run a task: accept one claim per attempt, refuse the rest."""
        run = self.runs.get(claim.task_id)
        accepted = run is not None and run.accept(claim)
        messages: tuple[str, ...] = ()
        if run is not None and accepted:
            messages = tuple(run.messages)  # the run starts with them
            run.delivered = len(messages)
        return ClaimReply(sender=self.participant, task_id=claim.task_id, accepted=accepted, messages=messages)

    def on_update(self, update: WorkerUpdate) -> None:
        """A worker reports a change of a task it runs."""
        run = self.runs.get(update.task_id)
        if run is not None:
            run.update(update)


class _WorkerRun:
    """One task on the workers: the job's `RunControl`."""

    __slots__ = (
        'attempt',
        'context',
        'delivered',
        'done',
        'executor',
        'job',
        'messages',
        'observer',
        'outcome',
        'reached',
        'waiting',
        'worker',
    )

    def __init__(self, executor: WorkerExecutor, job: TaskJob, observer: RunObserver) -> None:
        self.executor = executor
        self.job = job
        self.observer = observer
        self.attempt = 0
        self.worker: str | None = None
        """The worker's participant name once its claim was accepted; `None` while queued."""
        self.waiting = False
        self.done = anyio.Event()
        self.outcome: Outcome | None = None
        self.messages: list[str] = []
        """Every steering message taken, in order: a new attempt starts over, so its worker gets them all."""
        self.delivered = 0
        """How many of `messages` went to the current worker."""
        self.reached = False
        """Whether the current worker reported the run: it knows the task, so a message to it is not dropped."""
        self.context = contextvars.copy_context()
        """The task's context (its span current), for what the worker's reports record on the task's span."""

    def end(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.done.set()

    async def follow(self, shared: SharedTaskStore, queue: str) -> Outcome:
        if not await self.submit(shared, queue):
            assert self.outcome is not None
            return self.outcome
        interval = shared.heartbeat_interval
        while self.outcome is None:
            with anyio.move_on_after(interval):
                await self.done.wait()
                break
            worker = self.worker
            if worker is None:
                continue
            try:
                if worker in await shared.owners_alive({worker}):
                    continue
            except Exception:  # Redis unreachable for a moment: look again at the next beat
                continue
            if self.outcome is not None:
                break
            if self.attempt < self.job.config.retries and not self.job.stop_requested:
                self.attempt += 1
                self.worker = None
                self.reached, self.delivered = False, 0
                if self.waiting:
                    self.waiting = False
                    self.observer.resumed()
                self.observer.note(f'its worker {worker} stopped; started again (attempt {self.attempt + 1})')
                await self.submit(shared, queue)
                continue
            self.end(Outcome(kind='failed', error=f'the worker running it stopped (the lease of {worker} ran out)'))
        assert self.outcome is not None
        return self.outcome

    async def submit(self, shared: SharedTaskStore, queue: str) -> bool:
        job = self.job
        spec = WorkerJob(
            task_id=job.id,
            owner=self.executor.participant,
            subagent=job.config.name,
            description=job.prompt,
            attempt=self.attempt,
            usage_limits=limits_dict(job.usage_limits),
            timeout=self.executor.timeout_of(job.id),
            history=None
            if job.message_history is None
            else ModelMessagesTypeAdapter.dump_json(job.message_history).decode(),
        )
        try:
            await shared.submit(queue, {f: getattr(spec, f) for f in spec.__dataclass_fields__})
        except Exception as e:
            self.end(Outcome(kind='failed', error=f'the task could not be queued for a worker: {safe_error(e)}'))
            return False
        return True

    def accept(self, claim: TaskClaim) -> bool:
        if self.outcome is None and self.worker == claim.sender and claim.attempt == self.attempt:
            return True  # the same claim again: its worker did not get the reply (Redis restarted meanwhile)
        if self.outcome is not None or self.worker is not None or claim.attempt != self.attempt:
            return False
        if self.job.stop_requested:
            return False
        self.worker = claim.sender
        self.observer.started()
        return True

    def update(self, update: WorkerUpdate) -> None:
        if update.sender != self.worker or self.outcome is not None:
            return  # from a worker this task no longer waits on
        usage = self.job.usage
        usage.requests = update.usage.requests
        usage.tool_calls = update.usage.tool_calls
        usage.input_tokens = update.usage.input_tokens
        usage.output_tokens = update.usage.output_tokens
        if not self.reached:
            self.reached = True
            self._deliver()
        if update.retry_attempt is not None:
            # Reports arrive through the manager's mailbox: the retry goes on the task's span, not the mailbox's.
            self.context.run(self.observer.retrying, update.retry_attempt, update.retry_error or '', update.retry_delay)
            return
        status = update.status
        if status is TaskStatus.RUNNING:
            if self.waiting:
                self.waiting = False
                self.observer.resumed()
            self.observer.progress()
        elif status is TaskStatus.WAITING_FOR_ANSWER:
            if not self.waiting:
                self.waiting = True
                self.observer.waiting(update.question or '')
        elif status is TaskStatus.COMPLETED:
            self.end(Outcome(kind='completed', output=update.result, transcript=_messages(update.transcript)))
        elif status is TaskStatus.FAILED:
            self.end(Outcome(kind='failed', error=update.error, note=update.note))
        elif status is TaskStatus.CANCELLED:
            self.end(Outcome(kind='stopped', partial=update.partial_result, note=update.note))

    # RunControl

    def stop(self) -> None:
        """Hard cancel (or timeout): tell the worker to stop the run; between two attempts, end the task here."""
        if self.worker is None:
            self.end(Outcome(kind='stopped'))
        else:
            self._cancel('hard')

    def soft_notice(self) -> None:
        """Soft cancel: the worker's manager delivers the notice into the run and handles the grace period."""
        if self.worker is not None:
            self._cancel('soft')

    def answer(self, answer: str) -> bool | None:
        if self.worker is None or not self.waiting:
            return False
        return self.executor.send(
            Answer(sender=self.executor.participant, recipient=self.worker, task_id=self.job.id, answer=answer)
        )

    def message(self, text: str) -> bool:
        """Pass a steering message on to the worker running the task.

        Held while the task is queued (it goes with the claim's reply) and until the worker reports the run. Taken
        while the task is not over here; one that reaches the worker as the run ends is refused there, and the
        task's result follows.
        """
        if self.outcome is not None:
            return False
        self.messages.append(text)
        return self._deliver()

    def _deliver(self) -> bool:
        worker = self.worker
        if worker is None or not self.reached:
            return True
        sent = True
        for text in self.messages[self.delivered :]:
            sent = self.executor.send(
                SteerMessage(sender=self.executor.participant, recipient=worker, task_id=self.job.id, text=text)
            )
        self.delivered = len(self.messages)
        return sent

    def _cancel(self, kind: Any) -> None:
        assert self.worker is not None
        self.executor.send(
            CancelRequest(
                sender=self.executor.participant,
                recipient=self.worker,
                task_id=self.job.id,
                kind=kind,
                requested_by='owner',
            )
        )


def _messages(transcript: str | None) -> list[ModelMessage] | None:
    """A worker's transcript, as messages; `None` when it sent none, or one that does not load here."""
    if transcript is None:
        return None
    try:
        return ModelMessagesTypeAdapter.validate_json(transcript)
    except ValidationError:
        return None  # a follow-up is refused: its conversation is not kept
