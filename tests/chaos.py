"""A chaos run on a real `redis-server`: two managers and two worker processes share a namespace while Redis is
killed and restarted (with and without its data), a worker is killed, and a manager is killed.

`python -m tests.chaos --tasks 400` (what `make chaos` runs) prints the counts and what each fault cost to recover;
`tests/test_redis_chaos.py` runs it at a small size. Manager A runs in this process and survives everything;
manager B and the workers are OS processes (`python -m tests.chaos manager ...` is B).

At the end every task must have exactly one terminal state, no result may be lost, no task of a live owner may
have failed, and the workers must be back at work (a last batch of tasks completes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from pydantic_ai_subagents import SubAgentConfig, TaskEvent, TaskManager, TaskStatus
from pydantic_ai_subagents.redis import RedisTaskStore, redis_task_manager

from .redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = 'chaos'
QUEUE = 'chaos'
LEASE: dict[str, Any] = {'lease_seconds': 2.0, 'heartbeat_interval': 0.2}
BUS: dict[str, Any] = {'refresh_interval': 0.1, 'lease_seconds': 2.0, 'read_block': 0.2}
STEPS = 3
EXPECTED = f'finished {STEPS} steps'
REMOTE = SubAgentConfig(name='stepper', description='Works in steps.', worker_queue=QUEUE, retries=5)
"""The owners' side of the workers' `stepper` (tests.redis_procs): retried when its worker dies."""
ASKER = SubAgentConfig(name='asker', description='Asks.', worker_queue=QUEUE, retries=5)
"""The owners' side of the workers' `asker`: it asks its parent and waits for the answer."""
CONCURRENCY = 8
"""Tasks each worker runs at once."""
ASKERS = CONCURRENCY // 2
"""Most of manager B's tasks that wait for an answer: each holds a worker's slot until B is found dead, so at any
size they leave the workers most of their slots."""
STARTUP_TIMEOUT = 60.0
"""Seconds a worker process may take to serve its queue: importing Pydantic AI alone takes several seconds of a
loaded 2-core machine."""
PROBE_DEADLINE = 60.0
"""Seconds a fault may take to recover before the run gives up on it (and fails)."""


@dataclass
class Report:
    """What the chaos run found."""

    tasks: int = 0
    terminal_counts: Counter[int] = field(default_factory=Counter[int])
    not_terminal: int = 0
    results_lost: int = 0
    falsely_failed: int = 0
    owner_died_failed: int = 0
    completed: int = 0
    reruns: int = 0
    workers_back: bool = False
    recovery: dict[str, float] = field(default_factory=dict[str, float])

    @property
    def ok(self) -> bool:
        """Whether every promise held."""
        exactly_one = set(self.terminal_counts) <= {1}
        return (
            exactly_one
            and not self.not_terminal
            and not self.results_lost
            and not self.falsely_failed
            and (self.workers_back)
        )

    def lines(self) -> list[str]:
        """The report, for people."""
        return [
            f'tasks: {self.tasks} (completed {self.completed}, failed with their dead owner {self.owner_died_failed}, '
            f'run again after their worker died {self.reruns})',
            f'tasks with exactly one terminal state: {self.terminal_counts.get(1, 0)}; with another count: '
            f'{sum(n for k, n in self.terminal_counts.items() if k != 1)}; never finished: {self.not_terminal}',
            f'results lost: {self.results_lost}',
            f'live tasks failed falsely: {self.falsely_failed}',
            f'workers back at work: {"yes" if self.workers_back else "NO"}',
            *(f'recovery after {fault}: {seconds:.2f} s' for fault, seconds in self.recovery.items()),
            'PASS' if self.ok else 'FAIL',
        ]


class Processes:
    """The worker processes and manager B, with their logs in a temporary directory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.logs = tempfile.TemporaryDirectory(prefix='chaos-logs-')
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.participants: dict[str, list[str]] = {}
        """Each worker's participant names, one per start."""

    def _spawn(self, name: str, *args: str, stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        with open(Path(self.logs.name) / f'{name}.log', 'ab') as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                stdout=stdout,
                stderr=log,
                env={**os.environ, 'PYTHONUNBUFFERED': '1'},
            )
        self.running[name] = process
        return process

    async def worker(self, name: str) -> None:
        """Start a worker process and wait until it serves the queue."""
        self._spawn(
            name, '-m', 'pydantic_ai_subagents', 'worker', '--redis', self.url, '--namespace', NAMESPACE,
            '--subagents', 'tests.redis_procs:WORKER_SUBAGENTS', '--queue', QUEUE, '--concurrency', str(CONCURRENCY),
            '--lease-seconds', str(LEASE['lease_seconds']), '--heartbeat', str(LEASE['heartbeat_interval']),
        )  # fmt: skip
        process = self.running[name]
        log = Path(self.logs.name) / f'{name}.log'
        started = time.monotonic()
        while 'serves queue' not in (text := log.read_text(errors='replace').split('--- restart ---')[-1]):
            if process.poll() is not None or time.monotonic() - started > STARTUP_TIMEOUT:
                state = 'never served' if process.returncode is None else f'exited ({process.returncode})'
                raise RuntimeError(f'{name} {state}; its log:\n{text[-3000:]}')
            await anyio.sleep(0.05)
        line = next(line for line in text.splitlines() if 'serves queue' in line)
        self.participants.setdefault(name, []).append(line.split('worker ', 1)[1].split()[0])

    async def manager(self, count: int) -> list[str]:
        """Start manager B with `count` tasks; return their ids."""
        process = self._spawn('manager-b', '-m', 'tests.chaos', 'manager', self.url, str(count), stdout=subprocess.PIPE)
        assert process.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(process.stdout.readline)
        return json.loads(line)

    def kill(self, name: str) -> None:
        """SIGKILL one process."""
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        with open(Path(self.logs.name) / f'{name}.log', 'a') as log:
            log.write('--- restart ---\n')

    def close(self) -> None:
        """Stop what is left."""
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if os.environ.get('CHAOS_DEBUG'):
            kept = tempfile.mkdtemp(prefix='chaos-kept-')
            shutil.copytree(self.logs.name, kept, dirs_exist_ok=True)
            print('chaos logs kept in', kept, file=sys.stderr)
        self.logs.cleanup()


@dataclass
class Timeline:
    """When manager A heard each task start running and complete, on this process's monotonic clock."""

    running: dict[str, float] = field(default_factory=dict[str, float])
    completed: list[tuple[str, float]] = field(default_factory=list[tuple[str, float]])

    def heard(self, event: TaskEvent) -> None:
        now = time.monotonic()
        if event.status is TaskStatus.RUNNING:
            self.running.setdefault(event.task_id, now)
        elif event.status is TaskStatus.COMPLETED:
            self.completed.append((event.task_id, now))

    def recovered(self, since: float) -> float | None:
        """When a task that started running after `since` first completed (`None`: none yet)."""
        return next((at for task_id, at in self.completed if self.running.get(task_id, -1.0) >= since), None)


async def _probe(
    manager: TaskManager, fault: str, report: Report, probes: list[str], timeline: Timeline, since: float
) -> None:
    """Time from a fault (`since`) until a task that started after it completes: a task of the run, or a probe.

    A probe keeps one task in the queue when the run has started all of its own; with a backlog, the tasks ahead of
    it show the recovery first. Nothing is recorded past `PROBE_DEADLINE`.
    """
    probe: str | None = None
    while time.monotonic() - since < PROBE_DEADLINE:
        if (at := timeline.recovered(since)) is not None:
            report.recovery[fault] = at - since
            return
        if probe is None or ((record := manager.get(probe)) is not None and record.is_terminal):
            probe = (await manager.start(REMOTE, f'steps=1 probe after {fault}', scope='probes')).id
            probes.append(probe)
        await anyio.sleep(0.01)


async def run(tasks: int) -> Report:
    """One chaos run with about `tasks` tasks; returns the report."""
    report = Report()
    server = RedisServer()
    server.start()
    procs = Processes(server.url)
    try:
        b_ids: list[str] = []

        async def start_b() -> None:
            b_ids.extend(await procs.manager(tasks // 4))

        async with anyio.create_task_group() as starting:  # the processes start side by side
            starting.start_soon(procs.worker, 'worker-1')
            starting.start_soon(procs.worker, 'worker-2')
            starting.start_soon(start_b)
        async with redis_task_manager(
            server.url, namespace=NAMESPACE, bus_options=BUS, max_tasks_per_scope=100_000, **LEASE
        ) as a:
            heard: list[TaskEvent] = []
            timeline = Timeline()
            events = a.events(max_buffer=1_000_000)
            a_ids: list[str] = []
            probes: list[str] = []
            mine: list[str] = []
            killed_at = 0.0

            async def listen() -> None:
                async for event in events:
                    heard.append(event)
                    timeline.heard(event)

            async def feed() -> None:
                for i in range(tasks - tasks // 4):
                    record = await a.start(REMOTE, f'steps={STEPS} #{i}', scope=f'conv-{i % 10}')
                    a_ids.append(record.id)
                    await anyio.sleep(0.02)

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                await anyio.sleep(0.1)
                tg.start_soon(feed)
                faults = [
                    ('Redis restarted with its data', lambda: server.restart(keep_data=True)),
                    ('Redis restarted without its data', lambda: server.restart(keep_data=False)),
                    ('a worker killed', lambda: procs.kill('worker-1')),
                    ('a manager killed', lambda: procs.kill('manager-b')),
                ]
                for fault, inject in faults:
                    await anyio.sleep(0.5)
                    started = time.monotonic()
                    inject()
                    if fault == 'a worker killed':
                        killed_at = started
                    if fault == 'a manager killed':
                        # Recovered once every task of the dead manager has ended (failed by this one's sweep).
                        with anyio.move_on_after(PROBE_DEADLINE):
                            while not all((r := a.get(i)) is not None and r.is_terminal for i in b_ids):
                                await anyio.sleep(0.05)
                            report.recovery[fault] = time.monotonic() - started
                        continue
                    await _probe(a, fault, report, probes, timeline, started)
                    if fault == 'a worker killed':
                        await procs.worker('worker-1')
                while len(a_ids) < tasks - tasks // 4:
                    await anyio.sleep(0.1)
                mine = a_ids + probes
                with anyio.move_on_after(60 + tasks / 5):
                    for task_id in mine:
                        await a.wait_for(task_id, timeout=60)
                # Workers back at work: a last batch on both workers.
                last = [await a.start(REMOTE, f'steps=1 last {i}', scope='last') for i in range(8)]
                with anyio.move_on_after(30):
                    finals = [await a.wait_for(r.id, timeout=30) for r in last]
                    report.workers_back = all(f.status is TaskStatus.COMPLETED for f in finals)
                    if not report.workers_back and os.environ.get('CHAOS_DEBUG'):
                        print('last batch', [(f.status, f.error, f.note) for f in finals], file=sys.stderr)
                mine += [r.id for r in last]
                # A task's event reaches the listener just after its waiters wake: let the last ones arrive.
                with anyio.move_on_after(10):
                    while not {i for i in mine if (r := a.get(i)) is not None and r.is_terminal} <= {
                        e.task_id for e in heard if e.is_terminal
                    }:
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            await events.aclose()
            await a.store.flush()  # type: ignore[attr-defined]
            local = {task_id: a.get(task_id) for task_id in mine}
            # What the killed worker was running: retried on another worker, and done when the last of them is.
            dead = procs.participants.get('worker-1', [''])[0]
            rerun = [r for r in local.values() if r is not None and dead and dead in (r.note or '') and r.finished_at]
            if rerun:
                report.reruns = len(rerun)
                report.recovery['a worker killed (its tasks run again)'] = max(
                    (r.finished_at or 0.0) - killed_at for r in rerun
                )

        async with RedisTaskStore(server.url, namespace=NAMESPACE, max_retained=1_000_000) as store:
            stored = {record.id: record for record in store.list()}
        terminal = Counter(e.task_id for e in heard if e.is_terminal)
        report.tasks = len(mine) + len(b_ids)
        for task_id in mine:
            report.terminal_counts[terminal.get(task_id, 0)] += 1
            record, kept = local[task_id], stored.get(task_id)
            if record is None or not record.is_terminal:
                if os.environ.get('CHAOS_DEBUG'):
                    print('a unfinished', task_id, record and (record.status, record.description), file=sys.stderr)
                report.not_terminal += 1
                continue
            if record.status is not TaskStatus.COMPLETED:
                report.falsely_failed += 1  # A never died, and nobody cancelled anything
                if os.environ.get('CHAOS_DEBUG'):
                    print(
                        'a ended',
                        task_id,
                        record.status,
                        record.error,
                        record.note,
                        record.description,
                        [(t.status.value, t.timestamp.time().isoformat()) for t in record.history],
                        file=sys.stderr,
                    )
            elif record.status is TaskStatus.COMPLETED:
                report.completed += 1
                if not str(record.result).startswith('finished') or kept is None or kept.result != record.result:
                    report.results_lost += 1
                    if os.environ.get('CHAOS_DEBUG'):
                        print('lost', task_id, record.result, kept and (kept.status, kept.result), file=sys.stderr)
        for task_id in b_ids:
            record = stored.get(task_id)
            if record is None or not record.is_terminal:
                if os.environ.get('CHAOS_DEBUG'):
                    print('b unfinished', task_id, record and record.status, file=sys.stderr)
                report.not_terminal += 1
                report.terminal_counts[0] += 1
                continue
            report.terminal_counts[1] += 1
            if record.status is TaskStatus.COMPLETED:
                report.completed += 1
                if record.result != EXPECTED:
                    report.results_lost += 1
            elif 'lease of manager:' in (record.error or ''):
                report.owner_died_failed += 1
            else:
                report.falsely_failed += 1
                if os.environ.get('CHAOS_DEBUG'):
                    print('b failed', task_id, record.status, record.error, record.history, file=sys.stderr)
        return report
    finally:
        procs.close()
        server.close()


async def manager_b(url: str, count: int) -> None:
    """Manager B: start `count` tasks, print their ids, then serve until killed."""
    async with redis_task_manager(url, namespace=NAMESPACE, bus_options=BUS, max_tasks_per_scope=100_000, **LEASE) as b:
        # Some of B's tasks outlive B (they wait for an answer that never comes): they must end FAILED by a
        # survivor's sweep once B's lease has run out.
        askers = min(count // 2, ASKERS)
        ids = [
            (await b.start(ASKER if i < askers else REMOTE, f'steps={STEPS} b{i}', scope=f'b-{i % 10}')).id
            for i in range(count)
        ]
        print(json.dumps(ids), flush=True)
        await anyio.sleep_forever()


def main() -> None:
    """The command line: a chaos run (default), or manager B."""
    if len(sys.argv) > 1 and sys.argv[1] == 'manager':
        anyio.run(manager_b, sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or '').split('\n\n')[0])
    parser.add_argument('--tasks', type=int, default=400, help='tasks across both managers (default: %(default)s)')
    args = parser.parse_args()
    started = time.monotonic()
    report = anyio.run(run, args.tasks)
    for line in report.lines():
        print(line)
    print(f'chaos run took {time.monotonic() - started:.1f} s')
    sys.exit(0 if report.ok else 1)


if __name__ == '__main__':  # pragma: no cover - a command line
    main()
