"""One call that sets up a task manager on Redis: its bus, its store and itself."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from .._manager import TaskManager
from ._bus import RedisMessageBus
from ._store import RedisTaskStore

__all__ = ('redis_task_manager',)


@asynccontextmanager
async def redis_task_manager(
    url: str = 'redis://localhost:6379/0',
    *,
    namespace: str = 'subagents',
    max_retained: int = 1000,
    retention_seconds: float | None = 3600.0,
    lease_seconds: float = 10.0,
    heartbeat_interval: float = 1.0,
    max_transcript_bytes: int = 1_000_000,
    bus_options: dict[str, Any] | None = None,
    **manager_options: Any,
) -> AsyncGenerator[TaskManager]:
    """A [`TaskManager`][pydantic_ai_subagents.TaskManager] whose bus and store live on one Redis server.

    Every process that uses the same `url` and `namespace` shares one task space: tasks started in any of them can
    be listed, checked, answered and cancelled from all of them, their events reach every process's
    [`events`][pydantic_ai_subagents.TaskManager.events], and their records survive the processes.

    ```python
    async with redis_task_manager('redis://localhost:6379/0', namespace='myapp') as manager:
        toolset = create_subagent_toolset([researcher], manager=manager)
        ...
    ```

    Args:
        url: The Redis server.
        namespace: Prefix of every key and channel: processes share tasks only within one namespace.
        max_retained: Finished tasks kept, in Redis and in each process.
        retention_seconds: Finished tasks older than this are dropped; `None`: only `max_retained` applies.
        lease_seconds: How soon the live tasks of a process that died are marked `FAILED`.
        heartbeat_interval: Seconds between lease renewals (and orphan checks); below `lease_seconds`.
        max_transcript_bytes: The largest conversation of a completed task kept in Redis for follow-up tasks.
        bus_options: More keyword arguments for [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus].
        **manager_options: Keyword arguments for [`TaskManager`][pydantic_ai_subagents.TaskManager].
    """
    async with (
        RedisMessageBus(url, namespace=namespace, **(bus_options or {})) as bus,
        RedisTaskStore(
            url,
            namespace=namespace,
            max_retained=max_retained,
            retention_seconds=retention_seconds,
            lease_seconds=lease_seconds,
            heartbeat_interval=heartbeat_interval,
            max_transcript_bytes=max_transcript_bytes,
        ) as store,
        TaskManager(bus=bus, store=store, **manager_options) as manager,
    ):
        yield manager
