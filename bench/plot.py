"""Plot the fan-out growth series of a results JSON into docs/img/benchmarks.svg.

    uv run python bench/plot.py                                   # bench/results/latest.json
    uv run python bench/plot.py bench/results/larger-sizes.json --out docs/img/benchmarks-larger.svg
    uv run python bench/plot.py bench/results/latest-full.json --out some.png

Three panels against the number of tasks, on log axes so that 1,000 and 100,000 tasks read alike: wall time, time
per task (wall time over tasks) and peak RSS growth. Each shows this library and the floor (the same work on plain
Pydantic AI and anyio) and, after a run with `--alternatives`, the other libraries' fan-out (one size only, each on
its own Pydantic AI) as single points. The legend names the libraries. The format follows the file's extension: SVG
for the docs (text kept as text), PNG or PDF elsewhere. bench/run.py calls `plot` after it writes a default or full
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, 'results', 'latest.json')
DEFAULT_OUT = os.path.join(os.path.dirname(HERE), 'docs', 'img', 'benchmarks.svg')
STYLE = {'ours': {'marker': 'o', 'color': 'tab:blue'}, 'floor': {'marker': 's', 'color': 'tab:gray'}}
LABEL = {'ours': 'pydantic-ai-subagents', 'floor': 'floor: plain Pydantic AI + anyio'}
"""What the results JSON calls `ours` and `floor`, as the legend names them."""
ALTERNATIVE_STYLE = {'sapa': {'marker': '^', 'color': 'tab:orange'}, 'harness': {'marker': 'D', 'color': 'tab:green'}}


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
    parts.append(f'Pydantic AI {env.get("pydantic_ai", "?")}')
    parts.append(f'Python {env.get("python", "?")}')
    return f'Fan-out, 20 ms per child model call, 100 at a time ({env.get("date", "?")}: ' + ', '.join(parts) + ')'


def plot(json_path: str = DEFAULT_JSON, out_path: str = DEFAULT_OUT) -> str:
    """Write the three-panel plot for `json_path` to `out_path` and return `out_path`."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    with open(json_path) as f:
        data = json.load(f)
    growth = data.get('workloads', {}).get('fanout', {}).get('series', {}).get('growth')
    if not growth:
        raise ValueError(f'{os.path.basename(json_path)} has no fan-out growth series (workloads.fanout.series)')

    alternatives = _alternatives(data)
    plt.rcParams.update({'font.size': 11, 'svg.fonttype': 'none', 'svg.hashsalt': 'plot', 'font.family': 'sans-serif'})
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.2))

    def per_task_ms(point: dict[str, Any]) -> float | None:
        return None if point.get('seconds') is None else 1000 * point['seconds'] / point['tasks']

    def rss_mib(point: dict[str, Any]) -> float | None:
        return None if point.get('rss_delta') is None else point['rss_delta'] / 2**20

    panels = (
        (axes[0], 'wall time (s)', lambda point: point.get('seconds')),
        (axes[1], 'time per task (ms)', per_task_ms),
        (axes[2], 'peak RSS growth (MiB)', rss_mib),
    )
    all_tasks = sorted({p['tasks'] for series in growth.values() for p in series})
    ticks_y = (1.0, 2.0, 5.0)
    ticks = (1.0,) if all_tasks[-1] / all_tasks[0] > 20 else (1.0, 2.0, 5.0)  # decades, or finer on a short range
    for ax, label, value in panels:
        shown: list[float] = []
        for variant, series in growth.items():
            pairs = sorted((p['tasks'], v) for p in series if (v := value(p)) is not None)
            shown.extend(v for _, v in pairs)
            if pairs:
                ax.plot(
                    [t for t, _ in pairs],
                    [v for _, v in pairs],
                    label=LABEL.get(variant, variant),
                    linewidth=2,
                    markersize=7,
                    **STYLE.get(variant, {}),
                )
        for name, (package, point) in alternatives.items():
            if (v := value(point)) is not None:
                shown.append(v)
                style = ALTERNATIVE_STYLE.get(name, {})
                ax.plot([point['tasks']], [v], linestyle='none', markersize=8, label=package, **style)
        ax.set_xscale('log')
        ax.set_xlim(all_tasks[0] / 1.6, all_tasks[-1] * 1.6)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=ticks))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f'{x:,.0f}'))
        if ax is axes[1]:
            ax.set_ylim(bottom=0)  # per-task time: a linear axis from zero shows how much it grows
        else:
            ax.set_yscale('log')  # totals grow with the tasks: a log axis shows every size, and slope 1 is linear
            short = max(shown) / min(shown) < 10  # less than a decade: label more ticks in it
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if short else ticks_y))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f'{y:,.0f}' if y >= 1 else f'{y:.2g}'))
        ax.set_xlabel('tasks')
        ax.set_title(label, fontsize=11)
        ax.grid(True, which='major', alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            if text not in labels:
                handles.append(handle)
                labels.append(text)
    columns = len(labels) if len(labels) <= 2 else 2
    rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc='lower center', ncol=columns, frameon=False, fontsize=11)
    fig.suptitle(_title(data.get('environment', {})), fontsize=11)
    fig.tight_layout(rect=(0, 0.07 * rows + 0.02, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, metadata={'Date': None} if out_path.endswith('.svg') else None)
    plt.close(fig)
    return out_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        'json', nargs='?', default=DEFAULT_JSON, help='results JSON (default: bench/results/latest.json)'
    )
    parser.add_argument('--out', default=DEFAULT_OUT, help='file to write (default: docs/img/benchmarks.svg)')
    args = parser.parse_args(argv)
    out = plot(args.json, args.out)
    print(f'plot written to {os.path.relpath(out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
