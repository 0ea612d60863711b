"""Plot the fan-out growth series of a results JSON into docs/img/benchmarks.png.

    uv run python bench/plot.py                                   # bench/results/latest.json
    uv run python bench/plot.py bench/results/latest-full.json --out some.png

Left panel: wall time against the number of tasks; right panel: peak RSS growth. Both show ours and the floor, and,
after a run with `--alternatives`, the other libraries' fan-out (one size only, each on its own Pydantic AI) as single
points. bench/run.py calls `plot` after it writes a default or full JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, 'results', 'latest.json')
DEFAULT_PNG = os.path.join(os.path.dirname(HERE), 'docs', 'img', 'benchmarks.png')
STYLE = {'ours': {'marker': 'o', 'color': 'tab:blue'}, 'floor': {'marker': 's', 'color': 'tab:gray'}}
ALTERNATIVE_STYLE = {'sapa': {'marker': '^', 'color': 'tab:orange'}, 'harness': {'marker': 'D', 'color': 'tab:green'}}


def _points(series: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """(tasks, values) of the points that have `key`; timed-out points (no value) are left out."""
    pairs = [(p['tasks'], p[key] / scale) for p in series if p.get(key) is not None]
    pairs.sort()
    return [t for t, _ in pairs], [v for _, v in pairs]


def _alternatives(data: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (legend label, fresh-interpreter fan-out point) of each other library that ran."""
    fanout = data.get('workloads', {}).get('fanout', {})
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, alt in fanout.get('series', {}).get('alternatives', {}).items():
        ran = data.get('environment', {}).get('alternatives', {}).get(name)
        if not isinstance(ran, dict):
            continue
        versions = ran.get('versions', {})
        package = next((k for k in versions if k not in ('pydantic_ai', 'anyio', 'python')), name)
        point = {
            'tasks': alt['tasks'],
            # The wall time of the in-process repetitions: the fresh interpreters run side by side, for memory only.
            'seconds': alt.get('seconds', {}).get('alt', {}).get('median'),
            'rss_delta': alt.get('fresh', {}).get('alt', {}).get('rss_delta'),
        }
        found[name] = (f'{package} {versions.get(package, "")}'.strip(), point)
    return found


def _title(env: dict[str, Any]) -> str:
    parts = [f'pydantic-ai-subagents {env.get("pydantic_ai_subagents", "?")}']
    parts.append(f'pydantic-ai {env.get("pydantic_ai", "?")}')
    parts.append(f'Python {env.get("python", "?")}')
    return f'Fan-out growth, {env.get("date", "?")}: ' + ', '.join(parts)


def plot(json_path: str = DEFAULT_JSON, out_path: str = DEFAULT_PNG) -> str:
    """Write the two-panel PNG for `json_path` to `out_path` and return `out_path`."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    with open(json_path) as f:
        data = json.load(f)
    growth = data.get('workloads', {}).get('fanout', {}).get('series', {}).get('growth')
    if not growth:
        raise ValueError(f'{os.path.basename(json_path)} has no fan-out growth series (workloads.fanout.series)')

    alternatives = _alternatives(data)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=100)
    panels = (
        (left, 'seconds', 1.0, 'wall time (s)'),
        (right, 'rss_delta', 1024 * 1024, 'peak RSS growth (MiB)'),
    )
    for ax, key, scale, label in panels:
        for variant, series in growth.items():
            tasks, values = _points(series, key, scale)
            if tasks:
                ax.plot(tasks, values, label=variant, linewidth=1.8, markersize=6, **STYLE.get(variant, {}))
        for name, (package, point) in alternatives.items():
            if point.get(key) is not None:
                style = ALTERNATIVE_STYLE.get(name, {})
                ax.plot([point['tasks']], [point[key] / scale], linestyle='none', markersize=7, label=package, **style)
        ax.set_xlabel('tasks')
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f'{x:,.0f}'))
        ax.grid(True, alpha=0.3)
        ax.legend(loc='best', fontsize=8, framealpha=0.8)
    left.set_title('wall time', fontsize=10)
    right.set_title('peak RSS growth', fontsize=10)
    fig.suptitle(_title(data.get('environment', {})), fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        'json', nargs='?', default=DEFAULT_JSON, help='results JSON (default: bench/results/latest.json)'
    )
    parser.add_argument('--out', default=DEFAULT_PNG, help='PNG to write (default: docs/img/benchmarks.png)')
    args = parser.parse_args(argv)
    out = plot(args.json, args.out)
    print(f'plot written to {os.path.relpath(out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
