"""Soak test: many subagent tasks through one `TaskManager`, with random cancels, questions and failures.

The long version of `tests/test_reliability.py::test_load_2000_tasks_with_cancels_questions_and_failures`:

```bash
make soak                                   # = uv run --frozen python bench/soak.py (10,000 tasks)
uv run python bench/soak.py --tasks 3000    # shorter
uv run python bench/soak.py --help          # concurrency, retention, question timeout, seed, ...
```

Tasks are started directly with `manager.start(config, description, scope=..., mode='async')` over 20 conversations,
at most `--concurrency` running at once. Their subagents (scripted `FunctionModel`s, no network) answer at once,
take a few milliseconds, ask the parent a question, or fail in each way a task can fail: an exception in a tool, a
model error, output that never validates, a timeout, an exhausted usage budget. Soft and hard cancels come at random
from the event loop and from two plain threads; questions are answered at once, later, from a thread, twice, or never
(then `--question-timeout` lets the subagent go on alone).

It prints progress (throughput, live tasks, RSS, the manager's internal tables) every `--every` seconds, then checks
the invariants and ends with a `PASS` or `FAIL` line; the exit code is 1 on any violation:

- every task reaches exactly one terminal state, reported by exactly one terminal event, through legal transitions;
- a task with an accepted hard cancel ends `CANCELLED`; one never asked to cancel does not;
- a failure carries the error its kind produces, nothing else; a second answer to a question is refused;
- never more than `--concurrency` tasks run at once;
- after closing: no asyncio task left, no mailbox, subscription or pending reply on the bus, no live record;
- memory stays bounded: retained records and every internal table at most `--retained`, no runtime left, and RSS
  flat once retention is full (less than `--rss-slack` MiB, or 10%, of growth from a quarter of the run to its end).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    SubAgentConfig,
    TaskCancelRequested,
    TaskEvent,
    TaskManager,
    TaskQuestionAsked,
    TaskStarted,
    TaskStatus,
)
from pydantic_ai_subagents._config import build_agent

SCOPES = 20
TIMEOUT = 0.02

WEIGHTS = {
    'ok': 50,
    'slow': 14,
    'ask': 10,
    'tool_error': 5,
    'model_error': 5,
    'invalid_output': 3,
    'timeout': 8,
    'usage_limit': 5,
}
ERRORS = {
    'tool_error': 'RuntimeError: key [redacted]',
    'model_error': 'RuntimeError: upstream refused [redacted] for this call',
    'invalid_output': 'UnexpectedModelBehavior: Exceeded maximum output retries (1)',
    'timeout': f'timed out after {TIMEOUT:g} s',
    'usage_limit': 'usage limit reached: The next request would exceed the request_limit of 1.',
}
RESULTS = {'ok': 'ok', 'slow': 'slow ok'}

# ------------------------------------------------------------------------------------------------- the subagents


class Point(BaseModel):
    x: int
    y: int


def _returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


async def explode() -> str:
    raise RuntimeError('key sk-abc123def456ghi789')


async def peek() -> str:
    return 'peeked'


def configs(rng: random.Random) -> dict[str, SubAgentConfig]:
    async def ok(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('ok')])

    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any('CANCELLATION REQUEST' in str(getattr(p, 'content', '')) for m in messages for p in m.parts):
            return ModelResponse(parts=[TextPart('partial: half done')])
        await anyio.sleep(rng.random() * 0.01)
        return ModelResponse(parts=[TextPart('slow ok')])

    async def ask(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = _returns(messages)
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
        return ModelResponse(parts=[TextPart(f'answer was: {returns[-1].content}')])

    async def calls(tool: str, messages: list[ModelMessage]) -> ModelResponse:
        if not _returns(messages):
            return ModelResponse(parts=[ToolCallPart(tool, {})])
        return ModelResponse(parts=[TextPart('after the tool')])

    async def tool_error(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return await calls('explode', messages)

    async def usage_limit(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return await calls('peek', messages)

    async def model_error(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError('upstream refused api_key=abcdef123456 for this call')

    async def invalid_output(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {'x': 'not a number'})])

    async def never(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.sleep(3600)
        raise AssertionError('unreachable')

    quiet: dict[str, Any] = {'can_ask_questions': False}
    return {
        'ok': SubAgentConfig(name='ok', model=FunctionModel(ok), **quiet),
        'slow': SubAgentConfig(name='slow', model=FunctionModel(slow), **quiet),
        'ask': SubAgentConfig(name='ask', model=FunctionModel(ask)),
        'tool_error': SubAgentConfig(
            name='tool_error', model=FunctionModel(tool_error), toolsets=[FunctionToolset([explode])], **quiet
        ),
        'model_error': SubAgentConfig(name='model_error', model=FunctionModel(model_error), **quiet),
        'invalid_output': SubAgentConfig(
            name='invalid_output', model=FunctionModel(invalid_output), output_type=Point, **quiet
        ),
        'timeout': SubAgentConfig(name='timeout', model=FunctionModel(never), timeout=TIMEOUT, **quiet),
        'usage_limit': SubAgentConfig(
            name='usage_limit',
            model=FunctionModel(usage_limit),
            toolsets=[FunctionToolset([peek])],
            usage_limits=UsageLimits(request_limit=1),
            **quiet,
        ),
    }


# ---------------------------------------------------------------------------------------------------- bookkeeping


def rss_mib() -> tuple[float, float]:
    """Current and peak resident set size of this process, in MiB (Linux `/proc`; else the peak twice)."""
    try:
        with open('/proc/self/status') as f:
            fields = dict(line.split(':', 1) for line in f if ':' in line)
        return int(fields['VmRSS'].split()[0]) / 1024, int(fields['VmHWM'].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


@dataclass(slots=True)
class Track:
    """What the events told about one task (kept small: a soak holds one per task)."""

    kind: str
    statuses: list[TaskStatus] = field(default_factory=list[TaskStatus])
    terminal_events: int = 0
    cancel_kinds: str = ''
    error: str = ''
    result: Any = None


@dataclass
class Soak:
    args: argparse.Namespace
    manager: TaskManager
    rng: random.Random
    tracks: dict[str, Track] = field(default_factory=dict[str, Track])
    ids: list[str] = field(default_factory=list[str])
    finished: int = 0
    running: set[str] = field(default_factory=set[str])
    max_running: int = 0
    violations: list[str] = field(default_factory=list[str])
    counters: Counter[str] = field(default_factory=Counter[str])
    rss: list[tuple[float, int, float]] = field(default_factory=list[tuple[float, int, float]])
    started_at: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0
    progress: anyio.Event | None = None
    """Set (and replaced) each time a task ends, for whoever waits for tasks to end."""

    async def until(self, done: Any) -> None:
        """Wait until `done()` is true, re-checking each time a task ends."""
        while not done():
            if self.progress is None:
                self.progress = anyio.Event()
            await self.progress.wait()

    def violate(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(text)

    # ------------------------------------------------------------------------------------------- events

    def on_event(self, event: TaskEvent, tg: Any) -> None:
        track = self.tracks.get(event.task_id)
        if track is None:  # the event can come before start() returns the id
            track = self.tracks[event.task_id] = Track(kind='?')
        if isinstance(event, TaskCancelRequested):
            track.cancel_kinds += event.cancel_kind[0]
            return
        previous = track.statuses[-1] if track.statuses else None
        if previous is None and event.status is not TaskStatus.PENDING:
            self.violate(f'{event.task_id}: first state {event.status.value}')
        if previous is not None and not previous.can_become(event.status):
            self.violate(f'{event.task_id}: illegal {previous.value} -> {event.status.value}')
        track.statuses.append(event.status)
        if isinstance(event, TaskStarted):
            self.running.add(event.task_id)
            self.max_running = max(self.max_running, len(self.running))
        elif isinstance(event, TaskQuestionAsked):
            tg.start_soon(self.answer, event.task_id)
        elif event.is_terminal:
            self.running.discard(event.task_id)
            track.terminal_events += 1
            if track.terminal_events > 1:
                self.violate(f'{event.task_id}: {track.terminal_events} terminal events')
            else:
                self.finished += 1
                if self.progress is not None:
                    self.progress.set()
                    self.progress = None
            track.error = getattr(event, 'error', '') or ''
            track.result = getattr(event, 'result', None)
            if len(track.statuses) > 6:  # keep memory per task small
                track.statuses = [track.statuses[0], track.statuses[-1]]

    async def consume(self, tg: Any) -> None:
        async for event in self.manager.events(max_buffer=1_000_000):
            self.on_event(event, tg)

    async def answer(self, task_id: str) -> None:
        roll = self.rng.random()
        if roll < 0.3:
            self.counters['questions left to time out'] += 1
            return
        if roll < 0.5:
            await anyio.sleep(self.rng.random() * 0.01)
        if roll < 0.6:
            await anyio.to_thread.run_sync(lambda: self.manager.answer(task_id, 'from a thread'))
            self.counters['answers from a thread'] += 1
            return
        first = self.manager.answer(task_id, '1999')
        if self.manager.answer(task_id, '2000'):
            self.violate(f'{task_id}: a second answer was accepted (first: {first})')
        self.counters['answers given twice'] += 1

    # ------------------------------------------------------------------------------------------- workers

    def canceller(self, seed: int, stop: threading.Event) -> None:
        local = random.Random(seed)
        while not stop.is_set():
            if self.ids:
                task_id = local.choice(self.ids[-200:])
                kind = local.choice(['soft', 'hard'])
                method = self.manager.soft_cancel if kind == 'soft' else self.manager.hard_cancel
                self.counters[f'thread {kind} cancels accepted' if method(task_id) else 'thread cancels refused'] += 1
            stop.wait(0.002)

    def tables(self) -> dict[str, int]:
        """Sizes of the manager's internal tables, for the memory check.

        They are private, and read as they are: should one move, this raises rather than count an empty table.
        """
        manager: Any = self.manager
        settler, questions, delivery = manager._settler, manager._questions, manager._delivery
        owed: dict[str, dict[str, None]] = delivery._owed
        return {
            'records': len(manager.store.list()),
            'runtimes': len(settler.runtimes),
            'questions': len(questions.waiting),
            'transcripts': len(settler.transcripts),
            'notices owed': sum(len(v) for v in owed.values()),
            'scopes owed': len(owed),
        }

    async def report(self) -> None:
        last_t, last_n = time.perf_counter(), 0
        while True:
            await anyio.sleep(self.args.every)
            now = time.perf_counter()
            current, _ = rss_mib()
            self.rss.append((now - self.started_at, self.finished, current))
            rate = (self.finished - last_n) / (now - last_t)
            last_t, last_n = now, self.finished
            tables = ' '.join(f'{k}={v}' for k, v in self.tables().items())
            print(
                f'[{now - self.started_at:6.1f}s] started {len(self.ids):>6} finished {self.finished:>6} '
                f'live {len(self.ids) - self.finished:>4} {rate:7.0f} tasks/s  rss {current:6.1f} MiB  {tables}',
                flush=True,
            )

    # ------------------------------------------------------------------------------------------- the run

    async def run(self) -> None:
        args = self.args
        cfgs = configs(self.rng)
        agents: dict[str, Agent[Any, Any]] = {kind: build_agent(c) for kind, c in cfgs.items()}
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        stop = threading.Event()
        threads = [threading.Thread(target=self.canceller, args=(seed, stop), daemon=True) for seed in (1, 2)]
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.consume, tg)
            with anyio.fail_after(5):
                while self.manager.bus.stats().subscriptions == 0:
                    await anyio.lowlevel.checkpoint()
            tg.start_soon(self.report)
            for thread in threads:
                thread.start()
            try:
                for i in range(args.tasks):
                    kind = self.rng.choices(kinds, weights)[0]
                    record = await self.manager.start(
                        cfgs[kind], f'job {i}', scope=f'conversation-{i % SCOPES}', mode='async', agent=agents[kind]
                    )
                    self.tracks.setdefault(record.id, Track(kind=kind)).kind = kind
                    self.ids.append(record.id)
                    if self.rng.random() < 0.15:
                        target = self.rng.choice(self.ids[-100:])
                        soft = self.rng.random() < 0.5
                        accepted = (self.manager.soft_cancel if soft else self.manager.hard_cancel)(target)
                        self.counters[
                            f'loop {"soft" if soft else "hard"} cancels accepted'
                            if accepted
                            else 'loop cancels refused'
                        ] += 1
                    await anyio.lowlevel.checkpoint()
                    await self.until(lambda: len(self.ids) - self.finished <= args.backlog)
                with anyio.fail_after(args.drain_timeout):
                    await self.until(lambda: self.finished >= len(self.ids))
            except TimeoutError:
                self.violate(f'{len(self.ids) - self.finished} tasks did not end within {args.drain_timeout:g} s')
            finally:
                stop.set()
                for thread in threads:
                    await anyio.to_thread.run_sync(thread.join)
            self.elapsed = time.perf_counter() - self.started_at
            self.check_before_close()
            tg.cancel_scope.cancel()
        await self.manager.aclose()
        await anyio.sleep(0.05)
        self.check_after_close()

    # ------------------------------------------------------------------------------------------- the checks

    def check_before_close(self) -> None:
        retained = self.args.retained
        if self.max_running > self.args.concurrency:
            self.violate(f'{self.max_running} tasks ran at once; the limit is {self.args.concurrency}')
        live = [r for r in self.manager.list() if not r.is_terminal]
        if live:
            self.violate(f'{len(live)} records still live after every task ended')
        tables = self.tables()
        for name in ('records', 'transcripts', 'notices owed', 'scopes owed'):
            if tables[name] > retained:
                self.violate(f'{name}: {tables[name]} entries with max_retained={retained} (unbounded growth)')
        for name in ('runtimes', 'questions'):
            if tables[name]:
                self.violate(f'{name}: {tables[name]} left after every task ended')
        unexpected: Counter[str] = Counter()
        for task_id in self.ids:
            track = self.tracks[task_id]
            if track.terminal_events != 1:
                self.violate(f'{task_id} ({track.kind}): {track.terminal_events} terminal events')
                continue
            status = track.statuses[-1]
            self.counters[f'{track.kind} {status.value}'] += 1
            if 'h' in track.cancel_kinds and status is not TaskStatus.CANCELLED:
                self.violate(f'{task_id} ({track.kind}): hard cancel accepted but ended {status.value}')
            if not track.cancel_kinds and status is TaskStatus.CANCELLED:
                self.violate(f'{task_id} ({track.kind}): cancelled without a cancel request')
            if status is TaskStatus.FAILED and not track.error.startswith(ERRORS.get(track.kind, '\0')):
                unexpected[track.error.split(':', 1)[0]] += 1
                if unexpected[track.error.split(':', 1)[0]] <= 3:
                    self.violate(f'{task_id} ({track.kind}): unexpected error {track.error[:160]!r}')
            if status is TaskStatus.COMPLETED and RESULTS.get(track.kind, track.result) != track.result:
                self.violate(f'{task_id} ({track.kind}): unexpected result {track.result!r}')
        for error, count in unexpected.items():
            if count > 3:
                self.violate(f'... {count} tasks in all failed with an unexpected {error}')
        # Memory: flat once retention is full (from a quarter of the run to its end).
        samples = [(t, n, r) for t, n, r in self.rss if n >= len(self.ids) // 4]
        if len(samples) >= 2:
            growth = samples[-1][2] - samples[0][2]
            allowed = max(self.args.rss_slack, 0.10 * samples[0][2])
            if growth > allowed:
                self.violate(f'RSS grew {growth:.1f} MiB after retention was full (allowed {allowed:.1f} MiB)')

    def check_after_close(self) -> None:
        current = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if left:
            parked = sum(
                '_run_lifecycle_hooks' in repr(t.get_coro()) or 'ScopedTask' in repr(t.get_coro()) for t in left
            )
            self.violate(
                f'{len(left)} asyncio tasks left after close ({parked} of them Pydantic AI wrap_run tasks parked on '
                '_run_done: a cancel that landed as a run started)'
            )
        stats = self.manager.bus.stats()
        if (stats.mailboxes, stats.subscriptions, stats.pending_replies) != (0, 0, 0):
            self.violate(f'bus not clean after close: {stats}')
        if stats.dropped:
            self.violate(f'the bus dropped {stats.dropped} messages')
        live = [r for r in self.manager.list() if not r.is_terminal]
        if live:
            self.violate(f'{len(live)} live records after close')

    def summary(self) -> int:
        current, peak = rss_mib()
        n = len(self.ids)
        print()
        print(
            f'tasks       {n} in {self.elapsed:.1f} s ({n / self.elapsed:.0f} tasks/s), max {self.max_running} running'
        )
        print(f'memory      rss {current:.1f} MiB now, {peak:.1f} MiB peak; tables after the run: {self.tables()}')
        if self.rss:
            step = max(1, len(self.rss) // 8)
            print('rss         ' + '  '.join(f'{t:.0f}s:{r:.0f}MiB' for t, _, r in self.rss[::step]))
        outcomes = sorted(self.counters.items())
        print('outcomes    ' + ', '.join(f'{k}: {v}' for k, v in outcomes))
        if self.violations:
            print(f'\nFAIL: {len(self.violations)} invariant violations')
            for line in self.violations[:40]:
                print(f'  - {line}')
            return 1
        print('\nPASS: every invariant held')
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--tasks', type=int, default=10_000, help='tasks to run (default 10,000)')
    parser.add_argument('--concurrency', type=int, default=50, help='max_concurrent_tasks (default 50)')
    parser.add_argument('--retained', type=int, default=500, help='max_retained (default 500)')
    parser.add_argument('--backlog', type=int, default=300, help='most unfinished tasks at once (default 300)')
    parser.add_argument('--question-timeout', type=float, default=0.05, help='seconds (default 0.05)')
    parser.add_argument('--every', type=float, default=2.0, help='seconds between progress lines (default 2)')
    parser.add_argument('--rss-slack', type=float, default=16.0, help='MiB of RSS growth allowed (default 16)')
    parser.add_argument('--drain-timeout', type=float, default=120.0, help='seconds for the last tasks to end')
    parser.add_argument('--seed', type=int, default=20_26)
    args = parser.parse_args()
    manager = TaskManager(
        max_concurrent_tasks=args.concurrency,
        max_tasks_per_scope=args.tasks,
        max_retained=args.retained,
        question_timeout=args.question_timeout,
        soft_cancel_grace=0.1,
        hard_cancel_wait=1.0,
    )
    print(
        f'soak: {args.tasks} tasks, concurrency {args.concurrency}, retained {args.retained}, '
        f'question timeout {args.question_timeout:g} s, seed {args.seed}',
        flush=True,
    )
    soak = Soak(args=args, manager=manager, rng=random.Random(args.seed))
    gc.collect()
    anyio.run(soak.run, backend='asyncio')
    return soak.summary()


if __name__ == '__main__':
    sys.exit(main())
