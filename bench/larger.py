"""Fan-out at larger sizes, point by point, and a long churn: the figures of the "Larger sizes" docs section.

    uv run python bench/larger.py                          # 1k, 10k, 100k tasks, then churn 100k (about 50 minutes)
    uv run python bench/larger.py --sizes 1000,10000 --churn 0

Each size runs ours and the floor side by side, each in a fresh interpreter (one per core on a 2-core machine), with
the fan-out workload's settings (20 ms child latency, 100 at a time, every finished task retained). The churn runs
ours alone with `max_retained=1000`, a point every tenth of the run. Writes bench/results/larger-sizes.json and
plots it to docs/img/benchmarks-larger.svg.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from _harness import Settings, Worker
from run import environment

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, 'results', 'larger-sizes.json')
DEFAULT_PNG = os.path.join(os.path.dirname(HERE), 'docs', 'img', 'benchmarks-larger.svg')
WORKER_TIMEOUT = 4 * 3600.0
"""A bound on one worker, far above the largest point here (about 20 minutes on a slow 2-core machine)."""


def _result(worker: Worker) -> dict[str, Any]:
    data = worker.result(WORKER_TIMEOUT)
    if 'timeout' in data:
        raise SystemExit(f'worker {" ".join(worker.args)} did not finish within {WORKER_TIMEOUT:.0f} s')
    data.pop('process_seconds', None)
    return data


def fanout_points(sizes: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Ours and the floor at each size, side by side."""
    growth: dict[str, list[dict[str, Any]]] = {'ours': [], 'floor': []}
    for n in sizes:
        t0 = time.perf_counter()
        workers = {variant: Worker(['fanout-point', variant, str(n)]) for variant in growth}
        for variant, worker in workers.items():
            growth[variant].append({'tasks': n, **_result(worker)})
        ours, floor = growth['ours'][-1], growth['floor'][-1]
        print(
            f'{n:>9,} tasks: ours {ours["seconds"]:.1f} s, floor {floor["seconds"]:.1f} s '
            f'({ours["seconds"] / floor["seconds"]:.2f}x); peak RSS growth ours {ours["rss_delta"] / 2**20:.1f} MiB, '
            f'floor {floor["rss_delta"] / 2**20:.1f} MiB  [{time.perf_counter() - t0:.0f} s]',
            flush=True,
        )
    return growth


def churn(tasks: int, retained: int) -> list[dict[str, Any]]:
    """RSS and internal table sizes while churning `tasks` tasks through ours."""
    every = max(1, tasks // 10)
    points = _result(Worker(['churn', 'ours', str(tasks), str(every), str(retained)]))['points']
    for point in points:
        print(f'  churned {point["tasks"]:>9,}: RSS {point["rss"] / 2**20:.1f} MiB, {point["store_records"]} records')
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', default='1000,10000,100000', help='fan-out sizes, comma-separated')
    parser.add_argument('--churn', type=int, default=100_000, help='tasks to churn (0: no churn)')
    parser.add_argument('--retained', type=int, default=1000, help='max_retained during the churn')
    parser.add_argument('--json', default=DEFAULT_JSON, help='where to write the results')
    parser.add_argument('--out', default=DEFAULT_PNG, help='where to write the plot')
    args = parser.parse_args(argv)
    sizes = [int(s.replace('_', '')) for s in args.sizes.split(',') if s.strip()]

    env = environment(Settings.for_mode('full'))
    env['mode'] = 'larger sizes, point by point'
    print('larger sizes: ' + ', '.join(f'{k}={v}' for k, v in env.items() if k != 'mode'), flush=True)
    started = time.perf_counter()
    workloads: dict[str, Any] = {'fanout': {'series': {'growth': fanout_points(sizes)}}}
    if args.churn:
        workloads['memory'] = {'series': {'churn': churn(args.churn, args.retained)}}
    payload = {
        'environment': env,
        'note': (
            'fan-out: 20 ms child latency, 100 at a time, max_retained=n, ours and the floor side by side, each in a '
            f'fresh interpreter; churn: ours, max_retained={args.retained}, a point every tenth of the run'
        ),
        'total_seconds': round(time.perf_counter() - started, 1),
        'workloads': workloads,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w') as f:
        json.dump(payload, f, indent=1)
        f.write('\n')
    print(f'results written to {os.path.relpath(args.json)}')
    try:  # a plot is a bonus: the JSON is already written
        import plot

        print(f'plot written to {os.path.relpath(plot.plot(args.json, args.out))}')
    except Exception as exc:
        print(f'no plot: {type(exc).__name__}: {exc}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
