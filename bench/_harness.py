"""Shared pieces of the benchmark harness: settings, variants, statistics, memory probes, result records, tables."""

from __future__ import annotations

import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Variant = Literal['ours', 'floor']
"""What a workload runs: `ours` (this library) or `floor` (the same work on plain Pydantic AI / anyio).

Other libraries run in their own environments through `--alternatives` (bench/alternatives.py), outside this type.
"""

VARIANTS: tuple[Variant, ...] = ('ours', 'floor')

Mode = Literal['quick', 'default', 'full']

V = TypeVar('V', bound=str)
"""A variant name: ours and the floor here; `alt` and `floor` in bench/alternatives.py."""


@dataclass(frozen=True)
class Settings:
    """Sizes and repetition counts of one harness invocation."""

    mode: Mode
    reps: int
    alternative_reps: int
    """Repetitions of the timed workloads of the other libraries (each against its own floor)."""
    delegation_reps: int
    """Repetitions of the delegation workload, ours and the other libraries' alike: its differences are a tenth of
    its time, so it takes more runs than the others for a median that holds still (each run is a few seconds)."""
    delegation_turns: int
    fanout_tasks: int
    fanout_growth: tuple[int, ...]
    fanout_timeout: float
    cancel_live: tuple[int, ...]
    cancel_samples: int
    soft_cancel_samples: int
    memory_live: int
    memory_retained: int
    churn_tasks: int
    churn_every: int
    churn_floor: bool
    bus_messages: int
    model_cost_live: int = 50
    subprocess: bool = True
    warmup: bool = True
    """Run each variant once before measuring (imports, schema caches); off in --quick, which only smoke-tests."""

    @classmethod
    def for_mode(cls, mode: Mode) -> Settings:
        if mode == 'quick':
            return cls(
                mode=mode,
                reps=1,
                alternative_reps=1,
                delegation_reps=1,
                delegation_turns=5,
                fanout_tasks=30,
                fanout_growth=(),
                fanout_timeout=60,
                cancel_live=(1, 5),
                cancel_samples=10,
                soft_cancel_samples=1,
                memory_live=5,
                memory_retained=5,
                churn_tasks=40,
                churn_every=20,
                churn_floor=True,
                bus_messages=500,
                model_cost_live=10,
                subprocess=False,
                warmup=False,
            )
        if mode == 'full':
            return cls(
                mode=mode,
                reps=5,
                alternative_reps=5,
                delegation_reps=5,
                delegation_turns=1000,
                fanout_tasks=1000,
                fanout_growth=(1_000, 10_000, 100_000),
                fanout_timeout=1800,
                cancel_live=(1, 100, 1000),
                cancel_samples=2000,
                soft_cancel_samples=50,
                memory_live=1000,
                memory_retained=1000,
                churn_tasks=100_000,
                churn_every=10_000,
                churn_floor=True,
                bus_messages=200_000,
            )
        return cls(
            mode=mode,
            reps=3,
            alternative_reps=2,
            delegation_reps=7,
            delegation_turns=150,
            fanout_tasks=1000,
            fanout_growth=(1_000, 2_000),
            fanout_timeout=400,
            cancel_live=(1, 100, 1000),
            cancel_samples=200,
            soft_cancel_samples=10,
            memory_live=300,
            memory_retained=500,
            churn_tasks=5_000,
            churn_every=500,
            churn_floor=False,
            bus_messages=20_000,
        )


# ----------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {
        'median': statistics.median(values),
        'min': min(values),
        'max': max(values),
        'n': len(values),
    }


NOISY = 0.25
"""A timing whose range exceeds this fraction of its median is flagged as noisy."""


def noise_note(ours: dict[str, float], floor: dict[str, float], *, higher_is_better: bool = False) -> str | None:
    """The ratio of the best runs, and a warning when the repetitions disagree too much to trust the medians."""
    best = ratio(ours['max'], floor['max']) if higher_is_better else ratio(ours['min'], floor['min'])
    parts = [] if best is None else [f'best-run ratio {best:.2f}x']
    worst = max((s['max'] - s['min']) / s['median'] for s in (ours, floor) if s['median'])
    if worst > NOISY:
        parts.append(f'NOISY (range {worst:.0%} of the median): rerun on a quiet machine')
    return '; '.join(parts) or None


def latency(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of a latency sample."""
    return {
        'p50': percentile(values, 50),
        'p99': percentile(values, 99),
        'max': max(values),
        'n': len(values),
    }


async def alternate(reps: int, variants: Sequence[V], run: Callable[[V], Awaitable[float]]) -> dict[V, list[float]]:
    """Run each variant `reps` times, alternating and reversing the order each round (ABBA) to cancel drift."""
    samples: dict[V, list[float]] = {v: [] for v in variants}
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for variant in order:
            gc.collect()
            samples[variant].append(await run(variant))
    return samples


# ----------------------------------------------------------------------------------------------- memory


def rss_bytes() -> int | None:
    """Current resident set size, where the platform tells it (`/proc/self/statm`), else `None`."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs); whether it worked."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak resident set size of this process: VmHWM where available, else `getrusage`.

    `getrusage` is not used first because on Linux its `ru_maxrss` survives `exec`: a fresh interpreter started by
    a big parent process reports the parent's size as its own peak.
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


# ----------------------------------------------------------------------------------------------- results


@dataclass
class Metric:
    """One row of the results table."""

    name: str
    unit: str
    ours: Any = None
    floor: Any = None
    ratio: float | None = None
    goal: str | None = None
    met: bool | None = None
    note: str | None = None
    vs_ours: float | None = None
    """For a row of another library (`--alternatives`): its value over ours (p50 over p50 for latencies)."""

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v is not None}
        return _round(data)


@dataclass
class WorkloadResult:
    """What one workload reports: table rows, optional series (growth, RSS over time) and notes."""

    name: str
    title: str
    params: dict[str, Any] = field(default_factory=dict[str, Any])
    metrics: list[Metric] = field(default_factory=list[Metric])
    series: dict[str, Any] = field(default_factory=dict[str, Any])
    notes: list[str] = field(default_factory=list[str])
    seconds: float = 0.0

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def to_json(self) -> dict[str, Any]:
        return {
            'title': self.title,
            'params': self.params,
            'metrics': [m.to_json() for m in self.metrics],
            'series': _round(self.series),
            'notes': self.notes,
            'seconds': round(self.seconds, 1),
        }


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return float(f'{value:.4g}')
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    return value


def fmt(value: Any, unit: str = '') -> str:
    """A compact human rendering of a number or a stats dict."""
    if value is None:
        return '-'
    if isinstance(value, dict):
        if 'p99' in value:
            return f'p50 {fmt(value["p50"])} p99 {fmt(value["p99"])}'
        if 'median' in value:
            return f'{fmt(value["median"])} [{fmt(value["min"])}-{fmt(value["max"])}]'
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f'{value:,}'
    if isinstance(value, float):
        if math.isnan(value):
            return '-'
        magnitude = abs(value)
        if magnitude >= 1000:
            return f'{value:,.0f}'
        if magnitude >= 100:
            return f'{value:.0f}'
        if magnitude >= 10:
            return f'{value:.1f}'
        if magnitude >= 1:
            return f'{value:.2f}'
        return f'{value:.3g}'
    return str(value)


def render_table(results: Sequence[WorkloadResult]) -> str:
    """The terminal table: one row per metric, grouped by workload.

    A row of another library shows its own value in the `ours` column and its own floor in the `floor` column; the
    `vs ours` column (there only when such rows are) divides its value by ours.
    """
    with_alternatives = any(m.vs_ours is not None for r in results for m in r.metrics)
    header = ('metric', 'unit', 'ours', 'floor', 'ours/floor', 'goal', 'met')
    header += ('vs ours',) if with_alternatives else ()
    rows: list[tuple[str, ...]] = []
    for result in results:
        rows.append((f'[{result.name}] {result.title}', *[''] * (len(header) - 1)))
        for m in result.metrics:
            met = '-' if m.met is None else ('yes' if m.met else 'NO')
            row = ('  ' + m.name, m.unit, fmt(m.ours), fmt(m.floor), _times(m.ratio), m.goal or '', met)
            rows.append((*row, _times(m.vs_ours)) if with_alternatives else row)
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ['  '.join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append('  '.join('-' * w for w in widths))
    for r in rows:
        if not any(r[1:]):
            lines.append(r[0])
        else:
            lines.append('  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return '\n'.join(lines)


def _times(value: float | None) -> str:
    return '-' if value is None else f'{value:.2f}x'


def ratio(ours: float | None, floor: float | None) -> float | None:
    if ours is None or floor is None or floor == 0:
        return None
    return ours / floor


# ----------------------------------------------------------------------------------------------- subprocesses


class Worker:
    """`bench/run.py --worker ...` in a fresh interpreter (clean RSS); `result()` returns the JSON it prints.

    It runs in the background from construction on, so work that measures no time can overlap with it.
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'run.py')
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, script, '--worker', *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the worker; on a timeout, kill it and return `{'timeout': seconds}`."""
        try:
            stdout, stderr = self.proc.communicate(timeout=max(0.0, timeout - (time.perf_counter() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {'timeout': timeout}
        if self.proc.returncode != 0:
            raise RuntimeError(f'worker {" ".join(self.args)} failed ({self.proc.returncode}):\n{stderr[-4000:]}')
        lines = [line for line in stdout.splitlines() if line.startswith('{')]
        data: dict[str, Any] = json.loads(lines[-1])
        data.setdefault('process_seconds', time.perf_counter() - self.started)
        return data


def run_worker(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a worker to completion (see `Worker`)."""
    return Worker(args).result(timeout)


def mib(n: float | None) -> float | None:
    return None if n is None else n / (1024 * 1024)
