"""Workload 4, memory.

- Bytes per live task (tracemalloc, current traced memory after gc): L tasks blocked in a model call.
  ours: `manager.start(config, ...)` (an agent is built per task); ours+agent: `manager.start(..., agent=prebuilt)`,
  which is what the toolset does; floor: plain `child.run` tasks in a task group.
- Bytes per retained finished task (tracemalloc): N tasks run to completion with `max_retained >= N`.
- RSS while churning many tasks through a manager with `max_retained=1000`, in a fresh interpreter; RSS must stay
  flat once retention is full. The floor churns plain `child.run` calls keeping the last 1000 outputs.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections import deque
from typing import Any

import anyio
from pydantic_ai import Agent

from _harness import Metric, Settings, Variant, Worker, WorkloadResult, mib, ratio, rss_bytes, run_worker
from _models import CHILD_INSTRUCTIONS, Entered, blocked_child, instant_child
from pydantic_ai_subagents import SubAgentConfig, TaskManager
from pydantic_ai_subagents._config import build_agent

RETAINED = 1000
CHURN_CONCURRENCY = 100
CHURN_BATCH = 500
CHURN_TIMEOUT = 3600.0
FLAT_TOLERANCE = 0.05
"""Churn RSS counts as flat if it grows less than 5% (or 2 MiB) from retention full to the end."""


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def live_bytes(variant: str, n: int) -> float:
    entered = Entered()
    config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=blocked_child(entered.enter))
    if variant == 'floor':
        child = Agent(blocked_child(entered.enter), instructions=CHILD_INSTRUCTIONS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(child.run, 'Warm-up.')
            await entered.wait_for(1)
            base = _traced()
            for i in range(n):
                tg.start_soon(child.run, f'Job {i}.')
            await entered.wait_for(n + 1)
            used = _traced() - base
            tg.cancel_scope.cancel()
        return used / n
    agent = build_agent(config) if variant == 'ours+agent' else None
    async with TaskManager(max_concurrent_tasks=None, max_tasks_per_scope=n + 2) as manager:
        await manager.start(config, 'Warm-up.', scope='bench', agent=agent)
        await entered.wait_for(1)
        base = _traced()
        for i in range(n):
            await manager.start(config, f'Job {i}.', scope='bench', agent=agent)
        await entered.wait_for(n + 1)
        used = _traced() - base
    return used / n


async def retained_bytes(n: int) -> tuple[float, dict[str, int]]:
    config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=instant_child())
    agent = build_agent(config)
    async with TaskManager(max_concurrent_tasks=100, max_tasks_per_scope=n + 2, max_retained=n + 2) as manager:
        await manager.wait([(await manager.start(config, 'Warm-up.', scope='bench', agent=agent)).id])
        base = _traced()
        ids = [(await manager.start(config, f'Job {i}.', scope='bench', agent=agent)).id for i in range(n)]
        await manager.wait(ids)
        used = _traced() - base
        internals = _internals(manager)
    return used / n, internals


def _internals(manager: TaskManager) -> dict[str, int]:
    """Sizes of the manager's internal tables (what should stay bounded).

    These are private attributes that move as the library changes.
    """
    m: Any = manager
    delivery = getattr(m, '_delivery', None)
    owed = getattr(delivery, '_owed', None) if delivery is not None else getattr(m, '_undelivered', None)
    tables: dict[str, Any] = {
        'store_records': len(m.store),
        'runtimes': m._settler.runtimes,
        'owed_notices': None if owed is None else sum(len(v) for v in owed.values()),
        'queued_notices': getattr(delivery, '_queued', None),
        'transcripts': m._settler.transcripts,
        'questions': m._questions.waiting,
        'bus_mailboxes': m.bus.stats().mailboxes,
    }
    return {k: v if isinstance(v, int) else len(v) for k, v in tables.items() if v is not None}


async def churn(variant: Variant, total: int, every: int, retained: int) -> list[dict[str, Any]]:
    """Run `total` tasks in batches; after every `every` tasks, record RSS (after gc) and internal table sizes."""
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def sample(done: int, extra: dict[str, int]) -> None:
        gc.collect()
        points.append({'tasks': done, 'rss': rss_bytes(), 'seconds': time.perf_counter() - started, **extra})

    if variant == 'ours':
        config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=instant_child())
        agent = build_agent(config)
        manager = TaskManager(
            max_concurrent_tasks=CHURN_CONCURRENCY, max_tasks_per_scope=churn_batch(total) + 1, max_retained=retained
        )
        async with manager:
            sample(0, _internals(manager))
            done = 0
            while done < total:
                batch = min(churn_batch(total), total - done)
                ids = [
                    (await manager.start(config, f'Job {done + i}.', scope='bench', agent=agent)).id
                    for i in range(batch)
                ]
                await manager.wait(ids)
                done += batch
                if done % every == 0 or done == total:
                    sample(done, _internals(manager))
        return points
    child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
    kept: deque[str] = deque(maxlen=retained)
    limiter = anyio.CapacityLimiter(CHURN_CONCURRENCY)

    async def one(i: int) -> None:
        async with limiter:
            kept.append((await child.run(f'Job {i}.')).output)

    sample(0, {})
    done = 0
    while done < total:
        batch = min(churn_batch(total), total - done)
        async with anyio.create_task_group() as tg:
            for i in range(batch):
                tg.start_soon(one, done + i)
        done += batch
        if done % every == 0 or done == total:
            sample(done, {'kept': len(kept)})
    return points


def worker_churn(variant: Variant, total: int, every: int, retained: int) -> dict[str, Any]:
    return {'points': anyio.run(churn, variant, total, every, retained)}


def _points(worker_result: dict[str, Any]) -> list[dict[str, Any]]:
    if 'points' not in worker_result:
        raise RuntimeError(f'churn did not finish within {worker_result.get("timeout")} s')
    points: list[dict[str, Any]] = worker_result['points']
    return points


def churn_batch(total: int) -> int:
    """Tasks started before each wait: 500, or a tenth of a small churn."""
    return min(CHURN_BATCH, max(10, total // 10))


def _flatness(points: list[dict[str, Any]], retained: int) -> tuple[float | None, float | None]:
    """RSS growth (bytes) and growth per 1,000 tasks from the first sample with retention full to the last."""
    full = [p for p in points if p['tasks'] >= 2 * retained and p['rss'] is not None]
    if len(full) < 2:
        return None, None
    first, last = full[0], full[-1]
    growth = last['rss'] - first['rss']
    return growth, growth / max(1, last['tasks'] - first['tasks']) * 1000


def run(settings: Settings) -> WorkloadResult:
    retained = min(RETAINED, max(10, settings.churn_tasks // 4))
    result = WorkloadResult(
        'memory',
        'Memory per task, and RSS while churning tasks',
        params={
            'live_tasks': settings.memory_live,
            'retained_tasks': settings.memory_retained,
            'churn_tasks': settings.churn_tasks,
            'max_retained': retained,
        },
    )

    async def main() -> dict[str, Any]:
        data: dict[str, Any] = {}
        # Warm up even in --quick: the first runs import and build a lot, and are very slow under tracemalloc.
        for variant in ('ours', 'ours+agent', 'floor'):
            await live_bytes(variant, 1)
        await retained_bytes(1)
        tracemalloc.start()
        try:
            for variant in ('ours', 'ours+agent', 'floor'):
                data[variant] = await live_bytes(variant, settings.memory_live)
            data['retained'] = await retained_bytes(settings.memory_retained)
        finally:
            tracemalloc.stop()
        return data

    every = settings.churn_every
    variants: tuple[Variant, ...] = ('ours', 'floor') if settings.churn_floor else ('ours',)

    def churn_args(variant: Variant) -> list[str]:
        return ['churn', variant, str(settings.churn_tasks), str(every), str(retained)]

    # Our churn measures RSS, not time, so it runs in its fresh interpreter while tracemalloc measures here.
    background = Worker(churn_args('ours')) if settings.subprocess else None
    try:
        data = anyio.run(main)
    except BaseException:
        if background is not None:
            background.proc.kill()
        raise
    result.add(
        Metric(
            'bytes per live task', 'KiB', data['ours'] / 1024, data['floor'] / 1024, ratio(data['ours'], data['floor'])
        )
    )
    result.add(
        Metric(
            '  with a prebuilt agent (toolset path)',
            'KiB',
            data['ours+agent'] / 1024,
            data['floor'] / 1024,
            ratio(data['ours+agent'], data['floor']),
        )
    )
    per_retained, internals = data['retained']
    result.add(Metric('bytes per retained finished task', 'KiB', per_retained / 1024))
    result.series['after_retained_run'] = internals
    if internals.get('owed_notices'):
        result.notes.append(
            f'after {settings.memory_retained} finished tasks with no parent run attached, the manager owes '
            f'{internals["owed_notices"]} notices to the scope (kept until a parent run of that scope attaches)'
        )

    series: dict[str, list[dict[str, Any]]] = {}
    for variant in variants:
        if background is not None and variant == 'ours':
            series[variant] = _points(background.result(timeout=CHURN_TIMEOUT))
        elif settings.subprocess:
            series[variant] = _points(run_worker(churn_args(variant), timeout=CHURN_TIMEOUT))
        else:
            series[variant] = anyio.run(churn, variant, settings.churn_tasks, every, retained)
    result.series['churn'] = series
    growth: dict[str, float | None] = {}
    per_k: dict[str, float | None] = {}
    for variant in variants:
        growth[variant], per_k[variant] = _flatness(series[variant], retained)
    o_last = series['ours'][-1]
    rss_end = (mib(o_last['rss']), mib(series['floor'][-1]['rss']) if 'floor' in series else None)
    result.add(Metric(f'RSS after churning {settings.churn_tasks:,} tasks', 'MiB', *rss_end, ratio(*rss_end)))
    flat_limit = None
    if growth['ours'] is not None:
        first_full = next(p for p in series['ours'] if p['tasks'] >= 2 * retained)
        flat_limit = max(2 * 1024 * 1024, FLAT_TOLERANCE * first_full['rss'])
    result.add(
        Metric(
            'RSS growth once retention is full',
            'MiB',
            mib(growth['ours']),
            mib(growth.get('floor')),
            goal='flat (< 5% or 2 MiB)',
            met=None if flat_limit is None or growth['ours'] is None else growth['ours'] <= flat_limit,
        )
    )
    result.add(
        Metric(
            '  RSS slope once retention is full',
            'KiB/1k tasks',
            None if per_k['ours'] is None else per_k['ours'] / 1024,
            None if per_k.get('floor') is None else per_k['floor'] / 1024,  # type: ignore[operator]
        )
    )
    # Pruning happens on `start`, so the last batch may sit on top of the retention limit.
    bound = retained + churn_batch(settings.churn_tasks)
    tables = {k: v for k, v in o_last.items() if k not in ('tasks', 'rss', 'seconds')}
    result.add(
        Metric(
            'largest internal table after churn',
            'entries',
            max(tables.values()),
            goal=f'<= {bound:,}',
            met=max(tables.values()) <= bound,
            note=', '.join(f'{k}={v:,}' for k, v in tables.items()),
        )
    )
    if o_last.get('owed_notices', 0) > bound:
        result.notes.append(
            f'LEAK: the owed-notice table grew to {o_last["owed_notices"]:,} entries for '
            f'{settings.churn_tasks:,} tasks (retention keeps {retained:,} records): finished tasks with no live '
            'parent run are queued as notices and never dropped, not even when the record is pruned.'
        )
    return result
