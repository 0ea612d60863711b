"""How the Redis bus, store and workers connect, and how they keep at it: the one place that knows of retries.

The rules it keeps:

* **redis-py's own retry machinery.** A client made here from a URL retries each command on a connection error or
  a timeout (`COMMAND_RETRIES` times, reconnecting), with jittered exponential backoff, so a blip costs nothing.
  What must outlast an outage of any length (the write pumps, the readers, the workers' takes) goes through
  `retrying`, the same `Retry` with no limit on attempts: it waits, with jitter, until Redis answers again.
* **The user's connection stays the user's.** A ready client or connection pool (a Sentinel's included) is used as
  given, with its own retry settings, and is never closed here; a client made from a URL is closed with its user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias, TypeVar

import anyio

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import EqualJitterBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

__all__ = (
    'COMMAND_RETRIES',
    'FIRST_BACKOFF',
    'MAX_BACKOFF',
    'Connection',
    'RedisSource',
    'open_connection',
    'retrying',
)

logger = logging.getLogger('pydantic_ai_subagents.redis')

RedisSource: TypeAlias = 'str | aioredis.Redis | aioredis.ConnectionPool'
"""Where a bus, store or worker connects: a `redis://` URL, a ready client, or a connection pool (a Sentinel's
`master_for(...)` client or `SentinelConnectionPool` included)."""

FIRST_BACKOFF: Final = 0.05
"""Seconds around which the first retry of a failed Redis call waits."""
MAX_BACKOFF: Final = 2.0
"""The longest wait between retries: a server back after an outage is used again within this."""
COMMAND_RETRIES: Final = 3
"""How often a client made from a URL retries one command on a connection error before it raises."""
_LOG_EVERY: Final = 50
"""While an outage lasts, one warning per this many failed attempts."""

_T = TypeVar('_T')


def _backoff(cap: float = MAX_BACKOFF) -> EqualJitterBackoff:
    # Half the exponential wait plus a random half: processes that lost the same server do not come back in step.
    return EqualJitterBackoff(cap=cap, base=min(FIRST_BACKOFF, cap))


def command_retry() -> Retry:
    """The retry policy of each command of a client made from a URL."""
    return Retry(_backoff(), COMMAND_RETRIES, (RedisConnectionError, RedisTimeoutError))


async def retrying(
    do: Callable[[], Awaitable[_T]],
    *,
    what: str,
    on_failure: Callable[[Exception], None] | None = None,
    max_backoff: float = MAX_BACKOFF,
) -> _T:
    """Call `do` until it succeeds, waiting with jittered backoff after each Redis error; only cancellation stops it.

    Each failure is passed to `on_failure` (to count it); the first, and one in every `_LOG_EVERY` after it, are
    logged as warnings, and the recovery as information. `max_backoff` caps the wait between two attempts: how
    long after Redis is back `do` may still wait (a lease renewal caps it at its heartbeat).
    """
    failures = 0

    async def fail(error: Exception) -> None:
        nonlocal failures
        failures += 1
        if on_failure is not None:
            on_failure(error)
        if failures % _LOG_EVERY == 1:
            logger.warning('%s failed (%s); retrying (attempt %d)', what, error, failures + 1)

    result = await Retry(_backoff(max_backoff), -1, (RedisError,)).call_with_retry(do, fail)
    if failures:
        logger.info('%s works again after %d failed attempts', what, failures)
    return result


class Connection:
    """A client for one bus, store or worker, and whether closing it is this library's job."""

    def __init__(self, client: aioredis.Redis, *, owned: bool) -> None:
        self.client = client
        """The client every command goes through."""
        self._owned = owned

    async def aclose(self) -> None:
        """Close the client if it was made here (from a URL or the user's pool); a user's client is left open."""
        if self._owned:
            # A client made from a URL closes its pool; one made over the user's pool leaves it to its owner.
            await self.client.aclose()


def _client(source: RedisSource) -> Connection:
    if isinstance(source, str):
        client = aioredis.Redis.from_url(  # pyright: ignore[reportUnknownMemberType]
            source, retry=command_retry(), retry_on_error=[RedisConnectionError, RedisTimeoutError]
        )
        return Connection(client, owned=True)
    if isinstance(source, aioredis.ConnectionPool):
        return Connection(aioredis.Redis(connection_pool=source), owned=True)
    return Connection(source, owned=False)


async def open_connection(source: RedisSource, prepare: Callable[[aioredis.Redis], Awaitable[None]]) -> Connection:
    """Connect to `source`, check the server answers, and run `prepare`; on any failure close what was made, raise."""
    connection = _client(source)
    try:
        await connection.client.ping()  # pyright: ignore[reportUnknownMemberType]
        await prepare(connection.client)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await connection.aclose()
        raise
    return connection
