"""What the rest of the library needs from a message bus, whichever backend carries the messages.

The [`MessageBus`][pydantic_ai_subagents.MessageBus] protocol is the whole contract between the task manager and a
bus: the manager calls these members and nothing else, so a backend that differs (in memory, Redis) differs inside
them, never through an attribute the manager would have to look for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ._inbox import DEFAULT_MAX_BUFFER, Mailbox, OverflowPolicy, Subscription
from ._messages import Message

__all__ = ('BusStats', 'MessageBus')


@dataclass(frozen=True, kw_only=True)
class BusStats:
    """A snapshot of a bus's counters."""

    delivered: int
    """Messages put into a mailbox or subscription, or handed to an asker, since the bus was made."""
    dropped: int
    """Messages thrown away by the `'drop_oldest'` policy, over all mailboxes and subscriptions ever opened."""
    mailboxes: int
    """Mailboxes open now."""
    subscriptions: int
    """Subscriptions open now."""
    pending_replies: int
    """Requests made with `ask` that still wait for their reply."""


class MessageBus(Protocol):
    """What the rest of the library needs from a message bus.

    [`InMemoryMessageBus`][pydantic_ai_subagents.InMemoryMessageBus] is the implementation shipped with the library.
    """

    @property
    def closed(self) -> bool:
        """Whether the bus was closed."""
        ...

    def open_mailbox(
        self, participant: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Mailbox:
        """Open the mailbox that receives the messages sent to `participant`."""
        ...

    def subscribe(
        self, topic: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Subscription:
        """Receive a copy of every message published under `topic` (`'*'`: every topic)."""
        ...

    async def wait_for_participant(self, participant: str, *, timeout: float = 5.0) -> None:
        """Wait until `participant` has an open mailbox that this bus can send to.

        Returns at once when it has one. After it returns, `send` to `participant` no longer raises
        [`UnknownRecipientError`][pydantic_ai_subagents.UnknownRecipientError] (until the mailbox closes).

        Raises:
            TimeoutError: The participant did not open a mailbox within `timeout` seconds.
            BusClosedError: The bus is closed, or was closed while waiting.
        """
        ...

    def send(self, message: Message) -> None:
        """Deliver `message` to the mailbox of its recipient, without waiting."""
        ...

    def publish(self, message: Message) -> int:
        """Deliver `message` to every subscription of its topic; return how many were reached."""
        ...

    async def ask(self, message: Message, *, timeout: float) -> Message:
        """Send a request and wait at most `timeout` seconds for its reply."""
        ...

    def reply(self, request: Message, message: Message) -> bool:
        """Answer a request made with `ask`; return whether someone was still waiting for the answer."""
        ...

    def send_threadsafe(self, message: Message) -> None:
        """Like `send`, callable from any thread."""
        ...

    def publish_threadsafe(self, message: Message) -> int:
        """Like `publish`, callable from any thread."""
        ...

    def reply_threadsafe(self, request: Message, message: Message) -> bool:
        """Like `reply`, callable from any thread."""
        ...

    def stats(self) -> BusStats:
        """Return a snapshot of the bus's counters."""
        ...

    def close(self) -> None:
        """Close the bus and wake everyone waiting on it."""
        ...

    async def aclose(self) -> None:
        """Close the bus and wake everyone waiting on it."""
        ...
