"""Who has a mailbox open on the Redis bus: this process's leases, and its copy of everyone's.

The rules it keeps:

* **Leases, not promises.** A mailbox open in this process is listed in the participants set with a lease that
  runs out after `lease_seconds` unless renewed every `refresh_interval`; a process that dies without closing its
  mailboxes loses them when their leases expire.
* **A copy that may be stale.** `send` checks the local copy of the set, refreshed every `refresh_interval`, so it
  never waits for Redis; `lookup` asks Redis at once, for a caller that can wait. A name stays in the copy until
  the last lease seen for it runs out, so a Redis restarted without its data (or a mailbox closed elsewhere) is
  noticed only then.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, cast

import anyio

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from ._outbox import Outbox

__all__ = ('Participants',)


class Participants:
    """The participants set of one bus: the leases it holds and the names it knows to be open elsewhere."""

    def __init__(self, *, key: str, outbox: Outbox, refresh_interval: float) -> None:
        self._key = key
        self._outbox = outbox
        self._refresh_interval = refresh_interval
        self._listed: set[str] = set()
        self._until: dict[str, float] = {}
        self.known: frozenset[str] = frozenset()
        """The participants with a mailbox open somewhere: each until the last lease seen for it runs out."""

    def is_listed(self, participant: str) -> bool:
        """Whether this process holds the lease of `participant` (its mailbox here is listed in Redis)."""
        return participant in self._listed

    def list(self, participant: str) -> None:
        """Take the lease of a mailbox opened here, and keep renewing it until `unlist`."""
        self._listed.add(participant)
        self._outbox.put_lease(participant, listed=True)

    def unlist(self, participant: str) -> None:
        """Give up the lease of a mailbox closed here (nothing happens for a name never listed)."""
        if participant in self._listed:
            self._listed.discard(participant)
            self._outbox.put_lease(participant, listed=False)

    async def run(self, client: aioredis.Redis) -> None:
        """Renew this process's leases and refresh the copy of the set, every `refresh_interval`, until cancelled."""
        while True:
            await anyio.sleep(self._refresh_interval)
            for name in self._listed:
                self._outbox.put_lease(name, listed=True)
            # A failed refresh keeps the last copy: a peer is not forgotten because Redis is away for a moment.
            with contextlib.suppress(RedisError):
                await self.refresh(client)

    async def refresh(self, client: aioredis.Redis) -> None:
        """Drop the expired leases from the set and read it into `known`."""
        now = time.time()
        async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
            pipe.zremrangebyscore(self._key, '-inf', now)  # pyright: ignore[reportUnknownMemberType]
            pipe.zrangebyscore(self._key, now, '+inf', withscores=True)  # pyright: ignore[reportUnknownMemberType]
            results: list[Any] = await pipe.execute()  # pyright: ignore[reportUnknownMemberType]
        # A name stays known until the last lease seen for it runs out: when Redis restarts without its data, the
        # peers are not refused while they take their leases again.
        until = {name: until for name, until in self._until.items() if until > now}
        for raw, score in cast('list[tuple[bytes, float]]', results[1]):
            until[raw.decode()] = float(score)
        self._until = until
        self.known = frozenset(until)

    async def lookup(self, client: aioredis.Redis, participant: str) -> bool:
        """Ask Redis whether `participant` holds a live lease now; if so, add it to `known` at once."""
        score = await client.zscore(self._key, participant)  # pyright: ignore[reportUnknownMemberType]
        if score is not None and float(score) > time.time():
            self._until[participant] = float(score)
            self.known = self.known | {participant}
            return True
        return False
