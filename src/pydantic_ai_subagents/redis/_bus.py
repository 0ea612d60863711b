"""A message bus shared by several processes through a Redis server.

[`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] implements the same
[`MessageBus`][pydantic_ai_subagents.MessageBus] protocol as the in-memory bus. Reading stays local: mailboxes and
subscriptions are the ordinary bounded [`Mailbox`][pydantic_ai_subagents.Mailbox] and
[`Subscription`][pydantic_ai_subagents.Subscription] queues. Writing stays synchronous and non-blocking: `send`,
`publish` and `reply` put the message on a local outbox, and background pumps move it through Redis.

The Redis keys it uses are described in `_keys`; the outbox (`_outbox`), the participants set (`_participants`)
and the reading side (`_receive`) are collaborators of their own, so this module keeps what a bus is to its users.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from functools import partial
from types import TracebackType
from typing import ClassVar, Final, Self

import anyio
import anyio.abc
import anyio.lowlevel

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from .._bus import DEFAULT_MAX_BUFFER, WILDCARD_TOPIC, Inbox, Mailbox, Message, OverflowPolicy, Subscription
from .._bus._local import LocalBus
from .._errors import BusClosedError, BusError, UnknownRecipientError
from ._codec import encode
from ._connect import Connection, RedisSource, open_connection
from ._keys import BusKeys
from ._outbox import Outbox
from ._participants import Participants
from ._pump import Pumps
from ._receive import Receiver
from ._stats import RedisBusStats

__all__ = ('RedisMessageBus',)

_GLOB_CHARS: Final = frozenset('*?[]\\')
_CLOSE_FLUSH_TIMEOUT: Final = 2.0


class RedisMessageBus(LocalBus):
    """A [`MessageBus`][pydantic_ai_subagents.MessageBus] that several processes share through one Redis server.

    A message sent in one process to a participant whose mailbox is open in another arrives there; a message
    published in one process reaches the subscriptions of every process; `ask` in one process gets the `reply`
    made in another. Messages to a mailbox or subscription of the same process are delivered directly, exactly as
    the in-memory bus does (with its overflow errors).

    Use it as `async with RedisMessageBus(url) as bus:`, which connects and starts the background pumps in a task
    group; leaving the block (or [`aclose`][pydantic_ai_subagents.redis.RedisMessageBus.aclose]) writes what is
    still in the outbox, stops the pumps, closes every inbox (waking its readers with
    [`BusClosedError`][pydantic_ai_subagents.BusClosedError]) and closes the connection. Every method except the
    `*_threadsafe` ones runs on the thread of the event loop that entered it; it runs on asyncio (the Redis
    client needs it).

    Rules that differ from the in-memory bus, because Redis sits in between:

    * **Unknown recipients.** `send` to a participant with no mailbox open here checks a local copy of the
      `participants` set, refreshed every `refresh_interval` seconds: a participant unknown there raises
      [`UnknownRecipientError`][pydantic_ai_subagents.UnknownRecipientError] at once. The copy can be stale by
      up to `refresh_interval`: a mailbox just opened elsewhere may still be refused (use
      [`wait_for_participant`][pydantic_ai_subagents.redis.RedisMessageBus.wait_for_participant] to wait for
      it), and a message to one just closed elsewhere is written to Redis and never read. A process that dies
      without closing its mailboxes keeps them listed until their lease (`lease_seconds`) runs out.
    * **Remote overflow.** A full remote mailbox cannot refuse a message to the sender: with `'drop_oldest'` it
      drops as usual, with `'error'` the new message is dropped and counted in `refused`.
    * **Return values.** `publish` returns how many subscriptions of this process got the message (others are
      reached through Redis, uncounted). `reply` to a request from another process returns `True` when this
      process received the request and had not answered it yet; the asker may have given up meanwhile.
    * **What crosses processes.** Only messages of registered classes: the built-in kinds, the manager's
      [`TaskEventMessage`][pydantic_ai_subagents.TaskEventMessage] (with the record it changed), plus those given
      to [`register_message_type`][pydantic_ai_subagents.redis.register_message_type]. Publishing another class
      reaches this process's subscribers only and is counted in `local_only`; sending one to another process
      raises [`MessageCodecError`][pydantic_ai_subagents.redis.MessageCodecError]. A message read from Redis that
      cannot be decoded is logged and dropped, and counted in `undecodable`.
    * **One process per participant.** A participant's mailbox should be open in one process at a time; two
      processes opening the same name would both read its messages.
    * **The outbox.** Writes wait in a local outbox of at most `max_outbox` messages; when Redis is slow or gone
      and it fills up, `send` raises [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError] (recipient
      `'<redis outbox>'`) rather than block, and `publish` still reaches this process's subscriptions (the copy
      for other processes is dropped and counted in `unpublished`). Failed writes are retried, so a message may be
      written twice after a connection error.
    """

    def __init__(
        self,
        url: RedisSource = 'redis://localhost:6379/0',
        *,
        namespace: str = 'subagents',
        refresh_interval: float = 0.5,
        lease_seconds: float = 15.0,
        max_outbox: int = 10_000,
        stream_max_len: int = 10_000,
        stream_ttl: float = 3600.0,
        read_block: float = 1.0,
    ) -> None:
        """Describe the bus; nothing connects until `async with`.

        Args:
            url: The Redis server: a `redis://` (or `rediss://`, `unix://`) URL, or a ready `redis.asyncio` client
                or connection pool (a Sentinel's `master_for(...)` client included), used as given and left open.
                A client made from a URL retries each command on a connection error with jittered backoff.
            namespace: Prefix of every key and channel; buses share messages only within one namespace.
            refresh_interval: Seconds between refreshes of the local copy of the participants set (and renewals
                of this process's leases).
            lease_seconds: How long an open mailbox stays listed without being renewed, which bounds how long a
                crashed process's mailboxes look open to others. Must exceed `refresh_interval`.
            max_outbox: How many messages may wait to be written to Redis before sending fails.
            stream_max_len: Approximate cap on the length of a mailbox stream; older entries are trimmed.
            stream_ttl: Seconds a mailbox stream lives after its last append.
            read_block: Seconds a blocking read waits on Redis before it polls again.
        """
        if not namespace or _GLOB_CHARS.intersection(namespace):
            raise ValueError(f'namespace must be non-empty and free of glob characters, got {namespace!r}')
        if refresh_interval <= 0 or lease_seconds <= refresh_interval:
            raise ValueError('refresh_interval must be positive and lease_seconds larger than it')
        if max_outbox < 1 or stream_max_len < 1 or stream_ttl <= 0 or read_block <= 0:
            raise ValueError('max_outbox, stream_max_len, stream_ttl and read_block must be positive')
        super().__init__()
        self.url = url
        """The Redis server (a URL, or the client or pool given)."""
        self.namespace = namespace
        """Prefix of every key and channel."""
        self.instance_id = uuid.uuid4().hex
        """This bus's id: the origin of its messages and the address of its reply channel."""
        self.refresh_interval = refresh_interval
        self.lease_seconds = lease_seconds
        self.max_outbox = max_outbox
        self.stream_max_len = stream_max_len
        self.stream_ttl = stream_ttl
        self.read_block = read_block

        self._keys = BusKeys(namespace)
        self._outbox = Outbox(
            keys=self._keys,
            max_messages=max_outbox,
            stream_max_len=stream_max_len,
            stream_ttl=stream_ttl,
            lease_seconds=lease_seconds,
        )
        self._participants = Participants(
            key=self._keys.participants, outbox=self._outbox, refresh_interval=refresh_interval
        )
        self._receiver = Receiver(
            keys=self._keys,
            instance_id=self.instance_id,
            read_block=read_block,
            on_listening=self._participants.list,
            to_mailbox=self._put_from_redis,
            to_subscribers=self._publish_from_redis,
            to_asker=self._reply_from_redis,
        )

        self._client: aioredis.Redis | None = None
        self._connection: Connection | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._started = False
        self._finished = False

        self._readers: dict[str, anyio.CancelScope] = {}
        # When no pump is left, nothing will write the outbox: wake `flush`.
        self._pumps = Pumps(on_idle=self._outbox.pump.notify)

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        if self._closed:
            raise BusClosedError('the message bus is closed')
        if self._started:
            raise BusError('this RedisMessageBus was already started')
        self._connection = await open_connection(self.url, self._receiver.subscribe)
        client = self._client = self._outbox.client = self._connection.client
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        await self._participants.refresh(client)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._pumps.attach(tg)
        self._started = True
        self._pumps.spawn(self._outbox.pump.run)
        self._pumps.spawn(self._receiver.read_published)
        self._pumps.spawn(self._participants.run, client)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        tg = self._tg
        if tg is not None:
            self._tg = None
            await tg.__aexit__(None, None, None)

    @property
    def closed(self) -> bool:
        """Whether the bus was closed."""
        return self._closed

    def close(self) -> None:
        """Close the bus without waiting.

        Every mailbox and subscription is closed (readers get what is queued, then
        [`BusClosedError`][pydantic_ai_subagents.BusClosedError]), every pending `ask` fails with `BusClosedError`,
        later sends raise it, and the pumps are cancelled. What is still in the outbox is not written; prefer
        [`aclose`][pydantic_ai_subagents.redis.RedisMessageBus.aclose], which writes it first and closes the
        connection. Closing twice does nothing.
        """
        self._close_inboxes()
        self._pumps.stop()

    def _close_inboxes(self) -> None:
        if self._close_local():
            self._outbox.pump.wake()

    async def aclose(self) -> None:
        """Close the bus and wait until nothing of it is left running.

        Closes every inbox and wakes every waiter like [`close`][pydantic_ai_subagents.redis.RedisMessageBus.close],
        then gives the outbox a moment to reach Redis (so other processes see this one's mailboxes go), stops the
        pumps and closes the connection. Idempotent; may be called from any task of the bus's loop.
        """
        if self._finished:
            return
        self._close_inboxes()
        with anyio.CancelScope(shield=True):
            if self._client is not None:
                with anyio.move_on_after(_CLOSE_FLUSH_TIMEOUT):
                    await self._wait_flushed()
            self._pumps.stop()
            await self._pumps.wait_idle()
            if not self._finished and self._connection is not None:
                self._finished = True
                await self._connection.aclose()
            self._finished = True

    # -- loop binding --

    _UNBOUND_MESSAGE: ClassVar[str] = 'the Redis message bus was not started; enter `async with bus:` first'

    def _check_usable(self) -> None:
        self._check_open()
        if not self._started:
            raise BusError('the Redis message bus was not started; use `async with RedisMessageBus(url) as bus:`')

    # -- stats --

    def stats(self) -> RedisBusStats:
        """Return a snapshot of the bus's counters."""
        return RedisBusStats(
            **self._local_counts(),
            written=self._outbox.written,
            received=self._receiver.received,
            undecodable=self._receiver.undecodable,
            local_only=self._outbox.local_only,
            unpublished=self._outbox.unpublished,
            refused=self._receiver.refused,
            outbox=len(self._outbox),
            write_errors=self._outbox.pump.errors,
            known_participants=len(self._participants.known | self._mailboxes.keys()),
        )

    # -- mailboxes and subscriptions --

    def open_mailbox(
        self, participant: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Mailbox:
        """Open the mailbox that receives the messages sent to `participant`, from this process or any other.

        Messages sent from this process arrive at once. Other processes can reach it once it is listed in Redis
        (a moment after this call) and their copy of the participants set has caught up; see
        [`wait_for_participant`][pydantic_ai_subagents.redis.RedisMessageBus.wait_for_participant].

        Args:
            participant: The name messages are addressed to.
            max_buffer: How many unread messages the mailbox holds at most.
            overflow: What happens when a message arrives while the mailbox is full.

        Raises:
            BusError: `participant` already has an open mailbox in this process, or the bus was not started.
            BusClosedError: The bus is closed.
            ValueError: `max_buffer` is below 1 or `overflow` is not a known policy.
        """
        self._check_usable()
        box = self._open_local_mailbox(participant, max_buffer, overflow, _nothing)
        scope = anyio.CancelScope()
        self._readers[participant] = scope
        assert self._client is not None
        self._pumps.spawn(self._receiver.read_mailbox, self._client, box, scope=scope)
        return box

    def subscribe(
        self, topic: str, *, max_buffer: int = DEFAULT_MAX_BUFFER, overflow: OverflowPolicy = 'drop_oldest'
    ) -> Subscription:
        """Receive a copy of every message published under `topic`, in this process or any other.

        Messages published anywhere after this call returns are received (those from other processes once they
        leave their outbox). A subscription to [`WILDCARD_TOPIC`][pydantic_ai_subagents.WILDCARD_TOPIC] (`'*'`)
        receives every published message.

        Raises:
            BusClosedError: The bus is closed.
            BusError: The bus was not started.
            ValueError: `max_buffer` is below 1 or `overflow` is not a known policy.
        """
        self._check_usable()
        return self._open_local_subscription(topic, max_buffer, overflow, _nothing)

    def _forget_mailbox(self, inbox: Inbox) -> None:
        super()._forget_mailbox(inbox)
        assert isinstance(inbox, Mailbox)
        scope = self._readers.pop(inbox.name, None)
        if scope is not None:
            scope.cancel()
        self._participants.unlist(inbox.name)

    async def wait_for_participant(self, participant: str, *, timeout: float = 5.0) -> None:
        """Wait until `participant` has a mailbox open in some process and this process knows it.

        After it returns, `send` to `participant` no longer raises `UnknownRecipientError` (until the mailbox
        closes), and every message sent from now on reaches the mailbox.

        Raises:
            TimeoutError: The participant did not show up within `timeout` seconds.
            BusClosedError: The bus is closed, or was closed while waiting.
        """
        self._check_usable()
        assert self._client is not None
        with anyio.move_on_after(timeout):
            while True:
                if participant in self._mailboxes:
                    # Local sends are immediate; wait for the listing so other processes can see it too.
                    if self._participants.is_listed(participant):
                        await self.flush()
                        return
                elif await self._lookup(participant):
                    return
                await anyio.sleep(0.01)
                self._check_open()
        raise TimeoutError(f'participant {participant!r} did not open a mailbox within {timeout:g} s')

    async def _lookup(self, participant: str) -> bool:
        assert self._client is not None
        try:
            return await self._participants.lookup(self._client, participant)
        except RedisError:
            return False  # Redis is away: ask again on the next round

    async def flush(self) -> None:
        """Wait until everything sent, published or replied so far has been written to Redis.

        Raises:
            BusClosedError: The bus closed before the outbox was written.
        """
        await self._wait_flushed()
        if self._outbox.busy:
            raise BusClosedError('the message bus closed before its outbox was written')

    async def _wait_flushed(self) -> None:
        await self._outbox.pump.wait(lambda: self._outbox.busy and self._pumps.running > 0)

    # -- sending --

    def send(self, message: Message) -> None:
        """Deliver `message` to the mailbox of `message.recipient`, in this process or another, without waiting.

        Raises:
            BusClosedError: The bus is closed.
            BusError: The bus was not started.
            ValueError: The message has no recipient.
            UnknownRecipientError: No mailbox of the recipient is open here, nor known to be open elsewhere.
            MailboxFullError: The local mailbox is full and uses the `'error'` policy, or the outbox is full.
            MessageCodecError: The recipient is in another process and the message's class is not registered.
        """
        self._send(message, reply_to=None)

    def _send(self, message: Message, *, reply_to: str | None) -> None:
        self._check_usable()
        recipient = message.recipient
        if recipient is None:
            raise ValueError(f'{type(message).__name__} has no recipient; set `recipient` to send it point to point')
        box = self._mailboxes.get(recipient)
        if box is not None:
            box._put(message)  # pyright: ignore[reportPrivateUsage]
            self._delivered += 1
            return
        if recipient not in self._participants.known:
            raise UnknownRecipientError(recipient)
        payload = encode(message, origin=self.instance_id, reply_to=reply_to)
        self._outbox.put(('xadd', self._keys.mailbox(recipient), payload))

    def publish(self, message: Message) -> int:
        """Deliver `message` to every subscription of its topic (and of `'*'`), in every process.

        The subscriptions of this process get it at once, whatever state Redis is in; other processes get it once
        it leaves the outbox. When the outbox is full (Redis slow or gone), the copy for other processes is dropped
        and counted in `unpublished`: a publish never fails for Redis.

        Returns:
            How many subscriptions of this process received it.

        Raises:
            BusClosedError: The bus is closed.
            BusError: The bus was not started.
            ValueError: The message has no topic, or its topic is the wildcard `'*'`.
            MailboxFullError: A local subscription was full and uses the `'error'` policy (the others, local and
                remote, still get the message).
        """
        self._check_usable()
        topic = message.topic
        if topic is None:
            raise ValueError(f'{type(message).__name__} has no topic; set `topic` to publish it')
        if topic == WILDCARD_TOPIC:
            raise ValueError(f'{WILDCARD_TOPIC!r} only works for subscribing; publish under a concrete topic')
        try:
            return self._deliver_published(message, topic)
        finally:
            self._outbox.put_published(self._keys.topic(topic), message, origin=self.instance_id)

    # -- request / reply --

    async def ask(self, message: Message, *, timeout: float) -> Message:
        """Send `message` to its recipient, in this process or another, and wait for the reply.

        A fresh `correlation_id` is set unless the request has one. The waiting is cleaned up however it ends.

        Returns:
            The reply, with the request's `correlation_id`.

        Raises:
            ReplyTimeoutError: No reply came within `timeout` seconds.
            BusClosedError: The bus is closed, or was closed while waiting.
            BusError: Another request with the same correlation id is still waiting, or the bus was not started.
            UnknownRecipientError: The recipient is not known to have an open mailbox.
        """
        self._check_usable()
        return await self._ask(message, timeout, partial(self._send, reply_to=self.instance_id))

    def reply(self, request: Message, message: Message) -> bool:
        """Answer `request`, made with `ask` in this process or another.

        The reply gets the request's `correlation_id` and is addressed to the request's sender.

        Returns:
            For a request made here: whether the asker got the reply. For one from another process: whether the
            request was received here and not answered yet (the reply is then on its way; the asker may have
            given up meanwhile).

        Raises:
            BusClosedError: The bus is closed.
            MessageCodecError: The asker is in another process and the reply's class is not registered.
        """
        self._check_usable()
        correlation_id = request.correlation_id
        if correlation_id is None:
            return False
        answer = replace(message, correlation_id=correlation_id, recipient=request.sender)
        pending = self._pending.pop(correlation_id, None)
        if pending is not None:
            self._hand_reply(pending, answer)
            return True
        route = self._receiver.reply_route(correlation_id)
        if route is None:
            return False
        payload = encode(answer, origin=self.instance_id)
        self._outbox.put(('publish', self._keys.reply(route), payload))
        self._receiver.forget_route(correlation_id)
        return True

    # -- what the receiver brings from Redis --

    def _put_from_redis(self, box: Mailbox, message: Message) -> None:
        box._put(message)  # pyright: ignore[reportPrivateUsage]
        self._delivered += 1

    def _publish_from_redis(self, message: Message) -> None:
        self._deliver_published(message, message.topic)

    def _reply_from_redis(self, message: Message) -> None:
        correlation_id = message.correlation_id
        pending = self._pending.pop(correlation_id, None) if correlation_id is not None else None
        if pending is not None:
            self._hand_reply(pending, message)


def _nothing() -> None:
    """The inbox waiting hook: the loop is known from the start, so there is nothing to do."""
