"""The leases of the managers and workers of a Redis task store: who is alive, as far as the namespace can tell.

The rules it keeps:

* **A lease, renewed while its owner lives.** Each manager or worker of this process holds a key that expires
  after `lease_seconds` and is renewed every `heartbeat_interval`; a process that dies stops renewing, and its
  owners' tasks become orphans once their leases run out.
* **Dead only after a full lease of seeing no lease.** A missing key alone proves nothing: Redis may have just
  restarted without its data, before the owner's next renewal. An owner is judged dead only once this process has
  seen its lease missing at every look for `lease_seconds` of its own clock, looking at least every few heartbeats
  and reaching Redis every time; a failed look or a long pause starts the count again. A dead owner is so known
  between one and two leases after its death.
* **Renewed at once after an outage.** A renewal that fails is retried with jittered backoff capped at one
  heartbeat until Redis answers, however long the outage: an owner re-asserts its lease within a heartbeat of
  Redis coming back (with or without its data: a lease kept through a long outage has expired meanwhile), well
  within the full lease its peers wait.
* **One round trip for many askers.** Whether others are alive is cached for half a heartbeat and asked by one
  query at a time, so many tasks watching their workers cost one round trip per half heartbeat, not one each.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Final, cast

import anyio

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from ._connect import retrying
from ._keys import StoreKeys

__all__ = ('OwnerLeases',)

logger = logging.getLogger('pydantic_ai_subagents.redis')

_MAX_SEEN: Final = 10_000
"""Past this many cached answers, those older than a minute are forgotten."""
_CONTINUOUS_BEATS: Final = 3
"""Looks further apart than this many heartbeats do not make one observation: the count of absence starts again."""


@dataclass(slots=True)
class _Look:
    """What this process last saw of one owner's lease."""

    at: float
    """When, on this process's `time.monotonic()` clock."""
    absent_since: float | None
    """Since when every look found the lease missing (`None` while it is found)."""


class OwnerLeases:
    """The leases this process holds, and what it last learned of the others'."""

    def __init__(self, *, keys: StoreKeys, lease_seconds: float, heartbeat_interval: float, claim_id: str) -> None:
        self._keys = keys
        self._lease_seconds = lease_seconds
        self._heartbeat_interval = heartbeat_interval
        self._claim_id = claim_id
        self._alive_lock = anyio.Lock()
        self._seen: dict[str, _Look] = {}
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
        """Renew this process's leases every `heartbeat_interval`, until cancelled; a failed renewal is retried."""
        while True:
            await anyio.sleep(self._heartbeat_interval)
            if self.here:
                await retrying(
                    partial(self._renew, client),
                    what=f'renewing the leases of {len(self.here)} owners',
                    max_backoff=self._heartbeat_interval,
                )

    async def renew(self, client: aioredis.Redis) -> None:
        """Renew this process's leases now."""
        await self._renew(client)

    async def _renew(self, client: aioredis.Redis) -> None:
        lease_ms = int(self._lease_seconds * 1000)
        async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
            for owner in self.here:
                pipe.set(self._keys.owner(owner), self._claim_id, px=lease_ms)  # pyright: ignore[reportUnknownMemberType]
            await pipe.execute()  # pyright: ignore[reportUnknownMemberType]

    async def alive(self, client: aioredis.Redis, owners: set[str]) -> set[str]:
        """Which of `owners` are not known to be dead (those of this process always live).

        An owner whose lease is missing counts as alive until it has been missing for `lease_seconds` of this
        process's observation (see the module).

        Raises:
            RedisError: Redis could not be asked; every count of absence starts again.
        """
        alive = owners & self.here
        others = owners - self.here
        if not others:
            return alive
        async with self._alive_lock:
            now = time.monotonic()
            fresh_for = self._heartbeat_interval / 2
            seen = self._seen
            stale = sorted(o for o in others if (look := seen.get(o)) is None or now - look.at >= fresh_for)
            if stale:
                try:
                    async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
                        for owner in stale:
                            pipe.exists(self._keys.owner(owner))  # pyright: ignore[reportUnknownMemberType]
                        found = cast('list[int]', await pipe.execute())  # pyright: ignore[reportUnknownMemberType]
                except RedisError:
                    for look in seen.values():
                        look.absent_since = None
                    raise
                now = time.monotonic()
                continuous = self._heartbeat_interval * _CONTINUOUS_BEATS
                for owner, exists in zip(stale, found, strict=True):
                    before = seen.get(owner)
                    since: float | None = None
                    if not exists:
                        kept = before is not None and before.absent_since is not None and now - before.at <= continuous
                        since = before.absent_since if kept and before is not None else now
                    seen[owner] = _Look(at=now, absent_since=since)
                if len(seen) > _MAX_SEEN:
                    self._seen = {o: look for o, look in seen.items() if now - look.at < 60}
        lease = self._lease_seconds
        return alive | {
            o for o in others if (look := self._seen[o]).absent_since is None or now - look.absent_since < lease
        }
