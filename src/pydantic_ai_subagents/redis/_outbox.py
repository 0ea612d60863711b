"""The Redis bus's outbox: the writes that wait for Redis, and the pump that makes them in order.

`send`, `publish` and `reply` never wait for Redis: they queue an operation here and return. The rules it keeps:

* **Bounded.** At most `max_messages` messages wait; one more sent to a mailbox raises
  [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError] (recipient `'<redis outbox>'`) rather than block or
  grow without end. Lease renewals are not messages: they are never refused.
* **A publish never fails for Redis.** Its local subscribers have it before the outbox is asked; when the outbox is
  full, the copy for other processes is dropped and counted in `unpublished` (pub/sub reaches other processes at most
  once anyway, and they read the records again from the store), and one warning is logged per outage.
* **In order.** Operations reach Redis in the order they were queued (see `WritePump`).
* **Only what others can read.** A published message of a class not registered for Redis stays in this process
  (counted in `local_only`, logged once per class) rather than reach other processes as something they cannot
  decode.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Final, Literal

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from .._bus import Message
from .._errors import MailboxFullError
from ._codec import encode, is_registered
from ._keys import BusKeys
from ._pump import WritePump

__all__ = ('Op', 'Outbox')

Op = tuple[Literal['xadd', 'publish', 'lease', 'unlease'], str, str]
"""An outbox entry: (what, key or participant, payload)."""

logger = logging.getLogger('pydantic_ai_subagents.redis')

_FULL_RECIPIENT: Final = '<redis outbox>'


class Outbox:
    """The operations a bus queued for Redis, written in order by its pump."""

    def __init__(
        self, *, keys: BusKeys, max_messages: int, stream_max_len: int, stream_ttl: float, lease_seconds: float
    ) -> None:
        self._keys = keys
        self._max_messages = max_messages
        self._stream_max_len = stream_max_len
        self._stream_ttl = stream_ttl
        self._lease_seconds = lease_seconds
        self._ops: deque[Op] = deque()
        self._messages = 0
        self.client: aioredis.Redis | None = None
        """The connection the pump writes to, set when the bus connects."""
        self.written = 0
        """Messages written to Redis (mailbox appends, publishes and replies)."""
        self.local_only = 0
        """Published messages of an unregistered class: delivered in this process only."""
        self.unpublished = 0
        """Published messages whose copy for other processes was dropped because the outbox was full."""
        self._dropping = False
        self._warned_local_only: set[type[Message]] = set()
        self.pump = WritePump[list[Op]](what='messages', take=self._take, write=self._write)
        """The pump that writes the queued operations; run it with `pump.run()`."""

    def __len__(self) -> int:
        """How many operations wait to be written (messages and lease changes)."""
        return len(self._ops)

    @property
    def busy(self) -> bool:
        """Whether something is queued or being written."""
        return bool(self._ops) or self.pump.writing

    def put(self, op: Op) -> None:
        """Queue a message (`'xadd'` or `'publish'`).

        Raises:
            MailboxFullError: `max_messages` messages are waiting already.
        """
        if self._messages >= self._max_messages:
            raise MailboxFullError(_FULL_RECIPIENT, self._max_messages)
        self._ops.append(op)
        self._messages += 1
        self.pump.wake()

    def put_published(self, channel: str, message: Message, *, origin: str) -> None:
        """Queue the publishing of `message` on `channel`, if its class can cross processes and there is room."""
        if is_registered(type(message)):
            if self._messages >= self._max_messages:
                self.unpublished += 1
                if not self._dropping:
                    self._dropping = True
                    logger.warning(
                        'the Redis outbox is full (%d messages): published messages reach this process only until '
                        'Redis takes writes again',
                        self._max_messages,
                    )
                return
            self.put(('publish', channel, encode(message, origin=origin)))
            return
        self.local_only += 1
        if type(message) not in self._warned_local_only:
            self._warned_local_only.add(type(message))
            logger.info(
                '%s is not registered for Redis; it is published to this process only', type(message).__qualname__
            )

    def put_lease(self, participant: str, *, listed: bool) -> None:
        """Queue the listing (`listed=True`: take or renew the lease) or unlisting of a participant's mailbox."""
        self._ops.append(('lease' if listed else 'unlease', participant, ''))
        self.pump.wake()

    def _take(self) -> list[Op] | None:
        if not self._ops:
            return None
        batch = list(self._ops)
        self._ops.clear()
        return batch

    async def _write(self, batch: list[Op]) -> None:
        client = self.client
        assert client is not None
        ttl = max(1, int(self._stream_ttl))
        participants = self._keys.participants
        async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
            for kind, key, payload in batch:
                if kind == 'xadd':
                    pipe.xadd(key, {'m': payload}, maxlen=self._stream_max_len, approximate=True)  # pyright: ignore[reportUnknownMemberType]
                    pipe.expire(key, ttl)  # pyright: ignore[reportUnknownMemberType]
                elif kind == 'publish':
                    pipe.publish(key, payload)  # pyright: ignore[reportUnknownMemberType]
                elif kind == 'lease':
                    pipe.zadd(participants, {key: time.time() + self._lease_seconds})  # pyright: ignore[reportUnknownMemberType]
                else:
                    pipe.zrem(participants, key)  # pyright: ignore[reportUnknownMemberType]
            await pipe.execute()  # pyright: ignore[reportUnknownMemberType]
        sent = sum(1 for op in batch if op[0] in ('xadd', 'publish'))
        self.written += sent
        self._messages -= sent
        self._dropping = False
