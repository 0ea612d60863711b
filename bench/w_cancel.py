"""Workload 3, cancel latency.

Hard cancel: L tasks are live, every child blocked inside a model call that sleeps for an hour. Repeatedly, for a
random live task, time from `manager.hard_cancel(id)` to the moment its run has really exited (the task runtime's
`stopped` event, awaited right after the call), then start a replacement so L stay live. Right after `hard_cancel`
returns, the status must still be non-terminal; once `stopped` is set it must be terminal: both are checked on every
sample. floor: plain `child.run(...)` tasks, each in its own anyio `CancelScope`; time from `scope.cancel()` to the
task's exit. A second floor, the token floor, gives each plain run a Pydantic AI `CancellationToken` and stops it
with `token.cancel()`, as this library stops a run. The three populations share the loop and their samples
alternate. Ours also times its own part once the run has stopped: from the run's `RunCancelled` reaching the
in-process executor to status CANCELLED.

Soft cancel: a child that loops model turn -> `work` tool (5 ms each). After a few turns, at a random moment,
`manager.soft_cancel(id)`; count the child model turns that start after the request until the task ends. A
cooperative child wraps up when it sees the notice; a stubborn one ignores it and is escalated to a hard cancel after
`soft_cancel_grace_turns`. There is no floor: plain Pydantic AI has no soft cancel.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.abc
from pydantic_ai import Agent, CancellationToken, RunCancelled
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from _harness import VARIANTS, Metric, Settings, WorkloadResult, latency, ratio
from _models import CHILD_INSTRUCTIONS, Entered, blocked_child, request_text
from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus
from pydantic_ai_subagents._run import _drive  # pyright: ignore[reportPrivateUsage]

GOAL_P99_US = 500.0
GOAL_CALL_P50_US = 50.0
SEED = 20_240_601


class _GcWatch:
    """Counts full (generation 2) garbage collections, to tell GC pauses from the cancel path itself."""

    def __init__(self) -> None:
        self.full = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == 'stop' and info['generation'] == 2:
            self.full += 1

    def __enter__(self) -> _GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


@dataclass
class HardCancelSample:
    latencies_us: list[float] = field(default_factory=list[float])
    clean_us: list[float] = field(default_factory=list[float])
    """Latencies of the samples during which no full garbage collection ran."""
    call_us: list[float] = field(default_factory=list[float])
    call_cpu_us: list[float] = field(default_factory=list[float])
    """CPU time of the thread during the `hard_cancel()` call (ours): the call's own work, without the time the
    process was not running (preemption by other processes on a loaded machine)."""
    exit_to_status_us: list[float] = field(default_factory=list[float])
    """From the child's model call leaving (cancelled) to the status saying CANCELLED (ours) or the run having
    exited (floor): Pydantic AI's own unwinding of the run, plus, in ours, the settle point."""
    run_exit_to_status_us: list[float] = field(default_factory=list[float])
    """Ours only: from the run's exit (its `RunCancelled` reaching our in-process executor) to the status saying
    CANCELLED: this library's own part of the way, with Pydantic AI's unwinding left out."""
    premature_terminal: int = 0
    """Status already terminal when `hard_cancel` returned (before the run exited)."""
    not_terminal_after_stop: int = 0
    """Status still non-terminal after the run exited."""
    wrong_final_status: int = 0
    rejected: int = 0

    def add(self, started: float, returned: float, stopped: float, *, clean: bool) -> None:
        self.latencies_us.append((stopped - started) * 1e6)
        if clean:
            self.clean_us.append((stopped - started) * 1e6)
        self.call_us.append((returned - started) * 1e6)


SampleFn = Callable[[random.Random, HardCancelSample, _GcWatch], Awaitable[None]]
"""Cancels one random live task of a population, records the sample, and starts a replacement."""


@asynccontextmanager
async def ours_population(live: int) -> AsyncIterator[SampleFn]:
    """`live` tasks of a `TaskManager`, each blocked in its child's model call."""
    entered = Entered()
    exits: list[float] = []
    model = blocked_child(entered.enter, on_exit=lambda: exits.append(time.monotonic()))
    config = SubAgentConfig(name='worker', instructions=CHILD_INSTRUCTIONS, model=model)
    run_exits: list[float] = []
    # What the drive loop calls first once the run has exited with an error (a cancel's `RunCancelled`): its
    # `failed` default, bound when the function was defined, so it is swapped there.
    defaults = _drive.drive.__kwdefaults__
    assert defaults is not None
    assert defaults['failed'] is _drive.outcome_of
    outcome_of = _drive.outcome_of

    def timed_outcome_of(error: BaseException) -> Any:
        run_exits.append(time.monotonic())
        return outcome_of(error)

    defaults['failed'] = timed_outcome_of
    try:
        async with _ours(live, config, entered, exits, run_exits) as sample:
            yield sample
    finally:
        defaults['failed'] = outcome_of


@asynccontextmanager
async def _ours(
    live: int, config: SubAgentConfig, entered: Entered, exits: list[float], run_exits: list[float]
) -> AsyncIterator[SampleFn]:
    async with TaskManager(max_concurrent_tasks=None, max_tasks_per_scope=live + 1) as manager:
        ids = [(await manager.start(config, f'Job {i}.', scope='bench')).id for i in range(live)]
        await entered.wait_for(live)

        async def sample(rng: random.Random, out: HardCancelSample, watch: _GcWatch) -> None:
            full_gcs = watch.full
            index = rng.randrange(len(ids))
            task_id = ids[index]
            runtime = manager._settler.runtimes[task_id]  # pyright: ignore[reportPrivateUsage]
            cpu = time.thread_time()
            started = time.perf_counter()
            accepted = manager.hard_cancel(task_id)
            returned = time.perf_counter()
            out.call_cpu_us.append((time.thread_time() - cpu) * 1e6)
            record = manager.get(task_id)
            await runtime.stopped.wait()
            stopped = time.perf_counter()
            if not accepted:
                out.rejected += 1
            if record is not None and record.status.is_terminal:
                out.premature_terminal += 1
            final = manager.get(task_id)
            if final is None or not final.status.is_terminal:
                out.not_terminal_after_stop += 1
            elif final.status is not TaskStatus.CANCELLED:
                out.wrong_final_status += 1
            if final is not None and final.finished_at is not None and exits:
                # The store stamps each transition on the monotonic clock: the status says CANCELLED from then on.
                out.exit_to_status_us.append((final.finished_at - exits[-1]) * 1e6)
            if final is not None and final.finished_at is not None and run_exits:
                out.run_exit_to_status_us.append((final.finished_at - run_exits[-1]) * 1e6)
            out.add(started, returned, stopped, clean=watch.full == full_gcs)
            ids[index] = (await manager.start(config, 'Replacement job.', scope='bench')).id
            await entered.wait_for(entered.count + 1)

        yield sample


@dataclass
class _Slot:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    token: CancellationToken = field(default_factory=CancellationToken)
    stopped: anyio.Event = field(default_factory=anyio.Event)
    exit_to_stop_us: float | None = None


@asynccontextmanager
async def floor_population(live: int, *, token: bool = False) -> AsyncIterator[SampleFn]:
    """`live` plain `child.run` tasks, each in its own cancel scope and blocked in its model call.

    With `token`, each run is given a Pydantic AI `CancellationToken` and is stopped through it (the run ends with
    `RunCancelled`), as this library stops a run, rather than by cancelling its scope.
    """
    entered = Entered()
    exits: list[float] = []
    child = Agent(
        blocked_child(entered.enter, on_exit=lambda: exits.append(time.monotonic())), instructions=CHILD_INSTRUCTIONS
    )

    async def one(slot: _Slot, prompt: str) -> None:
        try:
            with slot.scope:
                await child.run(prompt, cancellation_token=slot.token if token else None)
        except RunCancelled:
            pass
        finally:
            if exits:
                slot.exit_to_stop_us = (time.monotonic() - exits[-1]) * 1e6
            slot.stopped.set()

    async with anyio.create_task_group() as tg:
        slots = [_Slot() for _ in range(live)]
        for i, slot in enumerate(slots):
            tg.start_soon(one, slot, f'Job {i}.')
        await entered.wait_for(live)

        async def sample(rng: random.Random, out: HardCancelSample, watch: _GcWatch) -> None:
            full_gcs = watch.full
            index = rng.randrange(len(slots))
            slot = slots[index]
            cpu = time.thread_time()
            started = time.perf_counter()
            if token:
                slot.token.cancel()
            else:
                slot.scope.cancel()
            returned = time.perf_counter()
            out.call_cpu_us.append((time.thread_time() - cpu) * 1e6)
            await slot.stopped.wait()
            stopped = time.perf_counter()
            out.add(started, returned, stopped, clean=watch.full == full_gcs)
            if slot.exit_to_stop_us is not None:
                out.exit_to_status_us.append(slot.exit_to_stop_us)
            slots[index] = _Slot()
            tg.start_soon(one, slots[index], 'Replacement job.')
            await entered.wait_for(entered.count + 1)

        yield sample
        tg.cancel_scope.cancel()


TOKEN_FLOOR = 'floor_token'
"""The floor stopped through Pydantic AI's `CancellationToken`, the way this library stops a run."""

POPULATIONS: dict[str, Callable[[int], AbstractAsyncContextManager[SampleFn]]] = {
    'ours': ours_population,
    'floor': floor_population,
    TOKEN_FLOOR: partial(floor_population, token=True),
}


async def hard_cancel(
    live: int, samples: int, rng: random.Random, variants: tuple[str, ...] = (*VARIANTS, TOKEN_FLOOR)
) -> dict[str, HardCancelSample]:
    """Both populations live in the same event loop; samples alternate between them (ABBA), so that the load of
    the loop and of the machine is the same for both."""
    out = {v: HardCancelSample() for v in variants}
    async with AsyncExitStack() as stack:
        fns = {v: await stack.enter_async_context(POPULATIONS[v](live)) for v in variants}
        with _GcWatch() as watch:
            for i in range(samples):
                for variant in variants if i % 2 == 0 else tuple(reversed(variants)):
                    await fns[variant](rng, out[variant], watch)
    return out


async def hard_cancel_ours(live: int, samples: int, rng: random.Random) -> HardCancelSample:
    return (await hard_cancel(live, samples, rng, ('ours',)))['ours']


@dataclass
class _SoftChild:
    cooperative: bool
    warm: int
    calls: int = 0
    notice_seen_at: int | None = None
    warmed: anyio.Event = field(default_factory=anyio.Event)

    def model(self) -> FunctionModel:
        async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            self.calls += 1
            if self.calls >= self.warm:
                self.warmed.set()
            await anyio.sleep(0.005)
            notice = any('CANCELLATION REQUEST' in request_text(m) for m in messages)
            if notice and self.notice_seen_at is None:
                self.notice_seen_at = self.calls
            if notice and self.cooperative:
                return ModelResponse(
                    parts=[TextPart(f'Partial: finished {self.calls - 1} steps, the rest not started.')]
                )
            return ModelResponse(parts=[ToolCallPart('work', {})])

        return FunctionModel(respond)


async def work() -> str:
    """One step of work."""
    await anyio.sleep(0.005)
    return 'step done'


async def soft_cancel_turns(cooperative: bool, samples: int, rng: random.Random) -> dict[str, Any]:
    turns_after: list[int] = []
    wall_ms: list[float] = []
    statuses: dict[str, int] = {}
    with_partial = 0
    kinds: dict[str, int] = {}
    async with TaskManager(soft_cancel_grace=30.0, soft_cancel_grace_turns=2) as manager:
        for _ in range(samples):
            child = _SoftChild(cooperative=cooperative, warm=rng.randint(1, 4))
            config = SubAgentConfig(
                name='worker', instructions=CHILD_INSTRUCTIONS, model=child.model(), toolsets=[FunctionToolset([work])]
            )
            record = await manager.start(config, 'Do ten steps of work.', scope='bench')
            await child.warmed.wait()
            await anyio.sleep(rng.uniform(0, 0.01))
            calls_at = child.calls
            started = time.perf_counter()
            manager.soft_cancel(record.id)
            final = await manager.wait_for(record.id, until_question=False)
            wall_ms.append((time.perf_counter() - started) * 1e3)
            turns_after.append(child.calls - calls_at)
            statuses[final.status.value] = statuses.get(final.status.value, 0) + 1
            if final.cancel is not None:
                kinds[final.cancel.kind] = kinds.get(final.cancel.kind, 0) + 1
            if final.status is TaskStatus.CANCELLED and final.partial_result:
                with_partial += 1
    return {
        'turns_after': {
            'median': statistics.median(turns_after),
            'min': min(turns_after),
            'max': max(turns_after),
            'n': len(turns_after),
        },
        'wall_ms': {'median': statistics.median(wall_ms), 'min': min(wall_ms), 'max': max(wall_ms)},
        'statuses': statuses,
        'cancel_kinds': kinds,
        'cancelled_with_partial': with_partial,
    }


def _clean(sample: HardCancelSample) -> dict[str, float] | None:
    return latency(sample.clean_us) if sample.clean_us else None


def run(settings: Settings) -> WorkloadResult:
    result = WorkloadResult(
        'cancel',
        'Cancel latency (children blocked in a model call)',
        params={'live': list(settings.cancel_live), 'samples': settings.cancel_samples},
    )

    async def main() -> dict[str, Any]:
        rng = random.Random(SEED)
        if settings.warmup:
            await hard_cancel(1, 4, rng)
        data: dict[str, Any] = {}
        for live in settings.cancel_live:
            data[f'hard_{live}'] = await hard_cancel(live, settings.cancel_samples, random.Random(SEED + live))
        data['soft_cooperative'] = await soft_cancel_turns(True, settings.soft_cancel_samples, rng)
        data['soft_stubborn'] = await soft_cancel_turns(False, settings.soft_cancel_samples, rng)
        return data

    data = anyio.run(main)
    checks: dict[str, dict[str, int]] = {}
    for live in settings.cancel_live:
        ours: HardCancelSample = data[f'hard_{live}']['ours']
        floor: HardCancelSample = data[f'hard_{live}']['floor']
        o, f = latency(ours.latencies_us), latency(floor.latencies_us)
        goal = live == max(settings.cancel_live)
        result.add(
            Metric(
                f'hard cancel -> run exited, {live:,} live',
                'us',
                o,
                f,
                ratio(o['p50'], f['p50']),
                f'p99 < {GOAL_P99_US:g} us' if goal else None,
                (o['p99'] < GOAL_P99_US) if goal else None,
            )
        )
        token: HardCancelSample = data[f'hard_{live}'][TOKEN_FLOOR]
        t = latency(token.latencies_us)
        result.add(
            Metric(
                "  same, the floor stopped with Pydantic AI's token",
                'us',
                o,
                t,
                ratio(o['p50'], t['p50']),
                note="the floor's runs given a `CancellationToken` and stopped by `token.cancel()`, the way this "
                'library stops a run (the run ends with `RunCancelled`, its messages kept), instead of by their scope',
            )
        )
        result.add(Metric("    the token floor's `token.cancel()` call", 'us', latency(token.call_us)))
        if token.exit_to_status_us:
            result.add(
                Metric("    the token floor's model call left -> run exited", 'us', latency(token.exit_to_status_us))
            )
        result.series[f'hard_cancel_{live}_live_token_floor'] = {
            'latency': t,
            'call': latency(token.call_us),
            'exit_to_stop': latency(token.exit_to_status_us) if token.exit_to_status_us else None,
        }
        oc, fc = _clean(ours), _clean(floor)
        result.add(
            Metric(
                '  same, samples without a full GC',
                'us',
                oc,
                fc,
                None if oc is None or fc is None else ratio(oc['p50'], fc['p50']),
                note=f'{len(ours.latencies_us) - len(ours.clean_us)} ours / '
                f'{len(floor.latencies_us) - len(floor.clean_us)} floor samples had a full GC',
            )
        )
        oq, fq = latency(ours.call_us), latency(floor.call_us)
        result.add(
            Metric(
                "  hard_cancel() call itself (floor: the scope's cancel())",
                'us',
                oq,
                fq,
                ratio(oq['p50'], fq['p50']),
                f'p50 < {GOAL_CALL_P50_US:g} us',
                oq['p50'] < GOAL_CALL_P50_US,
                note="the floor's figure is anyio's `CancelScope.cancel()` on a task blocked in the same model call: "
                'the least a cancel that stops the task at once can cost, tail included',
            )
        )
        result.series[f'call_{live}_live'] = {'ours': oq, 'floor': fq}
        result.add(
            Metric(
                '  same, CPU time of the call',
                'us',
                latency(ours.call_cpu_us),
                latency(floor.call_cpu_us),
                ratio(latency(ours.call_cpu_us)['p50'], latency(floor.call_cpu_us)['p50']),
                note='the thread CPU clock around the call: its own work without preemption (the clock read costs '
                'about a microsecond)',
            )
        )
        if ours.exit_to_status_us and floor.exit_to_status_us:
            oe, fe = latency(ours.exit_to_status_us), latency(floor.exit_to_status_us)
            result.add(
                Metric(
                    '  model call left -> CANCELLED (floor: run exited)',
                    'us',
                    oe,
                    fe,
                    ratio(oe['p50'], fe['p50']),
                    note=f'ours says CANCELLED {abs(oe["p50"] - fe["p50"]):.0f} us (p50) '
                    f"{'before' if oe['p50'] < fe['p50'] else 'after'} the floor's run has even exited; both "
                    'figures are mostly Pydantic AI unwinding the run',
                )
            )
            result.series[f'exit_to_status_{live}_live'] = {'ours': oe, 'floor': fe}
        if ours.run_exit_to_status_us:
            re_ = latency(ours.run_exit_to_status_us)
            result.add(
                Metric(
                    '  run exited -> CANCELLED (ours only)',
                    'us',
                    re_,
                    note="from the run's cancellation reaching our executor to the status written: the library's "
                    'own part after the run has stopped',
                )
            )
            result.series[f'run_exit_to_status_{live}_live'] = {'ours': re_}
        result.series[f'hard_cancel_{live}_live'] = {'ours': o, 'floor': f, 'ours_no_gc': oc, 'floor_no_gc': fc}
        checks[str(live)] = {
            'premature_terminal': ours.premature_terminal,
            'not_terminal_after_stop': ours.not_terminal_after_stop,
            'wrong_final_status': ours.wrong_final_status,
            'rejected': ours.rejected,
        }
    bad = sum(c['premature_terminal'] + c['not_terminal_after_stop'] + c['wrong_final_status'] for c in checks.values())
    result.series['status_checks'] = checks
    result.add(
        Metric(
            'status CANCELLED before the run exited',
            'samples',
            sum(c['premature_terminal'] for c in checks.values()),
            goal='0',
            met=bad == 0,
            note='also counts: not terminal after exit, final status not CANCELLED',
        )
    )
    for name, label in (('soft_cooperative', 'cooperative child'), ('soft_stubborn', 'stubborn child')):
        soft = data[name]
        result.series[name] = soft
        result.add(Metric(f'soft cancel: turns after request ({label})', 'turns', soft['turns_after']))
        result.add(Metric(f'soft cancel: request -> task ended ({label})', 'ms', soft['wall_ms']))
        result.notes.append(
            f'soft cancel, {label}: final statuses {soft["statuses"]}, cancel kinds {soft["cancel_kinds"]}, '
            f'{soft["cancelled_with_partial"]}/{soft["turns_after"]["n"]} ended CANCELLED with a partial result'
        )
    return result
