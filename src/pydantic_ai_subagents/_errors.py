"""The exceptions this library raises: one class per failure a caller can act on, under one base."""

from __future__ import annotations

__all__ = (
    'BusClosedError',
    'BusError',
    'InvalidTransitionError',
    'MailboxFullError',
    'ManagerClosedError',
    'ReplyTimeoutError',
    'SubagentsError',
    'TaskAlreadyFinishedError',
    'TaskLimitError',
    'TaskNotContinuableError',
    'TaskNotFoundError',
    'TaskRefusedError',
    'UnknownRecipientError',
)


class SubagentsError(Exception):
    """Base class of every error raised by `pydantic_ai_subagents`."""


class InvalidTransitionError(SubagentsError):
    """A task was asked to move to a state its current state cannot reach."""

    def __init__(self, task_id: str, current: str, requested: str, message: str | None = None) -> None:
        self.task_id = task_id
        """The task that refused the transition."""
        self.current = current
        """The state the task is in."""
        self.requested = requested
        """The state that was requested."""
        super().__init__(message or f'task {task_id!r} cannot move from {current!r} to {requested!r}')


class TaskAlreadyFinishedError(InvalidTransitionError):
    """A task that already reached a terminal state was asked to change again."""

    def __init__(self, task_id: str, current: str, requested: str) -> None:
        super().__init__(
            task_id,
            current,
            requested,
            f'task {task_id!r} already finished as {current!r}; cannot move to {requested!r}',
        )


class TaskNotFoundError(SubagentsError, LookupError):
    """No task with this id is known (in this scope)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        """The id that was looked up."""
        super().__init__(f'no task with id {task_id!r}')


class TaskLimitError(SubagentsError):
    """A task could not be created because a limit (nesting depth, live tasks per conversation) was reached."""


class TaskNotContinuableError(SubagentsError):
    """A finished task cannot be continued: it is still live, of another subagent, or its conversation is not kept."""

    def __init__(self, task_id: str, reason: str) -> None:
        self.task_id = task_id
        """The task asked to be continued."""
        self.reason = reason
        """Why it cannot be, in words a model can act on."""
        super().__init__(f'task {task_id!r} cannot be continued: {reason}')


class TaskRefusedError(SubagentsError):
    """The application's `before_task` hook refused to start a task (or failed, which refuses it too)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        """Why, as the hook put it: the parent's model reads it."""
        super().__init__(f'task refused: {reason}')


class ManagerClosedError(SubagentsError):
    """The task manager was closed: it starts no new task and answers no request."""


class BusError(SubagentsError):
    """Base class of the message bus errors."""


class BusClosedError(BusError):
    """The message bus, or the mailbox or subscription used, was closed."""


class UnknownRecipientError(BusError, LookupError):
    """A message was sent to a participant that has no open mailbox."""

    def __init__(self, recipient: str) -> None:
        self.recipient = recipient
        """The participant the message was addressed to."""
        super().__init__(f'no open mailbox for participant {recipient!r}')


class MailboxFullError(BusError):
    """A bounded mailbox with the `'error'` overflow policy is full."""

    def __init__(self, recipient: str, capacity: int) -> None:
        self.recipient = recipient
        """The participant whose mailbox is full."""
        self.capacity = capacity
        """How many messages the mailbox holds at most."""
        super().__init__(f'mailbox of {recipient!r} is full ({capacity} messages)')


class ReplyTimeoutError(BusError, TimeoutError):
    """No reply to a request arrived within the timeout."""

    def __init__(self, correlation_id: str, timeout: float) -> None:
        self.correlation_id = correlation_id
        """The correlation id of the request that got no reply."""
        self.timeout = timeout
        """The number of seconds waited."""
        super().__init__(f'no reply to request {correlation_id!r} within {timeout:g} s')
