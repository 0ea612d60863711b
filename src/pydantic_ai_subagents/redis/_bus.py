"""A message bus shared by several processes through a Redis server.

[`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] implements the same
[`MessageBus`][pydantic_ai_subagents.MessageBus] protocol as the in-memory bus. Reading stays local: mailboxes and
subscriptions are the ordinary bounded [`Mailbox`][pydantic_ai_subagents.Mailbox] and
[`Subscription`][pydantic_ai_subagents.Subscription] queues. Writing stays synchronous and non-blocking: `send`,
`publish` and `reply` put the message on a local outbox, and background pumps move it through Redis.

Redis keys, all under the bus's `namespace`:

* `{namespace}:mbox:{participant}`: a Redis Stream per participant. `send` appends (`XADD`, approximately capped,
  with an idle expiry); the process where the mailbox is open reads it (`XREAD BLOCK`) into the local mailbox.
* `{namespace}:participants`: a sorted set of the mailboxes open anywhere, scored by the moment their lease runs
  out. Each process renews the leases of its own open mailboxes and removes them when they close; a process that
  dies without closing loses its entries when the lease expires.
* `{namespace}:topic:{topic}`: the pub/sub channel of a topic (`PUBLISH`). Each bus pattern-subscribes to all
  topics of its namespace once, when it starts, and filters locally, so a subscription made with `subscribe`
  receives everything published after it returns, with no subscribe round trip to wait for.
* `{namespace}:reply:{instance}`: the pub/sub channel where a bus receives the replies to its own `ask` calls.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Self, cast

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

from .._bus import DEFAULT_MAX_BUFFER, WILDCARD_TOPIC, BusStats, Inbox, Mailbox, Message, OverflowPolicy, Subscription
from .._bus._local import LocalBus
from .._errors import BusClosedError, BusError, MailboxFullError, UnknownRecipientError
from ._codec import Envelope, MessageCodecError, decode, encode, is_registered

__all__ = ('RedisBusStats', 'RedisMessageBus')

logger = logging.getLogger('pydantic_ai_subagents.redis')

_GLOB_CHARS: Final = frozenset('*?[]\\')
_MAX_REPLY_ROUTES: Final = 10_000
_CLOSE_FLUSH_TIMEOUT: Final = 2.0

_Op = tuple[Literal['xadd', 'publish', 'lease', 'unlease'], str, str]
"""An outbox entry: (what, key or participant, payload)."""


@dataclass(frozen=True, kw_only=True)
class RedisBusStats(BusStats):
    """The counters of a [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus].

    The inherited counters are about this process: `delivered` counts messages put into its own mailboxes and
    subscriptions (whether they came from this process or through Redis), `mailboxes` and `subscriptions` are
    the ones open here.
    """

    written: int = 0
    """Messages written to Redis (mailbox appends, publishes and replies)."""
    received: int = 0
    """Messages read from Redis and decoded."""
    undecodable: int = 0
    """Messages read from Redis and dropped because they could not be decoded (unknown type, bad fields)."""
    local_only: int = 0
    """Published messages of an unregistered class: delivered in this process only."""
    refused: int = 0
    """Messages from Redis refused by a full local inbox with the `'error'` policy (nobody to raise to)."""
    outbox: int = 0
    """Operations waiting in the local outbox to be written to Redis."""
    write_errors: int = 0
    """Failed attempts to write a batch to Redis (the batch is retried)."""
    known_participants: int = 0
    """Participants with an open mailbox somewhere, as last seen by this process."""


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
      and it fills up, `send` and `publish` raise [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError]
      (recipient `'<redis outbox>'`) rather than block. Failed writes are retried, so a message may be written
      twice after a connection error.
    """

    def __init__(
        self,
        url: str = 'redis://localhost:6379/0',
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
            url: The Redis server, as a `redis://` (or `rediss://`, `unix://`) URL.
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
        """The Redis server."""
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

        self._client: aioredis.Redis | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._owner: int | None = None
        self._started = False
        self._finished = False

        self._readers: dict[str, anyio.CancelScope] = {}
        self._registered: set[str] = set()
        self._reply_routes: OrderedDict[str, str] = OrderedDict()
        self._known: frozenset[str] = frozenset()

        self._outbox: deque[_Op] = deque()
        self._outbox_messages = 0
        self._outbox_wakeup = anyio.Event()
        self._in_flight = 0
        self._progress = anyio.Event()
        self._pumps = 0
        self._scopes: set[anyio.CancelScope] = set()
        self._pumps_idle = anyio.Event()
        self._pumps_idle.set()

        self._written = 0
        self._received = 0
        self._undecodable = 0
        self._local_only = 0
        self._refused = 0
        self._write_errors = 0
        self._warned_local_only: set[type[Message]] = set()

    # -- keys --

    def _mailbox_key(self, participant: str) -> str:
        return f'{self.namespace}:mbox:{participant}'

    def _topic_channel(self, topic: str) -> str:
        return f'{self.namespace}:topic:{topic}'

    def _reply_channel(self, instance: str) -> str:
        return f'{self.namespace}:reply:{instance}'

    @property
    def _participants_key(self) -> str:
        return f'{self.namespace}:participants'

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        if self._closed:
            raise BusClosedError('the message bus is closed')
        if self._started:
            raise BusError('this RedisMessageBus was already started')
        client = aioredis.Redis.from_url(self.url)  # pyright: ignore[reportUnknownMemberType]
        try:
            await client.ping()  # pyright: ignore[reportUnknownMemberType]
            pubsub = client.pubsub()  # pyright: ignore[reportUnknownMemberType]
            await pubsub.psubscribe(self._topic_channel('*'))  # pyright: ignore[reportUnknownMemberType]
            await pubsub.subscribe(self._reply_channel(self.instance_id))  # pyright: ignore[reportUnknownMemberType]
        except BaseException:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise
        self._client = client
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        await self._refresh_known()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._owner = id(anyio.get_current_task())
        self._started = True
        self._spawn(self._write_pump)
        self._spawn(self._pubsub_pump, pubsub)
        self._spawn(self._lease_pump)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        tg = self._tg
        if tg is not None:
            self._tg = None
            await tg.__aexit__(None, None, None)

    def _spawn(self, func: Callable[..., Awaitable[None]], *args: Any, scope: anyio.CancelScope | None = None) -> None:
        """Start a pump in the bus's task group, under a cancel scope of its own that `aclose` cancels."""
        assert self._tg is not None
        if self._pumps == 0:
            self._pumps_idle = anyio.Event()
        self._pumps += 1
        scope = scope or anyio.CancelScope()
        self._scopes.add(scope)
        self._tg.start_soon(self._run_pump, scope, func, *args)

    async def _run_pump(self, scope: anyio.CancelScope, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            with scope:
                await func(*args)
        except Exception:
            logger.exception('redis bus pump %s failed', getattr(func, '__name__', func))
        finally:
            self._scopes.discard(scope)
            self._pumps -= 1
            if self._pumps == 0:
                self._pumps_idle.set()
                self._progress.set()  # wake `flush`: nothing is left to write the outbox

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
        self._stop_pumps()

    def _close_inboxes(self) -> None:
        if self._close_local():
            self._outbox_wakeup.set()

    def _stop_pumps(self) -> None:
        # Only the pumps' own scopes: the task group's scope also covers the body of `async with bus:`.
        for scope in list(self._scopes):
            scope.cancel()

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
            self._stop_pumps()
            await self._pumps_idle.wait()
            if not self._finished and self._client is not None:
                self._finished = True
                await self._client.aclose()
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
            written=self._written,
            received=self._received,
            undecodable=self._undecodable,
            local_only=self._local_only,
            refused=self._refused,
            outbox=len(self._outbox),
            write_errors=self._write_errors,
            known_participants=len(self._known | self._mailboxes.keys()),
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
        self._spawn(self._read_mailbox, box, scope=scope)
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
        if inbox.name in self._registered:
            self._registered.discard(inbox.name)
            self._outbox.append(('unlease', inbox.name, ''))
            self._outbox_wakeup.set()

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
                    if participant in self._registered:
                        await self.flush()
                        return
                else:
                    score = await self._client.zscore(self._participants_key, participant)  # pyright: ignore[reportUnknownMemberType]
                    if score is not None and float(score) > time.time():
                        self._known = self._known | {participant}
                        return
                await anyio.sleep(0.01)
                self._check_open()
        raise TimeoutError(f'participant {participant!r} did not open a mailbox within {timeout:g} s')

    async def flush(self) -> None:
        """Wait until everything sent, published or replied so far has been written to Redis.

        Raises:
            BusClosedError: The bus closed before the outbox was written.
        """
        await self._wait_flushed()
        if self._outbox or self._in_flight:
            raise BusClosedError('the message bus closed before its outbox was written')

    async def _wait_flushed(self) -> None:
        while (self._outbox or self._in_flight) and self._pumps:
            progress = self._progress = anyio.Event() if self._progress.is_set() else self._progress
            await progress.wait()

    # -- sending --

    def _enqueue(self, op: _Op) -> None:
        if self._outbox_messages >= self.max_outbox:
            raise MailboxFullError('<redis outbox>', self.max_outbox)
        self._outbox.append(op)
        self._outbox_messages += 1
        self._outbox_wakeup.set()

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
        if recipient not in self._known:
            raise UnknownRecipientError(recipient)
        payload = encode(message, origin=self.instance_id, reply_to=reply_to)
        self._enqueue(('xadd', self._mailbox_key(recipient), payload))

    def publish(self, message: Message) -> int:
        """Deliver `message` to every subscription of its topic (and of `'*'`), in every process.

        Returns:
            How many subscriptions of this process received it.

        Raises:
            BusClosedError: The bus is closed.
            BusError: The bus was not started.
            ValueError: The message has no topic, or its topic is the wildcard `'*'`.
            MailboxFullError: A local subscription was full and uses the `'error'` policy (the others, local and
                remote, still get the message), or the outbox is full.
        """
        self._check_usable()
        topic = message.topic
        if topic is None:
            raise ValueError(f'{type(message).__name__} has no topic; set `topic` to publish it')
        if topic == WILDCARD_TOPIC:
            raise ValueError(f'{WILDCARD_TOPIC!r} only works for subscribing; publish under a concrete topic')
        if is_registered(type(message)):
            self._enqueue(('publish', self._topic_channel(topic), encode(message, origin=self.instance_id)))
        else:
            self._local_only += 1
            if type(message) not in self._warned_local_only:
                self._warned_local_only.add(type(message))
                logger.info(
                    '%s is not registered for Redis; it is published to this process only', type(message).__qualname__
                )
        return self._deliver_published(message, topic)

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
        route = self._reply_routes.get(correlation_id)
        if route is None:
            return False
        payload = encode(answer, origin=self.instance_id)
        self._enqueue(('publish', self._reply_channel(route), payload))
        del self._reply_routes[correlation_id]
        return True

    # -- other threads --

    def send_threadsafe(self, message: Message) -> None:
        """[`send`][pydantic_ai_subagents.redis.RedisMessageBus.send] from any thread.

        Raises:
            BusError: The bus was never started, so there is no loop to reach.
            BusClosedError: The bus is closed, or its event loop has finished.
        """
        self._run_on_loop(partial(self.send, message))

    def publish_threadsafe(self, message: Message) -> int:
        """[`publish`][pydantic_ai_subagents.redis.RedisMessageBus.publish] from any thread."""
        return self._run_on_loop(partial(self.publish, message))

    def reply_threadsafe(self, request: Message, message: Message) -> bool:
        """[`reply`][pydantic_ai_subagents.redis.RedisMessageBus.reply] from any thread."""
        return self._run_on_loop(partial(self.reply, request, message))

    # -- pumps --

    async def _write_pump(self) -> None:
        """Drain the outbox into Redis, a pipeline per batch, retrying a batch that failed."""
        client = self._client
        assert client is not None
        backoff = 0.05
        while True:
            if not self._outbox:
                self._outbox_wakeup = anyio.Event()
                if not self._outbox:
                    await self._outbox_wakeup.wait()
                continue
            batch = list(self._outbox)
            self._outbox.clear()
            self._in_flight = len(batch)
            try:
                await self._write_batch(client, batch)
            except RedisError as exc:
                self._write_errors += 1
                logger.warning('writing to Redis failed (%s); retrying in %.2f s', exc, backoff)
                self._outbox.extendleft(reversed(batch))
                self._in_flight = 0
                self._progress.set()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            sent = sum(1 for op in batch if op[0] in ('xadd', 'publish'))
            self._written += sent
            self._outbox_messages -= sent
            self._in_flight = 0
            self._progress.set()

    async def _write_batch(self, client: aioredis.Redis, batch: list[_Op]) -> None:
        pipe = client.pipeline(transaction=False)  # pyright: ignore[reportUnknownMemberType]
        ttl = max(1, int(self.stream_ttl))
        for kind, key, payload in batch:
            if kind == 'xadd':
                pipe.xadd(key, {'m': payload}, maxlen=self.stream_max_len, approximate=True)  # pyright: ignore[reportUnknownMemberType]
                pipe.expire(key, ttl)  # pyright: ignore[reportUnknownMemberType]
            elif kind == 'publish':
                pipe.publish(key, payload)  # pyright: ignore[reportUnknownMemberType]
            elif kind == 'lease':
                pipe.zadd(self._participants_key, {key: time.time() + self.lease_seconds})  # pyright: ignore[reportUnknownMemberType]
            else:
                pipe.zrem(self._participants_key, key)  # pyright: ignore[reportUnknownMemberType]
        await pipe.execute()  # pyright: ignore[reportUnknownMemberType]

    async def _read_mailbox(self, box: Mailbox) -> None:
        """Feed one local mailbox from its stream until the mailbox closes (which cancels this pump)."""
        client = self._client
        assert client is not None
        key = self._mailbox_key(box.name)
        backoff = 0.05
        while True:
            try:
                # Start after whatever the stream already holds (left from an earlier owner of the name), and
                # only then list the participant: everything sent by someone who saw the listing is read.
                last = cast('list[tuple[bytes, Any]]', await client.xrevrange(key, count=1))  # pyright: ignore[reportUnknownMemberType]
                break
            except RedisError as exc:
                logger.warning('reading mailbox %r from Redis failed (%s); retrying', box.name, exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        last_id: bytes | str = last[0][0] if last else '0-0'
        self._registered.add(box.name)
        self._outbox.append(('lease', box.name, ''))
        self._outbox_wakeup.set()
        block_ms = max(1, int(self.read_block * 1000))
        backoff = 0.05
        while True:
            try:
                result = cast(
                    'list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None',
                    await client.xread({key: last_id}, block=block_ms, count=100),  # pyright: ignore[reportUnknownMemberType]
                )
            except RedisError as exc:
                logger.warning('reading mailbox %r from Redis failed (%s); retrying', box.name, exc)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            for _stream, entries in result or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._on_mailbox_entry(box, fields.get(b'm'))

    def _on_mailbox_entry(self, box: Mailbox, raw: bytes | None) -> None:
        envelope = self._decode(raw)
        if envelope is None or box.closed:
            return
        message = envelope.message
        if envelope.reply_to is not None and message.correlation_id is not None:
            routes = self._reply_routes
            routes[message.correlation_id] = envelope.reply_to
            if len(routes) > _MAX_REPLY_ROUTES:
                routes.popitem(last=False)
        try:
            box._put(message)  # pyright: ignore[reportPrivateUsage]
        except MailboxFullError:
            self._refused += 1
            logger.warning('mailbox %r is full; dropped a %s from Redis', box.name, type(message).__name__)
        else:
            self._delivered += 1

    def _decode(self, raw: bytes | str | None) -> Envelope | None:
        if raw is None:
            self._undecodable += 1
            logger.error('dropped a Redis entry without a message')
            return None
        try:
            envelope = decode(raw)
        except MessageCodecError as exc:
            self._undecodable += 1
            logger.error('dropped a message read from Redis: %s', exc)
            return None
        self._received += 1
        return envelope

    async def _pubsub_pump(self, pubsub: Any) -> None:
        """Receive published messages and replies addressed to this bus."""
        reply_channel = self._reply_channel(self.instance_id).encode()
        own_origin = f'"origin":"{self.instance_id}"'.encode()
        backoff = 0.05
        try:
            while True:
                try:
                    item = await pubsub.get_message(ignore_subscribe_messages=True, timeout=self.read_block)
                except RedisError as exc:
                    logger.warning('reading published messages from Redis failed (%s); retrying', exc)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                if item is None:
                    continue
                data = cast('dict[str, Any]', item)
                raw = data.get('data')
                if isinstance(raw, bytes) and own_origin in raw and data.get('channel') != reply_channel:
                    continue  # this bus's own publish, already delivered here: not worth decoding
                envelope = self._decode(raw)
                if envelope is None:
                    continue
                message: Message = envelope.message
                if data.get('channel') == reply_channel:
                    correlation_id = message.correlation_id
                    pending = self._pending.pop(correlation_id, None) if correlation_id is not None else None
                    if pending is not None:
                        self._hand_reply(pending, message)
                elif envelope.origin != self.instance_id:
                    try:
                        self._deliver_published(message, message.topic)
                    except MailboxFullError:
                        self._refused += 1
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    async def _lease_pump(self) -> None:
        """Renew this process's leases and refresh its copy of the participants set."""
        client = self._client
        assert client is not None
        while True:
            await anyio.sleep(self.refresh_interval)
            for name in self._registered:
                self._outbox.append(('lease', name, ''))
            if self._registered:
                self._outbox_wakeup.set()
            with contextlib.suppress(RedisError):
                await self._refresh_known()

    async def _refresh_known(self) -> None:
        client = self._client
        assert client is not None
        now = time.time()
        pipe = client.pipeline(transaction=False)  # pyright: ignore[reportUnknownMemberType]
        pipe.zremrangebyscore(self._participants_key, '-inf', now)  # pyright: ignore[reportUnknownMemberType]
        pipe.zrangebyscore(self._participants_key, now, '+inf')  # pyright: ignore[reportUnknownMemberType]
        results: list[Any] = await pipe.execute()  # pyright: ignore[reportUnknownMemberType]
        names = cast('list[bytes]', results[1])
        self._known = frozenset(name.decode() for name in names)


def _nothing() -> None:
    """The inbox waiting hook: the loop is known from the start, so there is nothing to do."""
