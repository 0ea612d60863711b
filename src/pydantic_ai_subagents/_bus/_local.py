"""The half of a bus that lives in this process, shared by the in-memory and the Redis bus.

It owns the mailboxes and subscriptions open here, the `ask` calls waiting here and the counters. The rule it
keeps: **one event loop**. Nothing here is locked; every method runs on the thread of the bus's event loop, and
other threads reach that loop through `_run_on_loop`, which runs the call there and hands back its result or error.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import ClassVar, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._errors import BusClosedError, BusError, MailboxFullError, ReplyTimeoutError
from ._inbox import WILDCARD_TOPIC, Inbox, Mailbox, OverflowPolicy, Subscription, check_queue_options
from ._messages import Message

__all__ = ('LocalBus',)

_R = TypeVar('_R')


class _PendingReply:
    """The slot where `reply` leaves the answer an `ask` call waits for."""

    __slots__ = ('bus_closed', 'event', 'reply')

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.reply: Message | None = None
        self.bus_closed = False


class LocalBus(ABC):
    """The half of a bus that lives in this process, shared by the in-memory and the Redis bus.

    It keeps the mailboxes and subscriptions open here, the `ask` calls waiting here and the counters, delivers
    to them, and reaches the bus's event loop from other threads. Subclasses decide how the loop becomes known,
    what must hold before a call is allowed, and what happens beyond this process.
    """

    _UNBOUND_MESSAGE: ClassVar[str] = 'the message bus is not bound to an event loop yet'
    """The `BusError` text of a `*_threadsafe` call made before the event loop is known."""

    def __init__(self) -> None:
        self._mailboxes: dict[str, Mailbox] = {}
        self._topics: dict[str, dict[Subscription, None]] = {}
        self._pending: dict[str, _PendingReply] = {}
        self._closed = False
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._delivered = 0
        self._dropped_by_closed = 0

    @abstractmethod
    def send(self, message: Message) -> None:
        """Deliver `message` to the mailbox of `message.recipient` without waiting."""

    @abstractmethod
    def publish(self, message: Message) -> int:
        """Deliver `message` to every subscription of its topic; return how many in this process got it."""

    @abstractmethod
    def reply(self, request: Message, message: Message) -> bool:
        """Answer `request`, made with `ask`."""

    def send_threadsafe(self, message: Message) -> None:
        """`send` from any thread.

        The call runs on the bus's event loop; the calling thread waits only until it has run there (never for
        room in a mailbox), and gets its errors. Called on the loop thread itself, it simply sends.

        Raises:
            BusError: The bus is not bound to an event loop yet (never used in one, or not started), so there is
                no loop to reach.
            BusClosedError: The bus is closed, or its event loop has finished.
        """
        self._run_on_loop(partial(self.send, message))

    def publish_threadsafe(self, message: Message) -> int:
        """`publish` from any thread, by the rules of `send_threadsafe`.

        Returns:
            How many subscriptions of this process received the message.
        """
        return self._run_on_loop(partial(self.publish, message))

    def reply_threadsafe(self, request: Message, message: Message) -> bool:
        """`reply` from any thread, by the rules of `send_threadsafe`.

        Returns:
            What `reply` returns.
        """
        return self._run_on_loop(partial(self.reply, request, message))

    def _run_on_loop(self, func: Callable[[], _R]) -> _R:
        token = self._token
        if token is None:
            raise BusError(self._UNBOUND_MESSAGE)
        if threading.get_ident() == self._loop_thread:
            return func()
        try:
            return anyio.from_thread.run_sync(func, token=token)
        except anyio.RunFinishedError:
            raise BusClosedError('the event loop that ran the message bus has finished') from None

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError('the message bus is closed')

    def _local_counts(self) -> dict[str, int]:
        """The [`BusStats`][pydantic_ai_subagents.BusStats] counters of this process, as keyword arguments."""
        dropped = self._dropped_by_closed
        subscriptions = 0
        for box in self._mailboxes.values():
            dropped += box.dropped
        for subs in self._topics.values():
            subscriptions += len(subs)
            for sub in subs:
                dropped += sub.dropped
        return {
            'delivered': self._delivered,
            'dropped': dropped,
            'mailboxes': len(self._mailboxes),
            'subscriptions': subscriptions,
            'pending_replies': len(self._pending),
        }

    # -- local inboxes --

    def _open_local_mailbox(
        self, participant: str, max_buffer: int, overflow: OverflowPolicy, on_wait: Callable[[], None]
    ) -> Mailbox:
        """Check the options, refuse a name already open here, and register a new mailbox."""
        check_queue_options(max_buffer, overflow)
        if participant in self._mailboxes:
            raise BusError(f'participant {participant!r} already has an open mailbox; close it before opening another')
        box = Mailbox(
            participant, max_buffer=max_buffer, overflow=overflow, on_close=self._forget_mailbox, on_wait=on_wait
        )
        self._mailboxes[participant] = box
        return box

    def _open_local_subscription(
        self, topic: str, max_buffer: int, overflow: OverflowPolicy, on_wait: Callable[[], None]
    ) -> Subscription:
        """Check the options and register a new subscription."""
        check_queue_options(max_buffer, overflow)
        sub = Subscription(
            topic, max_buffer=max_buffer, overflow=overflow, on_close=self._forget_subscription, on_wait=on_wait
        )
        self._topics.setdefault(topic, {})[sub] = None
        return sub

    def _forget_mailbox(self, inbox: Inbox) -> None:
        """Unregister a closing mailbox, keeping its drop count for the statistics."""
        assert isinstance(inbox, Mailbox)
        self._dropped_by_closed += inbox.dropped
        del self._mailboxes[inbox.name]

    def _forget_subscription(self, inbox: Inbox) -> None:
        """Unregister a closing subscription, keeping its drop count for the statistics."""
        assert isinstance(inbox, Subscription)
        self._dropped_by_closed += inbox.dropped
        subs = self._topics[inbox.topic]
        del subs[inbox]
        if not subs:
            del self._topics[inbox.topic]

    # -- local delivery --

    def _deliver_published(self, message: Message, topic: str | None) -> int:
        """Put `message` into every local subscription of `topic` (none if `None`) and of the wildcard topic.

        Returns:
            How many subscriptions received it.

        Raises:
            MailboxFullError: A subscription was full and uses the `'error'` policy; the others still got the
                message and are counted.
        """
        reached = 0
        refused: MailboxFullError | None = None
        topics = self._topics
        for subs in (topics.get(topic) if topic is not None else None, topics.get(WILDCARD_TOPIC)):
            if not subs:
                continue
            for sub in subs:
                try:
                    sub._put(message)  # pyright: ignore[reportPrivateUsage]
                except MailboxFullError as exc:
                    refused = refused or exc
                else:
                    reached += 1
        self._delivered += reached
        if refused is not None:
            raise refused
        return reached

    # -- request / reply --

    async def _ask(self, message: Message, timeout: float, send: Callable[[Message], None]) -> Message:
        """Make room for the reply to `message`, hand the request to `send`, and wait for the answer."""
        if message.correlation_id is None:
            message = replace(message, correlation_id=uuid.uuid4().hex)
        correlation_id = message.correlation_id
        assert correlation_id is not None
        if correlation_id in self._pending:
            raise BusError(f'a request with correlation id {correlation_id!r} is already waiting for its reply')
        pending = _PendingReply()
        self._pending[correlation_id] = pending
        try:
            send(message)
            with anyio.move_on_after(timeout):
                await pending.event.wait()
        finally:
            if self._pending.get(correlation_id) is pending:
                del self._pending[correlation_id]
        if pending.reply is not None:
            return pending.reply
        if pending.bus_closed:
            raise BusClosedError('the message bus was closed while waiting for a reply')
        raise ReplyTimeoutError(correlation_id, timeout)

    def _hand_reply(self, pending: _PendingReply, reply: Message) -> None:
        """Give `reply` to the `ask` call waiting on `pending` and wake it."""
        pending.reply = reply
        pending.event.set()
        self._delivered += 1

    # -- closing --

    def _close_local(self) -> bool:
        """Close every local inbox and wake every local asker; return `False` if the bus was already closed."""
        if self._closed:
            return False
        self._closed = True
        for box in list(self._mailboxes.values()):
            box.close()
        for subs in list(self._topics.values()):
            for sub in list(subs):
                sub.close()
        pending = list(self._pending.values())
        self._pending.clear()
        for waiter in pending:
            waiter.bus_closed = True
            waiter.event.set()
        return True
