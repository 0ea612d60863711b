"""What the tests of tasks shared through a real Redis have in common: fast timings, a namespace of each test's own,
two managers (two processes as far as Redis can tell), a worker on fast timings, and waiting for a condition.

A test module takes the fixtures as `namespace = redis_helpers.namespace` (and `two`), as it takes `redis_url`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskRecord
from pydantic_ai_subagents.redis import Worker, redis_task_manager

FAST: dict[str, Any] = {
    'lease_seconds': 1.0,
    'heartbeat_interval': 0.1,
    'bus_options': {'refresh_interval': 0.05, 'lease_seconds': 2.0, 'read_block': 0.2},
}


@pytest.fixture
def namespace() -> str:
    return f'test-{uuid.uuid4().hex[:12]}'


@pytest.fixture
async def two(redis_url: str, namespace: str) -> AsyncIterator[tuple[TaskManager, TaskManager]]:
    async with (
        redis_task_manager(redis_url, namespace=namespace, **FAST) as a,
        redis_task_manager(redis_url, namespace=namespace, **FAST) as b,
    ):
        await b.bus.wait_for_participant(a.participant)  # type: ignore[attr-defined]
        await a.bus.wait_for_participant(b.participant)  # type: ignore[attr-defined]
        yield a, b


def fast_worker(subagents: list[SubAgentConfig], redis_url: str, namespace: str, queue: str, **options: Any) -> Worker:
    """A worker on `queue` with the timings of `FAST`."""
    return Worker(
        subagents,
        url=redis_url,
        namespace=namespace,
        queue=queue,
        lease_seconds=1.0,
        heartbeat_interval=0.1,
        bus_options=FAST['bus_options'],
        **options,
    )


async def until(predicate: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def finished_in(manager: TaskManager, task_id: str) -> TaskRecord:
    await until(lambda: (r := manager.get(task_id)) is not None and r.is_terminal)
    record = manager.get(task_id)
    assert record is not None
    return record
