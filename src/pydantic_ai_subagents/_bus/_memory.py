"""[`InMemoryMessageBus`][pydantic_ai_subagents.InMemoryMessageBus]: the bus of a single process.

Sending never blocks and never waits for room (see the inbox rules in the package docstring), every method runs on
the bus's event loop, and the `*_threadsafe` methods are the only way in from other threads.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from types import TracebackType
from typing import ClassVar, Self

import anyio
import anyio.lowlevel

from .._errors import BusClosedError, UnknownRecipientError
from ._inbox import DEFAULT_MAX_BUFFER, WILDCARD_TOPIC, Mailbox, OverflowPolicy, Subscription
from ._local import LocalBus
from ._messages import Message
from ._protocol import BusStats

__all__ = ('InMemoryMessageBus',)


class InMemoryMessageBus(LocalBus):
    """A [`MessageBus`][pydantic_ai_subagents.MessageBus] that lives in the memory of one process.

    Built on anyio, so it runs on asyncio and on trio. All methods except the `*_threadsafe` ones must be called
    on the thread of the event loop that uses the bus. The bus learns that loop the first time it is used inside
    it (entering `async with`, opening a mailbox or subscription, sending, publishing, asking or waiting on a
    receive); from then on the `*_threadsafe` methods can reach it from any thread.

    Example:
        ```python
        async with InMemoryMessageBus() as bus:
            with bus.open_mailbox('worker') as inbox:
                bus.send(Progress(sender='parent', recipient='worker', task_id='t1', text='hello'))
                message = await inbox.receive()
        ```
    """

    _UNBOUND_MESSAGE: ClassVar[str] = (
        'the message bus has not been used inside an event loop yet, so it cannot be reached from another '
        'thread; use it in its loop first (for example `async with bus:` or opening a mailbox)'
    )

    def __init__(self) -> None:
        super().__init__()
        self._arrivals: dict[str, set[anyio.Event]] = {}
        """Per participant without a mailbox, the events of the `wait_for_participant` calls waiting for one."""

    # -- loop binding --

    def _bind(self) -> None:
        """Remember the event loop running in this thread, if there is one and none is known yet."""
        if self._token is not None:
            return
        try:
            token = anyio.lowlevel.current_token()
        except anyio.NoEventLoopError:
            return
        self._token = token
        self._loop_thread = threading.get_ident()

    # -- state --

    @property
    def closed(self) -> bool:
        """Whether the bus was closed."""
        return self._closed

    def stats(self) -> BusStats:
        """Return a snapshot of the bus's counters."""
        return BusStats(**self._local_counts())

    # -- mailboxes and subscriptions --

    def open_mailbox(
        self, participant: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Mailbox:
        """Open the mailbox that receives the messages sent to `participant`.

        Args:
            participant: The name messages are addressed to.
            max_buffer: How many unread messages the mailbox holds at most.
            overflow: What happens when a message arrives while the mailbox is full.

        Raises:
            BusError: `participant` already has an open mailbox.
            BusClosedError: The bus is closed.
            ValueError: `max_buffer` is below 1 or `overflow` is not a known policy.
        """
        self._check_open()
        box = self._open_local_mailbox(participant, max_buffer, overflow, self._bind)
        self._bind()
        for arrived in self._arrivals.pop(participant, ()):
            arrived.set()
        return box

    def subscribe(
        self, topic: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Subscription:
        """Receive a copy of every message published under `topic`.

        Any number of subscriptions may share a topic. A subscription to
        [`WILDCARD_TOPIC`][pydantic_ai_subagents.WILDCARD_TOPIC] (`'*'`) receives every published message.

        Args:
            topic: The topic to follow, or `'*'` for all of them.
            max_buffer: How many unread messages the subscription holds at most.
            overflow: What happens when a message arrives while the subscription is full.

        Raises:
            BusClosedError: The bus is closed.
            ValueError: `max_buffer` is below 1 or `overflow` is not a known policy.
        """
        self._check_open()
        sub = self._open_local_subscription(topic, max_buffer, overflow, self._bind)
        self._bind()
        return sub

    async def wait_for_participant(self, participant: str, *, timeout: float = 5.0) -> None:
        """Wait until `participant` has an open mailbox.

        Returns at once when it has one; otherwise waits until
        [`open_mailbox`][pydantic_ai_subagents.InMemoryMessageBus.open_mailbox] opens it. After it returns, `send`
        to `participant` no longer raises [`UnknownRecipientError`][pydantic_ai_subagents.UnknownRecipientError]
        (until the mailbox closes). The same contract as the Redis bus's, where a mailbox may open in another
        process.

        Args:
            participant: The name whose mailbox to wait for.
            timeout: How many seconds to wait at most.

        Raises:
            TimeoutError: The participant did not open a mailbox within `timeout` seconds.
            BusClosedError: The bus is closed, or was closed while waiting.
        """
        await anyio.lowlevel.checkpoint()
        self._check_open()
        self._bind()
        with anyio.move_on_after(timeout):
            while participant not in self._mailboxes:
                arrived = anyio.Event()
                waiting = self._arrivals.setdefault(participant, set())
                waiting.add(arrived)
                try:
                    await arrived.wait()
                finally:
                    waiting.discard(arrived)
                    if not waiting and self._arrivals.get(participant) is waiting:
                        del self._arrivals[participant]
                self._check_open()
        if participant in self._mailboxes:
            return  # also when it opened just as the time ran out
        self._check_open()
        raise TimeoutError(f'participant {participant!r} did not open a mailbox within {timeout:g} s')

    def has_subscribers(self, topic: str) -> bool:
        """Whether a message published under `topic` would reach a subscription now (of the topic or the wildcard).

        A publisher can then skip building a message nobody would read.
        """
        return bool(self._topics.get(topic) or self._topics.get(WILDCARD_TOPIC))

    # -- sending --

    def send(self, message: Message) -> None:
        """Deliver `message` to the mailbox of `message.recipient`, without waiting.

        If the mailbox is full, its overflow policy applies. Call this on the bus's event loop thread; other
        threads use [`send_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.send_threadsafe].

        Raises:
            BusClosedError: The bus is closed.
            ValueError: The message has no recipient.
            UnknownRecipientError: The recipient has no open mailbox.
            MailboxFullError: The recipient's mailbox is full and uses the `'error'` policy.
        """
        if self._closed:
            raise BusClosedError('the message bus is closed')
        recipient = message.recipient
        if recipient is None:
            raise ValueError(f'{type(message).__name__} has no recipient; set `recipient` to send it point to point')
        box = self._mailboxes.get(recipient)
        if box is None:
            raise UnknownRecipientError(recipient)
        if self._token is None:
            self._bind()
        box._put(message)  # pyright: ignore[reportPrivateUsage]
        self._delivered += 1

    def publish(self, message: Message) -> int:
        """Deliver `message` to every subscription of `message.topic` and of the wildcard topic.

        Publishing to a topic nobody follows is fine. A full subscription with the `'error'` policy misses the
        message, but the others still get it before the error is raised.

        Returns:
            How many subscriptions received the message.

        Raises:
            BusClosedError: The bus is closed.
            ValueError: The message has no topic, or its topic is the wildcard `'*'`.
            MailboxFullError: A subscription was full and uses the `'error'` policy (its `recipient` attribute is
                the topic).
        """
        if self._closed:
            raise BusClosedError('the message bus is closed')
        topic = message.topic
        if topic is None:
            raise ValueError(f'{type(message).__name__} has no topic; set `topic` to publish it')
        if topic == WILDCARD_TOPIC:
            raise ValueError(f'{WILDCARD_TOPIC!r} only works for subscribing; publish under a concrete topic')
        if self._token is None:
            self._bind()
        return self._deliver_published(message, topic)

    # -- request / reply --

    async def ask(self, message: Message, *, timeout: float) -> Message:
        """Send `message` to its recipient and wait for the answer.

        The recipient answers with [`reply`][pydantic_ai_subagents.InMemoryMessageBus.reply]. A fresh
        `correlation_id` is set on the request unless it already has one. The waiting is cleaned up however it
        ends: reply, timeout, cancellation or closing of the bus.

        Args:
            message: The request; it needs a recipient with an open mailbox.
            timeout: How many seconds to wait for the reply.

        Returns:
            The reply, with the request's `correlation_id`.

        Raises:
            ReplyTimeoutError: No reply came within `timeout` seconds.
            BusClosedError: The bus is closed, or was closed while waiting.
            BusError: Another request with the same correlation id is still waiting.
        """
        self._check_open()
        self._bind()
        return await self._ask(message, timeout, self.send)

    def reply(self, request: Message, message: Message) -> bool:
        """Hand `message`, as the answer to `request`, to the caller waiting for it.

        That caller waits in [`ask`][pydantic_ai_subagents.InMemoryMessageBus.ask]. The reply is given the
        request's `correlation_id` and is addressed to the request's sender.

        Returns:
            `True` if the asker got the reply; `False` if nobody waits for it any more (the asker timed out or
            was cancelled, the request was already answered, or it was not made with `ask`).

        Raises:
            BusClosedError: The bus is closed.
        """
        self._check_open()
        correlation_id = request.correlation_id
        if correlation_id is None:
            return False
        pending = self._pending.pop(correlation_id, None)
        if pending is None:
            return False
        self._hand_reply(pending, replace(message, correlation_id=correlation_id, recipient=request.sender))
        return True

    # -- closing --

    def close(self) -> None:
        """Close the bus.

        Every mailbox and subscription is closed (their readers still get what is queued, then
        [`BusClosedError`][pydantic_ai_subagents.BusClosedError]), every pending `ask` fails with `BusClosedError`,
        and every later send, publish or reply raises it, as does every `wait_for_participant` call. Closing twice
        does nothing.
        """
        self._close_local()
        arrivals = [arrived for waiting in self._arrivals.values() for arrived in waiting]
        self._arrivals.clear()
        for arrived in arrivals:
            arrived.set()

    async def aclose(self) -> None:
        """Close the bus, like [`close`][pydantic_ai_subagents.InMemoryMessageBus.close]."""
        self.close()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    async def __aenter__(self) -> Self:
        self._check_open()
        self._bind()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
