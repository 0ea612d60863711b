"""The reading end of the bus: bounded first-in first-out queues of messages.

[`Mailbox`][pydantic_ai_subagents.Mailbox] (point to point) and [`Subscription`][pydantic_ai_subagents.Subscription]
(publish/subscribe) are both an [`Inbox`][pydantic_ai_subagents.Inbox]. The rules they keep:

* **Bounded.** An inbox holds at most `max_buffer` messages
  ([`DEFAULT_MAX_BUFFER`][pydantic_ai_subagents.DEFAULT_MAX_BUFFER] unless told otherwise), so a reader that
  stopped reading costs a fixed amount of memory.
* **Putting never blocks.** When an inbox is full, its [`OverflowPolicy`][pydantic_ai_subagents.OverflowPolicy]
  drops the oldest message (`'drop_oldest'`) or refuses the new one
  ([`MailboxFullError`][pydantic_ai_subagents.MailboxFullError], `'error'`); a stuck reader never stalls a sender.
* **Closing keeps what is queued.** A closed inbox still hands out its queued messages, then raises
  [`BusClosedError`][pydantic_ai_subagents.BusClosedError].
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Final, Literal, Self

import anyio
import anyio.lowlevel

from .._errors import BusClosedError, MailboxFullError
from ._messages import Message

__all__ = (
    'DEFAULT_MAX_BUFFER',
    'WILDCARD_TOPIC',
    'Inbox',
    'Mailbox',
    'OverflowPolicy',
    'Subscription',
)

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


def check_queue_options(max_buffer: int, overflow: str) -> None:
    """Refuse a `max_buffer` below 1 or an unknown overflow policy with `ValueError`, before an inbox is made."""
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
