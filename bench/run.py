"""Benchmark harness for pydantic-ai-subagents: our library against a plain Pydantic AI / anyio floor.

    uv run python bench/run.py            # default sizes, a few minutes; writes bench/results/latest.json
    uv run python bench/run.py --quick    # tiny sizes, ~10 s (smoke run); writes no JSON unless --json
    uv run python bench/run.py --full     # bigger sizes; writes bench/results/latest-full.json
    uv run python bench/run.py --only delegation,bus
    uv run python bench/run.py --profile fanout   # cProfile of our variant of one workload
    uv run python bench/run.py --alternatives   # also subagents-pydantic-ai and pydantic-ai-harness (but for bus)

See bench/README.md for the workloads and how to read the results.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import io
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import anyio

from _harness import Metric, Mode, Settings, WorkloadResult, mib, noise_note, ratio, render_table

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = ('delegation', 'fanout', 'cancel', 'memory', 'model_cost', 'bus')
ALTERNATIVES: dict[str, list[str]] = {
    # name -> what pip installs into bench/.venvs/<name>; alternatives.py runs there, never in the project's venv
    'sapa': ['subagents-pydantic-ai', 'pydantic-ai-slim==2.68.0', 'anyio'],
    'harness': ['pydantic-ai-harness', 'anyio'],
}
ALTERNATIVE_WORKLOADS = ('delegation', 'model_cost', 'fanout', 'cancel', 'memory')


def _load(name: str) -> Callable[[Settings], WorkloadResult]:
    import w_bus
    import w_cancel
    import w_delegation
    import w_fanout
    import w_memory
    import w_model_cost

    modules = {
        'delegation': w_delegation,
        'fanout': w_fanout,
        'cancel': w_cancel,
        'memory': w_memory,
        'model_cost': w_model_cost,
        'bus': w_bus,
    }
    return modules[name].run


def environment(settings: Settings) -> dict[str, Any]:
    return {
        'mode': settings.mode,
        'date': datetime.date.today().isoformat(),
        'python': platform.python_version(),
        'implementation': platform.python_implementation(),
        'system': f'{platform.system()} {platform.machine()}',
        'cpus': os.cpu_count(),
        'pydantic_ai_subagents': version('pydantic-ai-subagents'),
        'pydantic_ai': version('pydantic-ai-slim'),
        'anyio': version('anyio'),
        'load_average_at_start': _load_average(),
    }


def _load_average() -> float | None:
    """1-minute load average: how busy the machine was (other processes skew timings)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def worker(args: list[str]) -> None:
    """Entry point of the fresh interpreters some measurements need; prints one JSON line."""
    kind = args[0]
    if kind == 'fanout-point':
        from w_fanout import worker_point

        data = worker_point(args[1], int(args[2]))  # type: ignore[arg-type]
    elif kind == 'churn':
        from w_memory import worker_churn

        data = worker_churn(args[1], int(args[2]), int(args[3]), int(args[4]))  # type: ignore[arg-type]
    else:
        raise SystemExit(f'unknown worker {kind!r}')
    print(json.dumps(data))


def profile(name: str, settings: Settings) -> None:
    """Run our variant of one workload under cProfile; print the hottest functions and the library's own."""
    import w_bus
    import w_cancel
    import w_delegation
    import w_fanout
    import w_memory

    targets: dict[str, Callable[[], Any]] = {
        'delegation': lambda: anyio.run(w_delegation.one_run, 'ours', settings.delegation_turns),
        'fanout': lambda: anyio.run(w_fanout.fan_out, 'ours', settings.fanout_tasks),
        'cancel': lambda: anyio.run(w_cancel.hard_cancel_ours, max(settings.cancel_live), 200, random.Random(1)),
        'memory': lambda: anyio.run(w_memory.churn, 'ours', 2000, 1000, 1000),
        'bus': lambda: anyio.run(w_bus.handoff, 'ours', 'p2p', settings.bus_messages),
    }
    if name not in targets:
        raise SystemExit(f'--profile takes one of {", ".join(targets)}')
    targets[name]()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    targets[name]()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats('tottime').print_stats(30)
    print('== hottest functions (own time)')
    print(out.getvalue().replace(os.path.dirname(os.path.dirname(anyio.__file__)) + os.sep, ''))
    print('== library functions (cumulative)')
    print(f'{"ncalls":>9} {"tottime":>9} {"cumtime":>9}  function')
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    rows = [(key, value) for key, value in raw.items() if f'pydantic_ai_subagents{os.sep}' in key[0]]
    rows.sort(key=lambda item: -item[1][3])
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in rows[:30]:
        print(f'{ncalls:>9} {tottime:>9.3f} {cumtime:>9.3f}  {os.path.basename(filename)}:{line}({func})')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--quick', action='store_true', help='tiny sizes, about 10 s (smoke run)')
    size.add_argument('--full', action='store_true', help='bigger sizes (delegation 1,000 turns, fan-out to 100k, ...)')
    parser.add_argument('--only', help=f'comma-separated workloads out of: {", ".join(WORKLOADS)}')
    parser.add_argument('--json', help='where to write the JSON results (default: bench/results/latest[-full].json)')
    parser.add_argument('--no-json', action='store_true', help='write no JSON file')
    parser.add_argument(
        '--reps',
        type=int,
        help="repetitions of our timed workloads and the floor's (default: 3, delegation 7; --full: 5)",
    )
    parser.add_argument('--profile', metavar='WORKLOAD', help='cProfile our variant of one workload and exit')
    parser.add_argument(
        '--alternatives',
        action='store_true',
        help='also run subagents-pydantic-ai and pydantic-ai-harness (every workload but bus), each in its own '
        'venv under bench/.venvs/ (created on first use with pip)',
    )
    parser.add_argument('--worker', nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        worker(args.worker)
        return 0
    mode: Mode = 'quick' if args.quick else 'full' if args.full else 'default'
    settings = Settings.for_mode(mode)
    if args.reps is not None:
        settings = dataclasses.replace(settings, reps=args.reps, delegation_reps=args.reps)
    if args.profile:
        profile(args.profile, settings)
        return 0
    names = WORKLOADS if not args.only else tuple(n.strip() for n in args.only.split(','))
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f'unknown workload(s) {", ".join(unknown)}; choose from {", ".join(WORKLOADS)}')

    env = environment(settings)
    print(f'pydantic-ai-subagents bench ({mode}): ' + ', '.join(f'{k}={v}' for k, v in env.items() if k != 'mode'))
    if mode == 'quick':
        print('quick mode: tiny sizes, one repetition, no warm-up; a smoke run, the numbers mean little')
    results: list[WorkloadResult] = []
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f'... {name}', flush=True)
        result = _load(name)(settings)
        result.seconds = time.perf_counter() - t0
        results.append(result)
        print(f'    done in {result.seconds:.1f} s', flush=True)
    if args.alternatives:
        env['alternatives'] = run_alternatives(settings, results)
    total = time.perf_counter() - started

    print()
    print(render_table(results))
    for result in results:
        for metric in result.metrics:
            if metric.note:
                print(f'  * [{result.name}] {metric.name.strip()}: {metric.note}')
        for note in result.notes:
            print(f'  * [{result.name}] {note}')
    _print_series(results)
    print(f'\ntotal {total:.0f} s')

    path = args.json
    if path is None and not args.no_json and mode != 'quick':
        path = os.path.join(HERE, 'results', 'latest.json' if mode == 'default' else 'latest-full.json')
    if path and not args.no_json:
        env['load_average_at_end'] = _load_average()
        payload = {
            'environment': env,
            'total_seconds': round(total, 1),
            'workloads': {r.name: r.to_json() for r in results},
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(payload, f, indent=1, ensure_ascii=False)
            f.write('\n')
        print(f'results written to {os.path.relpath(path)}')
        if mode != 'quick':
            _plot(path)
    return 0


def _plot(json_path: str) -> None:
    """Plot the fan-out growth of a written JSON; never fails the run.

    The default bench/results/latest.json goes to docs/img/benchmarks.svg (the image the docs embed); any other
    JSON gets a PNG of the same name next to it, so a full or custom run leaves the docs image alone.
    """
    default_json = os.path.join(HERE, 'results', 'latest.json')
    same = os.path.abspath(json_path) == os.path.abspath(default_json)
    out = os.path.join(os.path.dirname(HERE), 'docs', 'img', 'benchmarks.svg')
    if not same:
        out = os.path.splitext(json_path)[0] + '.png'
    try:  # a plot is a bonus: the JSON is already written
        import plot

        plot.plot(json_path, out)
    except Exception as exc:
        print(f'no plot: {type(exc).__name__}: {exc}')
    else:
        print(f'plot written to {os.path.relpath(out)}')


def _alt_python(name: str) -> str | None:
    """The python of the alternative's venv, created (and pip-installed) on first use; None if that failed."""
    root = os.path.join(HERE, '.venvs', name)
    python = os.path.join(root, 'Scripts' if os.name == 'nt' else 'bin', 'python')
    if os.path.exists(python):
        return python
    print(f'    creating bench/.venvs/{name} and installing {" ".join(ALTERNATIVES[name])} ...', flush=True)
    try:
        venv.create(root, with_pip=True, clear=True)
        subprocess.run([python, '-m', 'pip', 'install', '-q', *ALTERNATIVES[name]], check=True, timeout=900)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f'    could not create the venv for {name} ({exc}); skipping it', flush=True)
        if os.path.exists(python):
            os.remove(python)  # so the next run tries again
        return None
    return python


def run_alternatives(settings: Settings, results: list[WorkloadResult]) -> dict[str, Any]:
    """Run bench/alternatives.py in each alternative's venv on the workloads that ran, and add its rows to them."""
    by_name = {r.name: r for r in results}
    only = [n for n in ALTERNATIVE_WORKLOADS if n in by_name]
    ran: dict[str, Any] = {}
    if not only:
        return ran
    options = {
        '--only': ','.join(only),
        '--turns': settings.delegation_turns,
        '--reps': settings.alternative_reps,
        '--delegation-reps': settings.delegation_reps,
        '--fanout': settings.fanout_tasks,
        '--cancel-live': ','.join(str(n) for n in settings.cancel_live),
        '--cancel-samples': settings.cancel_samples,
        '--soft-cancel-samples': settings.soft_cancel_samples,
        '--memory-live': settings.memory_live,
        '--memory-retained': settings.memory_retained,
    }
    for name in ALTERNATIVES:
        print(f'... alternative {name}: {", ".join(only)}', flush=True)
        python = _alt_python(name)
        if python is None:
            ran[name] = 'not run: venv creation failed'
            continue
        command = [python, os.path.join(HERE, 'alternatives.py'), name]
        command += [str(part) for option in options.items() for part in option]
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
            data = json.loads(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
            stderr = getattr(exc, 'stderr', None) or ''
            print(f'    alternative {name} failed: {exc}\n{stderr[-2000:]}', flush=True)
            ran[name] = 'not run: alternatives.py failed'
            continue
        seconds = time.perf_counter() - started
        print(f'    done in {seconds:.1f} s', flush=True)
        ran[name] = {'versions': data['versions'], 'seconds': round(seconds, 1), 'seconds_per_part': data['seconds']}
        _add_alternative_rows(name, data, by_name)
    return ran


def _add_alternative_rows(name: str, data: dict[str, Any], by_name: dict[str, WorkloadResult]) -> None:
    versions = data['versions']
    package = next(k for k in versions if k not in ('pydantic_ai', 'anyio', 'python'))
    label = f'{package} {versions[package]} on pydantic-ai {versions["pydantic_ai"]}'
    adders: dict[str, Callable[[WorkloadResult, str, Any], None]] = {
        'delegation': _alt_delegation,
        'model_cost': _alt_model_cost,
        'fanout': _alt_fanout,
        'cancel': _alt_cancel,
        'memory': _alt_memory,
    }
    for workload, add in adders.items():
        result = by_name.get(workload)
        if result is None or workload not in data:
            continue
        add(result, name, data[workload])
        result.series.setdefault('alternatives', {})[name] = data[workload]
        result.notes.append(
            f'{name} rows: {label}; its floor ran in the same interpreter (its own venv and pydantic-ai), '
            'and "vs ours" divides its figure by ours'
        )


def _ours(result: WorkloadResult, name: str) -> Any:
    """Our figure of the first row whose name starts with `name` (None if a workload renamed it)."""
    return next((m.ours for m in result.metrics if m.name.strip().startswith(name)), None)


def _median(stats: Any) -> float | None:
    return stats.get('median') if isinstance(stats, dict) else None


def _alt_delegation(result: WorkloadResult, name: str, data: Any) -> None:
    alt, floor = data['alt'], data['floor']
    ours = _median(_ours(result, 'time per delegation'))
    result.add(
        Metric(
            f'{name}: time per delegation',
            'ms',
            alt,
            floor,
            ratio(alt['median'], floor['median']),
            note=noise_note(alt, floor),
            vs_ours=ratio(alt['median'], ours),
        )
    )


def _alt_model_cost(result: WorkloadResult, name: str, data: Any) -> None:
    tools = next((m for m in result.metrics if m.name.startswith('tool definitions')), Metric('', ''))
    result.add(
        Metric(
            f'{name}: tool definitions ({len(data["tools"])} tools)',
            'chars',
            data['tools_total'],
            tools.floor,
            ratio(data['tools_total'], tools.floor),
            note='per tool: ' + ', '.join(f'{k} {v}' for k, v in data['tools'].items()),
            vs_ours=ratio(data['tools_total'], tools.ours),
        )
    )
    ours = _ours(result, 'instructions added by the toolset')
    result.add(
        Metric(
            f'{name}: instructions the parent model receives',
            'chars',
            data['instructions'],
            vs_ours=ratio(data['instructions'], ours),
        )
    )


def _alt_fanout(result: WorkloadResult, name: str, data: Any) -> None:
    from w_fanout import CONCURRENCY, LATENCY

    alt, floor = data['seconds']['alt'], data['seconds']['floor']
    ours = _median(_ours(result, 'wall time'))
    ideal = data['tasks'] / CONCURRENCY * LATENCY
    result.add(
        Metric(
            f'{name}: wall time',
            's',
            alt,
            floor,
            ratio(alt['median'], floor['median']),
            note=noise_note(alt, floor),
            vs_ours=ratio(alt['median'], ours),
        )
    )
    result.add(Metric(f'{name}: wall time / ideal', 'x', alt['median'] / ideal, floor['median'] / ideal))
    result.add(Metric(f'{name}: limit of {CONCURRENCY} at a time', '', 'not supported', note=data['concurrency_note']))
    fresh = data.get('fresh')
    if fresh:
        o = _ours(result, 'peak RSS growth (')
        a, f = mib(fresh['alt']['rss_delta']), mib(fresh['floor']['rss_delta'])
        result.add(
            Metric(f'{name}: peak RSS growth ({data["tasks"]:,} tasks)', 'MiB', a, f, ratio(a, f), vs_ours=ratio(a, o))
        )
        if 'floor_unlimited' in fresh:
            u = mib(fresh['floor_unlimited']['rss_delta'])
            result.add(Metric(f'{name}: peak RSS growth, floor with no limit', 'MiB', a, u, ratio(a, u)))


def _alt_cancel(result: WorkloadResult, name: str, data: Any) -> None:
    for hard in data['hard']:
        live = hard['live']
        alt, floor = hard['alt'], hard['floor']
        ours = result.series.get(f'hard_cancel_{live}_live', {}).get('ours')
        result.add(
            Metric(
                f'{name}: hard cancel -> run exited, {live:,} live',
                'us',
                alt,
                floor,
                ratio(alt['p50'], floor['p50']),
                vs_ours=ratio(alt['p50'], ours['p50']) if ours else None,
            )
        )
        if 'alt_call' in hard:
            call = hard['alt_call']
            ours_call = result.series.get(f'call_{live}_live', {}).get('ours')
            result.add(
                Metric(
                    f'{name}: the cancel call itself, {live:,} live',
                    'us',
                    call,
                    vs_ours=ratio(call['p50'], ours_call['p50']) if ours_call else None,
                )
            )
    premature = sum(h['premature_cancelled'] for h in data['hard'])
    wrong = sum(h['not_cancelled'] for h in data['hard'])
    samples = sum(h['alt']['n'] for h in data['hard'])
    result.add(
        Metric(
            f'{name}: status CANCELLED before the run exited',
            'samples',
            premature,
            note=f'of {samples:,}; {data["api"]}; final status not cancelled: {wrong}',
        )
    )
    soft = data.get('soft')
    if soft:
        result.add(Metric(f'{name}: soft cancel: turns after request', 'turns', soft['turns_after']))
        result.add(
            Metric(
                f'{name}: soft cancel: request -> task ended',
                'ms',
                soft['wall_ms'],
                note=f'{data["soft_api"]}; final statuses {soft["statuses"]}; last result {soft["last_result"]!r}',
            )
        )


def _alt_memory(result: WorkloadResult, name: str, data: Any) -> None:
    alt, floor = data['live_bytes']['alt'] / 1024, data['live_bytes']['floor'] / 1024
    ours_live = _ours(result, 'bytes per live task')
    result.add(
        Metric(f'{name}: bytes per live task', 'KiB', alt, floor, ratio(alt, floor), vs_ours=ratio(alt, ours_live))
    )
    retained = data['retained_bytes'] / 1024
    ours_retained = _ours(result, 'bytes per retained finished task')
    result.add(
        Metric(f'{name}: bytes per retained finished task', 'KiB', retained, vs_ours=ratio(retained, ours_retained))
    )


def _print_series(results: list[WorkloadResult]) -> None:
    from _harness import fmt, mib

    for result in results:
        if result.name == 'fanout' and 'growth' in result.series:
            print('\nfan-out growth (fresh interpreter per point):')
            print(f'  {"tasks":>8}  {"variant":<6}  {"wall s":>8}  {"ms/task":>8}  {"peak RSS growth MiB":>20}')
            for variant, points in result.series['growth'].items():
                for p in points:
                    secs = p.get('seconds')
                    print(
                        f'  {p["tasks"]:>8,}  {variant:<6}  {fmt(secs) if secs else "timeout":>8}  '
                        f'{fmt(secs / p["tasks"] * 1e3) if secs else "-":>8}  {fmt(mib(p.get("rss_delta"))):>20}'
                    )
        if result.name == 'memory' and 'churn' in result.series:
            print('\nRSS while churning (after gc; ours keeps max_retained records, floor the last outputs):')
            ours = result.series['churn']['ours']
            floor = {p['tasks']: p for p in result.series['churn'].get('floor', [])}
            print(f'  {"tasks":>8}  {"ours MiB":>9}  {"floor MiB":>9}  {"records":>8}  {"owed notices":>12}')
            for o in ours:
                f = floor.get(o['tasks'], {})
                print(
                    f'  {o["tasks"]:>8,}  {fmt(mib(o["rss"])):>9}  {fmt(mib(f.get("rss"))):>9}  '
                    f'{o.get("store_records", "-"):>8}  {o.get("owed_notices", "-"):>12}'
                )


if __name__ == '__main__':
    sys.exit(main())
