"""The chaos run (`tests/chaos.py`) at a small size: Redis killed and restarted with and without its data, a worker
process killed, a manager process killed, while two managers and two workers run tasks (`make chaos`: a large size)."""

from __future__ import annotations

import pytest

from . import chaos

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def test_every_task_ends_once_and_nothing_is_lost_across_redis_worker_and_manager_faults() -> None:
    report = await chaos.run(24)
    print('\n'.join(report.lines()))
    assert report.not_terminal == 0
    assert set(report.terminal_counts) == {1}
    assert report.results_lost == 0
    assert report.falsely_failed == 0
    assert report.workers_back
    assert report.owner_died_failed > 0  # the manager really died with live tasks, and a survivor ended them
    assert set(report.recovery) >= {
        'Redis restarted with its data',
        'Redis restarted without its data',
        'a worker killed',
        'a manager killed',
    }
