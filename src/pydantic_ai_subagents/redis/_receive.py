"""What Redis brings to the Redis bus: the streams of this process's mailboxes, published messages and replies.

The rules it keeps:

* **Only what decodes.** A message read from Redis that does not decode is logged, counted in `undecodable` and
  dropped; it never reaches an inbox.
* **Nobody to refuse to.** A message from Redis that a full local inbox with the `'error'` policy refuses is
  dropped and counted in `refused`: its sender is in another process and cannot be told.
* **Replies find their way back.** A request read from a mailbox remembers the reply channel of its asker (the
  most recent `MAX_REPLY_ROUTES` requests), so `reply` in this process can reach it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any, Final, cast

import anyio

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from .._bus import Mailbox, Message
from .._errors import MailboxFullError
from ._codec import Envelope, MessageCodecError, decode
from ._connect import retrying
from ._keys import BusKeys

__all__ = ('MAX_REPLY_ROUTES', 'Receiver')

logger = logging.getLogger('pydantic_ai_subagents.redis')

MAX_REPLY_ROUTES: Final = 10_000
"""How many requests from other processes keep the way back to their asker."""


class Receiver:
    """Reads from Redis for one bus and hands each message to where the bus puts it.

    The bus gives the places as callbacks: `to_mailbox` puts a message into a local mailbox, `to_subscribers`
    into the local subscriptions of its topic, and `to_asker` hands a reply to the local `ask` that waits for it.
    The first two raise [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError] when an `'error'` inbox is
    full. `on_listening` is called once a mailbox's stream is being read, when the mailbox can be listed.
    """

    def __init__(
        self,
        *,
        keys: BusKeys,
        instance_id: str,
        read_block: float,
        on_listening: Callable[[str], None],
        to_mailbox: Callable[[Mailbox, Message], None],
        to_subscribers: Callable[[Message], None],
        to_asker: Callable[[Message], None],
    ) -> None:
        self._keys = keys
        self._instance_id = instance_id
        self._read_block = read_block
        self._on_listening = on_listening
        self._to_mailbox = to_mailbox
        self._to_subscribers = to_subscribers
        self._to_asker = to_asker
        self._reply_routes: OrderedDict[str, str] = OrderedDict()
        self._pubsub: Any = None
        self.received = 0
        """Messages read from Redis and decoded."""
        self.undecodable = 0
        """Messages read from Redis and dropped because they could not be decoded."""
        self.refused = 0
        """Messages from Redis refused by a full local inbox with the `'error'` policy."""

    def reply_route(self, correlation_id: str) -> str | None:
        """The bus instance that waits for the reply to the request `correlation_id` read here, if known."""
        return self._reply_routes.get(correlation_id)

    def forget_route(self, correlation_id: str) -> None:
        """Forget the way back of a request once it is answered: a request gets one reply."""
        del self._reply_routes[correlation_id]

    async def read_mailbox(self, client: aioredis.Redis, box: Mailbox) -> None:
        """Feed one local mailbox from its stream until the mailbox closes (which cancels this pump)."""
        key = self._keys.mailbox(box.name)
        what = f'reading mailbox {box.name!r} from Redis'
        # Start after whatever the stream already holds (left from an earlier owner of the name), and only then
        # list the participant: everything sent by someone who saw the listing is read.
        last = cast('list[tuple[bytes, Any]]', await retrying(partial(client.xrevrange, key, count=1), what=what))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
        last_id: bytes | str = last[0][0] if last else '0-0'
        self._on_listening(box.name)
        block_ms = max(1, int(self._read_block * 1000))
        while True:
            # Ids grow with time, so reading on after `last_id` also works once Redis restarted without its data.
            read = partial(client.xread, {key: last_id}, block=block_ms, count=100)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            result = cast(
                'list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None', await retrying(read, what=what)
            )
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
            if len(routes) > MAX_REPLY_ROUTES:
                routes.popitem(last=False)
        try:
            self._to_mailbox(box, message)
        except MailboxFullError:
            self.refused += 1
            logger.warning('mailbox %r is full; dropped a %s from Redis', box.name, type(message).__name__)

    def _decode(self, raw: bytes | str | None) -> Envelope | None:
        if raw is None:
            self.undecodable += 1
            logger.error('dropped a Redis entry without a message')
            return None
        try:
            envelope = decode(raw)
        except MessageCodecError as exc:
            self.undecodable += 1
            logger.error('dropped a message read from Redis: %s', exc)
            return None
        self.received += 1
        return envelope

    async def subscribe(self, client: aioredis.Redis) -> None:
        """Subscribe to every topic of the namespace and to this bus's reply channel, for `read_published`.

        Once, when the bus connects: a subscription made with `subscribe` on the bus then receives everything
        published after it returns, with no subscribe round trip to wait for.
        """
        pubsub = client.pubsub()  # pyright: ignore[reportUnknownMemberType]
        await pubsub.psubscribe(self._keys.topic('*'))
        await pubsub.subscribe(self._keys.reply(self._instance_id))
        self._pubsub = pubsub

    async def read_published(self) -> None:
        """Receive published messages and the replies addressed to this bus, until cancelled; then unsubscribe."""
        pubsub = self._pubsub
        assert pubsub is not None
        reply_channel = self._keys.reply(self._instance_id).encode()
        own_origin = f'"origin":"{self._instance_id}"'.encode()
        # After a reconnect, redis-py subscribes the connection again to what it was subscribed to.
        receive = partial(pubsub.get_message, ignore_subscribe_messages=True, timeout=self._read_block)
        try:
            while True:
                item = await retrying(receive, what='reading published messages from Redis')
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
                    self._to_asker(message)
                elif envelope.origin != self._instance_id:
                    try:
                        self._to_subscribers(message)
                    except MailboxFullError:
                        self.refused += 1
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()
