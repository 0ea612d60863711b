"""The leases of the managers and workers of a Redis task store: who is alive, as far as the namespace can tell.

The rules it keeps:

* **A lease, renewed while its owner lives.** Each manager or worker of this process holds a key that expires
  after `lease_seconds` and is renewed every `heartbeat_interval`; a process that dies stops renewing, and its
  owners' tasks become orphans once their leases run out.
* **One round trip for many askers.** Whether others are alive is cached for half a heartbeat and asked by one
  query at a time, so many tasks watching their workers cost one round trip per half heartbeat, not one each.
"""

from __future__ import annotations

import logging
import time
from typing import Final, cast

import anyio

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from ._keys import StoreKeys

__all__ = ('OwnerLeases',)

logger = logging.getLogger('pydantic_ai_subagents.redis')

_MAX_SEEN: Final = 10_000
"""Past this many cached answers, those older than a minute are forgotten."""


class OwnerLeases:
    """The leases this process holds, and what it last learned of the others'."""

    def __init__(self, *, keys: StoreKeys, lease_seconds: float, heartbeat_interval: float, claim_id: str) -> None:
        self._keys = keys
        self._lease_seconds = lease_seconds
        self._heartbeat_interval = heartbeat_interval
        self._claim_id = claim_id
        self._alive_lock = anyio.Lock()
        self._alive_seen: dict[str, tuple[bool, float]] = {}
        self.here: set[str] = set()
        """The owners (managers, workers) of this process whose leases it holds."""

    async def take(self, client: aioredis.Redis, owner: str) -> None:
        """Take the lease of `owner` now, and renew it while `run` runs."""
        self.here.add(owner)
        await client.set(self._keys.owner(owner), self._claim_id, px=int(self._lease_seconds * 1000))  # pyright: ignore[reportUnknownMemberType]

    async def give_up(self, client: aioredis.Redis | None, owner: str) -> None:
        """Stop renewing the lease of `owner` and, given a client, delete it (a failure is only logged)."""
        self.here.discard(owner)
        if client is not None:
            try:
                await client.delete(self._keys.owner(owner))  # pyright: ignore[reportUnknownMemberType]
            except RedisError as exc:
                logger.warning('could not release the lease of %s: %s', owner, exc)

    async def give_up_all(self, client: aioredis.Redis) -> None:
        """Delete every lease this process holds (a failure is only logged)."""
        if self.here:
            try:
                await client.delete(*(self._keys.owner(o) for o in self.here))  # pyright: ignore[reportUnknownMemberType]
            except RedisError as exc:
                logger.warning('could not release the leases of %s: %s', sorted(self.here), exc)
        self.here.clear()

    async def run(self, client: aioredis.Redis) -> None:
        """Renew this process's leases every `heartbeat_interval`, until cancelled."""
        lease_ms = int(self._lease_seconds * 1000)
        while True:
            await anyio.sleep(self._heartbeat_interval)
            if not self.here:
                continue
            try:
                pipe = client.pipeline(transaction=False)  # pyright: ignore[reportUnknownMemberType]
                for owner in self.here:
                    pipe.set(self._keys.owner(owner), self._claim_id, px=lease_ms)  # pyright: ignore[reportUnknownMemberType]
                await pipe.execute()  # pyright: ignore[reportUnknownMemberType]
            except RedisError as exc:
                logger.warning('renewing the leases of %s failed: %s', sorted(self.here), exc)

    async def alive(self, client: aioredis.Redis, owners: set[str]) -> set[str]:
        """Which of `owners` hold a lease right now (those of this process always do)."""
        alive = owners & self.here
        others = owners - self.here
        if not others:
            return alive
        async with self._alive_lock:
            now = time.monotonic()
            fresh_for = self._heartbeat_interval / 2
            stale = sorted(o for o in others if now - self._alive_seen.get(o, (False, -fresh_for))[1] >= fresh_for)
            if stale:
                pipe = client.pipeline(transaction=False)  # pyright: ignore[reportUnknownMemberType]
                for owner in stale:
                    pipe.exists(self._keys.owner(owner))  # pyright: ignore[reportUnknownMemberType]
                found = cast('list[int]', await pipe.execute())  # pyright: ignore[reportUnknownMemberType]
                now = time.monotonic()
                for owner, exists in zip(stale, found, strict=True):
                    self._alive_seen[owner] = (bool(exists), now)
                if len(self._alive_seen) > _MAX_SEEN:
                    self._alive_seen = {o: seen for o, seen in self._alive_seen.items() if now - seen[1] < 60}
        return alive | {o for o in others if self._alive_seen[o][0]}
