"""Across processes on Redis: cancel latency from another process, and delegation to worker processes.

    uv run python bench/redis_bench.py            # starts its own redis-server on a free port (Debian: redis-server)
    uv run python bench/redis_bench.py --quick    # small sizes, a smoke run

Workloads (every model is a scripted `FunctionModel`; Redis runs on this machine, so the figures are the library's
and the loopback's, not a network's):

* **hard cancel across processes**: an application process runs `LIVE` tasks whose children are blocked in a model
  call; this process calls `hard_cancel(id)` on one of them and waits until its own copy of the record says
  `CANCELLED`. Measured: request -> owner stops the run -> event back, p50/p99 over the samples.
* **soft cancel across processes**: the same for tasks whose children work in 50 ms model turns; the time includes
  the rest of the turn in progress and the subagent's wrap-up turn (50 to 100 ms of model time).
* **worker round trip**: one task at a time on a worker process (child answers at once): `start` -> `COMPLETED` as
  seen by the owner; p50/p99.
* **worker throughput**: `TASKS` tasks started at once on one worker process with `--concurrency 8`; tasks per second.

Writes `bench/results/redis.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic_ai import Tool
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import SubAgentConfig, TaskStatus
from pydantic_ai_subagents.redis import redis_task_manager

HERE = Path(__file__).resolve().parent
BUS = {'refresh_interval': 0.1, 'lease_seconds': 5.0, 'read_block': 1.0}


async def blocked(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep_forever()
    raise AssertionError('unreachable')


STEP_SECONDS = 0.05


async def stepping(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep(STEP_SECONDS)
    notice = any(
        isinstance(p, UserPromptPart) and 'CANCELLATION REQUEST' in str(p.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
    )
    if notice:
        return ModelResponse(parts=[TextPart('partial')])
    return ModelResponse(parts=[ToolCallPart('step', {})])


def step() -> str:
    """One step."""
    return 'ok'


def instant(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart('ok')])


BLOCKED = SubAgentConfig(name='blocked', model=FunctionModel(blocked), can_ask_questions=False)
STEPPING = SubAgentConfig(
    name='stepping',
    model=FunctionModel(stepping),
    toolsets=[FunctionToolset([Tool(step)])],
    can_ask_questions=False,
    usage_limits=UsageLimits(request_limit=None, tool_calls_limit=None),  # steps until cancelled
)
INSTANT = SubAgentConfig(name='instant', model=FunctionModel(instant), can_ask_questions=False)
WORKER_SUBAGENTS = [INSTANT]
ON_WORKER = SubAgentConfig(name='instant', description='Answers at once, on a worker.', worker_queue='bench')


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        'n': len(samples),
        'p50_ms': percentile(samples, 0.5) * 1000,
        'p99_ms': percentile(samples, 0.99) * 1000,
        'mean_ms': statistics.fmean(samples) * 1000,
    }


# ---------------------------------------------------------------- the application process


async def app(url: str, namespace: str, blocked_tasks: int, stepping_tasks: int) -> None:
    async with redis_task_manager(
        url, namespace=namespace, bus_options=BUS, max_concurrent_tasks=None, max_tasks_per_scope=100_000
    ) as manager:
        ids = {'blocked': [], 'stepping': []}
        for config, count in ((BLOCKED, blocked_tasks), (STEPPING, stepping_tasks)):
            for _ in range(count):
                ids[config.name].append((await manager.start(config, 'work', scope='bench')).id)
        store: Any = manager.store
        await store.flush()
        # Let every run reach its model call, so that starting runs do not load the measurement.
        await anyio.sleep(1 + 0.01 * (blocked_tasks + stepping_tasks))
        print(json.dumps({'participant': manager.participant, **ids}), flush=True)
        await anyio.sleep_forever()


# ---------------------------------------------------------------- the measuring process


def start_redis() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    binary = shutil.which('redis-server')
    if binary is None:
        raise SystemExit('redis-server is not on PATH (Debian/Ubuntu: apt-get install redis-server)')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    workdir = tempfile.TemporaryDirectory(prefix='redis-bench-')
    process = subprocess.Popen(
        [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', workdir.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit('redis-server did not start') from None
            time.sleep(0.02)
    return process, f'redis://127.0.0.1:{port}/0', workdir


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
    )


async def _with_app(
    url: str, blocked_tasks: int, stepping_tasks: int
) -> tuple[subprocess.Popen[str], str, dict[str, Any]]:
    namespace = f'bench-{uuid.uuid4().hex[:8]}'
    process = spawn(str(HERE / 'redis_bench.py'), 'app', url, namespace, str(blocked_tasks), str(stepping_tasks))
    assert process.stdout is not None
    line = await anyio.to_thread.run_sync(process.stdout.readline)
    if not line:
        process.wait()
        raise SystemExit(f'the application process failed: {process.stderr.read() if process.stderr else ""}')
    return process, namespace, json.loads(line)


async def cancels(url: str, live: int, samples: int) -> dict[str, Any]:
    # Hard: the application process holds `live` tasks blocked in a model call, plus the ones cancelled one by one.
    process, namespace, ids = await _with_app(url, live + samples, 0)
    try:
        async with redis_task_manager(url, namespace=namespace, bus_options=BUS) as here:
            await here.bus.wait_for_participant(ids['participant'])  # type: ignore[attr-defined]
            hard: list[float] = []
            for task_id in ids['blocked'][:samples]:
                started = time.perf_counter()
                assert here.hard_cancel(task_id)
                record = await here.wait_for(task_id, timeout=30)
                hard.append(time.perf_counter() - started)
                assert record.status is TaskStatus.CANCELLED, record
    finally:
        process.kill()
        process.wait()
    # Soft: a separate application process whose tasks work in model turns (they would load the hard measurement).
    process, namespace, ids = await _with_app(url, 0, 20 if samples > 20 else 10)
    try:
        async with redis_task_manager(url, namespace=namespace, bus_options=BUS) as here:
            await here.bus.wait_for_participant(ids['participant'])  # type: ignore[attr-defined]
            soft: list[float] = []
            for task_id in ids['stepping']:
                started = time.perf_counter()
                assert here.soft_cancel(task_id)
                record = await here.wait_for(task_id, timeout=30)
                soft.append(time.perf_counter() - started)
                assert record.status is TaskStatus.CANCELLED, record
                assert record.partial_result == 'partial', record
    finally:
        process.kill()
        process.wait()
    return {'live_tasks': live, 'hard_cancel': summary(hard), 'soft_cancel': summary(soft)}


async def workers(url: str, round_trips: int, tasks: int) -> dict[str, Any]:
    namespace = f'bench-{uuid.uuid4().hex[:8]}'
    worker = spawn(
        '-m', 'pydantic_ai_subagents', 'worker', '--redis', url, '--namespace', namespace,
        '--subagents', 'bench.redis_bench:WORKER_SUBAGENTS', '--queue', 'bench', '--concurrency', '8',
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        while 'serves queue' not in (line := await anyio.to_thread.run_sync(worker.stderr.readline)):
            if not line:
                raise SystemExit('the worker process failed to start')
        async with redis_task_manager(
            url, namespace=namespace, bus_options=BUS, max_concurrent_tasks=None, max_tasks_per_scope=100_000,
            max_retained=tasks * 2,
        ) as parent:  # fmt: skip
            trips: list[float] = []
            for _ in range(round_trips):
                started = time.perf_counter()
                record = await parent.start(ON_WORKER, 'go', scope='bench')
                final = await parent.wait_for(record.id, timeout=30)
                trips.append(time.perf_counter() - started)
                assert final.status is TaskStatus.COMPLETED, final
            started = time.perf_counter()
            ids = [(await parent.start(ON_WORKER, 'go', scope='bench')).id for _ in range(tasks)]
            finals = await parent.wait(ids, timeout=300)
            wall = time.perf_counter() - started
            failed = [r for r in finals if r.status is not TaskStatus.COMPLETED]
            assert not failed, f'{len(failed)} tasks did not complete, e.g. {failed[0]}'
        return {
            'round_trip': summary(trips),
            'throughput': {'tasks': tasks, 'wall_s': wall, 'tasks_per_s': tasks / wall, 'worker_concurrency': 8},
        }
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def measure(quick: bool) -> dict[str, Any]:
    redis, url, workdir = start_redis()
    try:
        live, samples = (20, 20) if quick else (100, 200)
        round_trips, tasks = (10, 40) if quick else (100, 500)
        results: dict[str, Any] = {
            'cancel': await cancels(url, live, samples),
            'workers': await workers(url, round_trips, tasks),
        }
        server = (await anyio.run_process(['redis-server', '--version'])).stdout.decode().split()
        results['versions'] = {
            'python': platform.python_version(),
            'pydantic-ai-slim': version('pydantic-ai-slim'),
            'redis (client)': version('redis'),
            'redis-server': next((w.split('=', 1)[1] for w in server if w.startswith('v=')), 'unknown'),
        }
        results['load_average'] = os.getloadavg()[0]
        return results
    finally:
        redis.terminate()
        redis.wait()
        workdir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, a smoke run (writes no JSON)')
    args = parser.parse_args()
    results = anyio.run(measure, args.quick)
    cancel, work = results['cancel'], results['workers']
    rows = [
        (f'hard cancel from another process ({cancel["live_tasks"]} live)', cancel['hard_cancel']),
        ('soft cancel from another process (incl. 50-100 ms of turns)', cancel['soft_cancel']),
        ('worker round trip (start -> COMPLETED)', work['round_trip']),
    ]
    print(f'{"workload":<58} {"n":>5} {"p50 ms":>8} {"p99 ms":>8}')
    for name, row in rows:
        print(f'{name:<58} {row["n"]:>5} {row["p50_ms"]:>8.2f} {row["p99_ms"]:>8.2f}')
    t = work['throughput']
    print(f'worker throughput: {t["tasks"]} tasks in {t["wall_s"]:.2f} s = {t["tasks_per_s"]:.0f} tasks/s')
    print(f'versions: {results["versions"]}; load average {results["load_average"]:.2f}')
    if not args.quick:
        out = HERE / 'results' / 'redis.json'
        out.write_text(json.dumps(results, indent=2) + '\n')
        print(f'wrote {out.relative_to(HERE.parent)}')


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'app':
        anyio.run(app, sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
