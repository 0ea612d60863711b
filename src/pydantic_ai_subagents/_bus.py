"""An in-memory message bus: how the parent agent, the task manager and the subagents talk to each other.

The bus carries typed, immutable [`Message`][pydantic_ai_subagents.Message] objects in three ways:

* **point to point**: [`send`][pydantic_ai_subagents.InMemoryMessageBus.send] puts a message into the
  [`Mailbox`][pydantic_ai_subagents.Mailbox] of its `recipient`;
* **publish/subscribe**: [`publish`][pydantic_ai_subagents.InMemoryMessageBus.publish] copies a message into
  every [`Subscription`][pydantic_ai_subagents.Subscription] of its `topic` (and of the wildcard topic `'*'`);
* **request/reply**: [`ask`][pydantic_ai_subagents.InMemoryMessageBus.ask] sends a request and waits for the
  answer that the recipient hands to [`reply`][pydantic_ai_subagents.InMemoryMessageBus.reply].

The rules it follows:

* **Bounded.** Every mailbox and subscription holds at most `max_buffer` messages
  ([`DEFAULT_MAX_BUFFER`][pydantic_ai_subagents.DEFAULT_MAX_BUFFER] unless told otherwise), so a reader that
  stopped reading costs a fixed amount of memory, never an ever-growing queue.
* **Sending never blocks.** When a queue is full, its [`OverflowPolicy`][pydantic_ai_subagents.OverflowPolicy]
  decides: `'drop_oldest'` (the default) throws the oldest queued message away and counts it in `dropped`;
  `'error'` refuses the new message with [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError]. There
  is deliberately no waiting for room: a stuck or dead reader must never stall the component that sends to it.
* **One event loop.** The bus is not locked: every method runs on the thread of the event loop that uses it
  (asyncio or trio, through anyio). Other threads, such as the handler thread of a web framework, go through
  [`send_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.send_threadsafe],
  [`publish_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.publish_threadsafe] and
  [`reply_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.reply_threadsafe], which run the call on that loop
  and return its result (or raise its error). The bus learns its loop the first time it is used inside it; before
  that, these methods raise [`BusError`][pydantic_ai_subagents.BusError]. Called on the loop thread itself, they
  simply make the call.
* **Closing.** Closing a mailbox or subscription frees its name or topic slot; its reader still gets the
  messages already queued, then [`BusClosedError`][pydantic_ai_subagents.BusClosedError] (and `async for`
  simply ends). Closing the bus closes every mailbox and subscription the same way, wakes every waiting reader
  and asker with `BusClosedError`, and makes every later send fail with it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import ClassVar, Final, Literal, Protocol, Self, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._errors import BusClosedError, BusError, MailboxFullError, ReplyTimeoutError, UnknownRecipientError

__all__ = (
    'DEFAULT_MAX_BUFFER',
    'WILDCARD_TOPIC',
    'Answer',
    'BusStats',
    'CancelRequest',
    'InMemoryMessageBus',
    'Inbox',
    'Mailbox',
    'Message',
    'MessageBus',
    'MessageT',
    'OverflowPolicy',
    'Progress',
    'Question',
    'StatusChanged',
    'Subscription',
    'TaskAssigned',
    'TaskResult',
)

_R = TypeVar('_R')

DEFAULT_MAX_BUFFER: Final = 1024
"""How many messages a mailbox or subscription holds unless told otherwise.

Large enough that an ordinary burst (a subagent streaming progress while its reader is busy for a moment) loses
nothing, small enough that a reader which stopped reading holds on to a bounded, modest amount of memory.
"""

WILDCARD_TOPIC: Final = '*'
"""The topic whose subscriptions receive every published message, whatever its topic."""

OverflowPolicy = Literal['drop_oldest', 'error']
"""What happens when a message arrives at a full mailbox or subscription.

* `'drop_oldest'`: the oldest queued message is thrown away to make room and the queue's `dropped` counter grows.
* `'error'`: the new message is refused and the sender gets
  [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError].
"""

_OVERFLOW_POLICIES: Final = frozenset[str](('drop_oldest', 'error'))


# --- messages -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Message:
    """Base class of everything carried by the bus; immutable, so one instance can safely reach many readers."""

    sender: str
    """Name of the participant that sent the message; replies to a request go back to it."""
    recipient: str | None = None
    """Name of the participant whose mailbox receives the message; required by `send` and `ask`."""
    topic: str | None = None
    """Topic the message is published under; required by `publish`."""
    correlation_id: str | None = None
    """Ties a reply to its request; `ask` fills it in when it is missing."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Unique id of this message."""
    created_at: float = field(default_factory=time.time)
    """When the message was created, in seconds since the epoch."""


MessageT = TypeVar('MessageT', bound=Message)
"""A type variable standing for any [`Message`][pydantic_ai_subagents.Message] subclass."""


@dataclass(frozen=True, kw_only=True)
class TaskAssigned(Message):
    """A task was handed to a subagent."""

    task_id: str
    """The task concerned."""
    subagent: str
    """Name of the subagent that runs the task."""
    description: str
    """What the subagent was asked to do."""


@dataclass(frozen=True, kw_only=True)
class CancelRequest(Message):
    """Someone asks for a task to be cancelled."""

    task_id: str
    """The task to cancel."""
    kind: Literal['soft', 'hard']
    """`'soft'` lets the task wind down at its next safe point; `'hard'` stops it at once."""
    requested_by: str
    """Who asked for the cancellation."""


@dataclass(frozen=True, kw_only=True)
class Question(Message):
    """A task asks its parent something and waits for the [`Answer`][pydantic_ai_subagents.Answer]."""

    task_id: str
    """The task that asks."""
    question: str
    """The question, in plain text."""


@dataclass(frozen=True, kw_only=True)
class Answer(Message):
    """The answer to a [`Question`][pydantic_ai_subagents.Question]."""

    task_id: str
    """The task that asked."""
    answer: str
    """The answer, in plain text."""


@dataclass(frozen=True, kw_only=True)
class Progress(Message):
    """A task reports how it is getting on."""

    task_id: str
    """The task reporting."""
    text: str
    """The progress note, in plain text."""


@dataclass(frozen=True, kw_only=True)
class TaskResult(Message):
    """A task finished, one way or another."""

    task_id: str
    """The task that finished."""
    status: str
    """The state the task ended in."""
    output: str | None = None
    """What the task produced, if it succeeded."""
    error: str | None = None
    """What went wrong, if it failed."""


@dataclass(frozen=True, kw_only=True)
class StatusChanged(Message):
    """A task moved from one state to another."""

    task_id: str
    """The task that changed."""
    old: str | None
    """The state it left, or `None` when the task was just created."""
    new: str
    """The state it entered."""


# --- queues ---------------------------------------------------------------------------------------------------


def _check_queue_options(max_buffer: int, overflow: str) -> None:
    if max_buffer < 1:
        raise ValueError(f'max_buffer must be at least 1, got {max_buffer}')
    if overflow not in _OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be 'drop_oldest' or 'error', got {overflow!r}")


class Inbox:
    """The reading end of the bus, shared by mailboxes and subscriptions.

    [`Mailbox`][pydantic_ai_subagents.Mailbox] and [`Subscription`][pydantic_ai_subagents.Subscription] are both
    a bounded first-in first-out queue of messages. Read it with
    [`receive`][pydantic_ai_subagents.Inbox.receive], [`receive_nowait`][pydantic_ai_subagents.Inbox.receive_nowait]
    or `async for message in inbox:`, which ends once the inbox is closed and empty. It is also a context manager,
    both `with` and `async with`, that closes it on exit.

    Inboxes are made by the bus; do not create them directly. Use them only on the bus's event loop thread.
    """

    __slots__ = (
        '_closed',
        '_items',
        '_label',
        '_max_buffer',
        '_on_close',
        '_on_wait',
        '_overflow',
        '_waiter',
        'dropped',
    )

    dropped: int
    """How many messages the `'drop_oldest'` policy threw away so far."""

    def __init__(
        self,
        label: str,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_close: Callable[[Inbox], None],
        on_wait: Callable[[], None],
    ) -> None:
        self._label = label
        self._max_buffer = max_buffer
        self._overflow: OverflowPolicy = overflow
        self._items: deque[Message] = deque()
        self._waiter: anyio.Event | None = None
        self._closed = False
        self._on_close = on_close
        self._on_wait = on_wait
        self.dropped = 0

    @property
    def max_buffer(self) -> int:
        """How many messages the inbox holds at most."""
        return self._max_buffer

    @property
    def overflow(self) -> OverflowPolicy:
        """What happens when a message arrives while the inbox is full."""
        return self._overflow

    @property
    def queued(self) -> int:
        """How many messages wait to be read."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether the inbox (or its bus) was closed; queued messages can still be read."""
        return self._closed

    def _put(self, message: Message) -> None:
        """Queue a message, applying the overflow policy, and wake a waiting reader."""
        items = self._items
        if len(items) >= self._max_buffer:
            if self._overflow == 'error':
                raise MailboxFullError(self._label, self._max_buffer)
            items.popleft()
            self.dropped += 1
        items.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def receive(self) -> Message:
        """Wait for the next message and return it.

        Messages already queued are still returned after the inbox or the bus was closed.

        Raises:
            BusClosedError: The inbox or the bus is closed and no message is left.
        """
        await anyio.lowlevel.checkpoint()
        items = self._items
        while True:
            if items:
                return items.popleft()
            if self._closed:
                raise BusClosedError(f'{self._label!r} is closed')
            waiter = self._waiter
            if waiter is None:
                self._on_wait()
                waiter = self._waiter = anyio.Event()
            await waiter.wait()

    def receive_nowait(self) -> Message | None:
        """Return the next message if one is queued, else `None`, without waiting.

        Raises:
            BusClosedError: The inbox or the bus is closed and no message is left.
        """
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise BusClosedError(f'{self._label!r} is closed')
        return None

    def close(self) -> None:
        """Close the inbox: it accepts no new message and its waiting readers wake up.

        Queued messages can still be read. Closing twice does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.receive()
        except BusClosedError:
            raise StopAsyncIteration from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Mailbox(Inbox):
    """The point-to-point inbox of one participant, opened with `open_mailbox`.

    While it is open, messages sent to its [`name`][pydantic_ai_subagents.Mailbox.name] land here. Closing it frees
    the name, which can then be opened again.
    """

    __slots__ = ('name',)

    name: str
    """The participant this mailbox belongs to."""

    def __init__(
        self,
        name: str,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: OverflowPolicy = 'drop_oldest',
        on_close: Callable[[Inbox], None],
        on_wait: Callable[[], None],
    ) -> None:
        super().__init__(name, max_buffer=max_buffer, overflow=overflow, on_close=on_close, on_wait=on_wait)
        self.name = name

    def __repr__(self) -> str:
        return f'Mailbox(name={self.name!r}, queued={self.queued}, dropped={self.dropped}, closed={self.closed})'


class Subscription(Inbox):
    """An inbox that receives a copy of every message published under its topic.

    It is made by `subscribe`. A subscription to [`WILDCARD_TOPIC`][pydantic_ai_subagents.WILDCARD_TOPIC]
    (`'*'`) receives every published message. Closing it ends the subscription.
    """

    __slots__ = ('topic',)

    topic: str
    """The topic subscribed to."""

    def __init__(
        self,
        topic: str,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: OverflowPolicy = 'drop_oldest',
        on_close: Callable[[Inbox], None],
        on_wait: Callable[[], None],
    ) -> None:
        super().__init__(topic, max_buffer=max_buffer, overflow=overflow, on_close=on_close, on_wait=on_wait)
        self.topic = topic

    def __repr__(self) -> str:
        return f'Subscription(topic={self.topic!r}, queued={self.queued}, dropped={self.dropped}, closed={self.closed})'


# --- the bus --------------------------------------------------------------------------------------------------


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


class _PendingReply:
    """The slot where `reply` leaves the answer an `ask` call waits for."""

    __slots__ = ('bus_closed', 'event', 'reply')

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.reply: Message | None = None
        self.bus_closed = False


class _LocalBus:
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
        _check_queue_options(max_buffer, overflow)
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
        _check_queue_options(max_buffer, overflow)
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


class InMemoryMessageBus(_LocalBus):
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

    # -- other threads --

    def send_threadsafe(self, message: Message) -> None:
        """[`send`][pydantic_ai_subagents.InMemoryMessageBus.send] from any thread.

        The call runs on the bus's event loop; the calling thread waits only until it has run there (never for
        room in a mailbox), and gets its errors. Called on the loop thread itself, it simply sends.

        Raises:
            BusError: The bus was never used inside an event loop, so there is no loop to reach.
            BusClosedError: The bus is closed, or its event loop has finished.
        """
        self._run_on_loop(partial(self.send, message))

    def publish_threadsafe(self, message: Message) -> int:
        """[`publish`][pydantic_ai_subagents.InMemoryMessageBus.publish] from any thread.

        Same rules as [`send_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.send_threadsafe].

        Returns:
            How many subscriptions received the message.
        """
        return self._run_on_loop(partial(self.publish, message))

    def reply_threadsafe(self, request: Message, message: Message) -> bool:
        """[`reply`][pydantic_ai_subagents.InMemoryMessageBus.reply] from any thread.

        Same rules as [`send_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.send_threadsafe].

        Returns:
            Whether the asker got the reply.
        """
        return self._run_on_loop(partial(self.reply, request, message))

    # -- closing --

    def close(self) -> None:
        """Close the bus.

        Every mailbox and subscription is closed (their readers still get what is queued, then
        [`BusClosedError`][pydantic_ai_subagents.BusClosedError]), every pending `ask` fails with `BusClosedError`,
        and every later send, publish or reply raises it. Closing twice does nothing.
        """
        self._close_local()

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
