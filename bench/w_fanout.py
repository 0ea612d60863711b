"""Workload 2, fan-out: many async tasks with a fixed child latency, at most 100 at a time.

ours: `TaskManager(max_concurrent_tasks=100)`, `await manager.start(config, desc, scope='bench', mode='async')` for
each task, then `await manager.wait(ids)`.
floor: the same number of plain `child.run(...)` calls in an anyio task group, limited by
`anyio.CapacityLimiter(100)`, outputs collected in a list.

Wall time is compared with the floor and with the ideal (tasks / concurrency x latency). Memory and growth (1k ->
10k -> 100k tasks) are measured in a fresh interpreter per point: peak RSS minus the RSS before the fan-out.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import anyio
from pydantic_ai import Agent

from _harness import (
    VARIANTS,
    Metric,
    Settings,
    Variant,
    WorkloadResult,
    alternate,
    mib,
    noise_note,
    peak_rss_bytes,
    ratio,
    reset_peak_rss,
    rss_bytes,
    run_worker,
    spread,
)
from _models import CHILD_INSTRUCTIONS, sleeping_child
from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus

LATENCY = 0.02
CONCURRENCY = 100
GOAL = 1.05


async def fan_out(variant: Variant, n: int, latency: float = LATENCY, concurrency: int = CONCURRENCY) -> float:
    """Wall seconds to run `n` tasks and collect every result."""
    if variant == 'ours':
        config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=sleeping_child(latency))
        # Every result must stay readable until `wait` returns, as the floor keeps every output.
        manager = TaskManager(max_concurrent_tasks=concurrency, max_tasks_per_scope=n + 1, max_retained=n)
        async with manager:
            started = time.perf_counter()
            ids = [(await manager.start(config, f'Job {i}.', scope='bench', mode='async')).id for i in range(n)]
            records = await manager.wait(ids)
            elapsed = time.perf_counter() - started
        bad = [r.status for r in records if r.status is not TaskStatus.COMPLETED]
        assert not bad, f'{len(bad)} tasks did not complete: {set(bad)}'
        return elapsed
    child = Agent(sleeping_child(latency), instructions=CHILD_INSTRUCTIONS)
    limiter = anyio.CapacityLimiter(concurrency)
    outputs: list[str | None] = [None] * n

    async def one(i: int) -> None:
        async with limiter:
            outputs[i] = (await child.run(f'Job {i}.')).output

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    elapsed = time.perf_counter() - started
    assert all(o == 'ok' for o in outputs)
    return elapsed


def worker_point(variant: Variant, n: int) -> dict[str, Any]:
    """Subprocess entry: one fan-out of `n` tasks; wall time and peak RSS growth over the pre-run RSS."""

    async def main() -> dict[str, Any]:
        await fan_out(variant, 20)  # warm-up
        gc.collect()
        base = rss_bytes() or peak_rss_bytes()
        reset = reset_peak_rss()
        seconds = await fan_out(variant, n)
        peak = peak_rss_bytes()
        return {
            'seconds': seconds,
            'rss_base': base,
            'rss_peak': peak,
            'rss_delta': max(0, peak - base),
            'peak_reset': reset,
        }

    return anyio.run(main)


def run(settings: Settings) -> WorkloadResult:
    n = settings.fanout_tasks
    ideal = n / CONCURRENCY * LATENCY
    result = WorkloadResult(
        'fanout',
        f'Fan-out: {n:,} async tasks, {LATENCY * 1e3:.0f} ms child latency, {CONCURRENCY} at a time',
        params={'tasks': n, 'latency_s': LATENCY, 'concurrency': CONCURRENCY, 'reps': settings.reps},
    )

    async def main() -> dict[Variant, list[float]]:
        for variant in VARIANTS if settings.warmup else ():
            await fan_out(variant, 20)
        return await alternate(settings.reps, VARIANTS, lambda v: fan_out(v, n))

    samples = anyio.run(main)
    ours = spread(samples['ours'])
    floor = spread(samples['floor'])
    r = ratio(ours['median'], floor['median'])
    result.add(
        Metric(
            'wall time', 's', ours, floor, r, f'<= {GOAL}x', None if r is None else r <= GOAL, noise_note(ours, floor)
        )
    )
    result.add(
        Metric('wall time / ideal', 'x', ours['median'] / ideal, floor['median'] / ideal, note=f'ideal {ideal:g} s')
    )
    result.add(Metric('time per task', 'ms', ours['median'] / n * 1e3, floor['median'] / n * 1e3, r))

    if not settings.subprocess or not settings.fanout_growth:
        result.notes.append('memory and growth need fresh interpreters: skipped in --quick')
        return result

    growth: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for size in settings.fanout_growth:
        for variant in VARIANTS:
            point = run_worker(['fanout-point', variant, str(size)], timeout=settings.fanout_timeout)
            point['tasks'] = size
            growth[variant].append(point)
    result.series['growth'] = growth
    by_size = {v: {p['tasks']: p for p in growth[v]} for v in VARIANTS}
    if n in by_size['ours'] and n in by_size['floor']:
        o = mib(by_size['ours'][n].get('rss_delta'))
        f = mib(by_size['floor'][n].get('rss_delta'))
        r = ratio(o, f)
        result.add(Metric(f'peak RSS growth ({n:,} tasks)', 'MiB', o, f, r))
    for size in settings.fanout_growth:
        o, f = by_size['ours'][size], by_size['floor'][size]
        result.add(
            Metric(
                f'growth: wall time at {size:,}',
                's',
                o.get('seconds', f'>{o.get("timeout")}s'),
                f.get('seconds', f'>{f.get("timeout")}s'),
                ratio(o.get('seconds'), f.get('seconds')),
            )
        )
        result.add(
            Metric(
                f'growth: peak RSS growth at {size:,}',
                'MiB',
                mib(o.get('rss_delta')),
                mib(f.get('rss_delta')),
                ratio(o.get('rss_delta'), f.get('rss_delta')),
            )
        )
    first, last = settings.fanout_growth[0], settings.fanout_growth[-1]
    for variant in VARIANTS:
        a, b = by_size[variant][first], by_size[variant][last]
        if 'seconds' in a and 'seconds' in b:
            per_task = b['seconds'] / last * 1e3, a['seconds'] / first * 1e3
            result.notes.append(
                f'{variant}: {last // first}x the tasks took {b["seconds"] / a["seconds"]:.1f}x the time '
                f'({per_task[0]:.2f} ms/task at {last:,} vs {per_task[1]:.2f} at {first:,})'
            )
    return result
