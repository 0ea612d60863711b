"""The workloads for an alternative library, run inside that library's own venv.

    <venv>/bin/python bench/alternatives.py sapa|harness [--turns N] [--reps N] [--delegation-reps N] [--fanout N]
        [--cancel-live 1,100] [--cancel-samples N] [--memory-live N] [--only delegation,model_cost,fanout,cancel,memory]
    <venv>/bin/python bench/alternatives.py LIB --fanout-point alt|floor N   # one fan-out in a fresh interpreter

`run.py --alternatives` creates the venvs under bench/.venvs/ and runs this script there. It imports the standard
library, pydantic_ai, anyio, the alternative and the bench's own `_harness` and `_models` (never this project), and
prints one JSON object on stdout.

* sapa: `subagents-pydantic-ai`. Delegation: the `task` tool of `create_subagent_toolset` (mode='sync'). Background
  tasks: the same tool with mode='async', `wait_tasks`, and `TaskManager.hard_cancel`.
* harness: `pydantic-ai-harness`. Delegation: the `delegate_task` tool of the `SubAgents` capability. Background
  tasks: `SubAgents(task_control=TaskControl())` with an application-bound `DelegationTasks` owner: `delegate_task`
  with background=True, `DelegationTasks.wait_children` and `DelegationTasks.cancel`.

Both libraries start background work from a tool, with the parent run's `RunContext`. So the background workloads
run inside one tool call of a parent run, and call the library's tool functions with that context, as the model
would, but without the parent model's cost per tool call (our library's `manager.start` has none either). The timer
starts inside the tool call.

The floor is the same plain Pydantic AI / anyio code as in the w_*.py modules, run in the same process, so each
alternative is compared with a floor on its own Pydantic AI version.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import inspect
import json
import random
import re
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Protocol, TypeVar

import anyio
from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from _harness import alternate, latency, peak_rss_bytes, reset_peak_rss, rss_bytes, spread
from _models import CHILD_INSTRUCTIONS, Entered, blocked_child, instant_child, looping_parent, sleeping_child

PACKAGES = {'sapa': 'subagents-pydantic-ai', 'harness': 'pydantic-ai-harness'}
WORKLOADS = ('delegation', 'model_cost', 'fanout', 'cancel', 'memory')
LATENCY = 0.02
CONCURRENCY = 100
FANOUT_POINT_TIMEOUT = 600.0
SEED = 20_240_601
NO_LIMIT = UsageLimits(request_limit=None)
T = TypeVar('T')

CONCURRENCY_NOTES = {
    'sapa': 'no concurrency limit in subagents-pydantic-ai: all tasks run at once (the floor keeps 100)',
    'harness': 'TaskControl(max_running_tasks=...) refuses a delegation over the limit instead of queueing it, '
    'so the fan-out runs unlimited (the floor keeps 100)',
}
SOFT_CANCEL_APIS = {
    'sapa': '`await TaskManager.soft_cancel(id)`: the run stops at its next graph node boundary',
    'harness': '`DelegationTasks.request_stop(id)` (`cancel_task(force=False)`): the run stops before its next '
    'model request',
}
CANCEL_APIS = {
    'sapa': '`await TaskManager.hard_cancel(id)` (asyncio `Task.cancel`, status set to CANCELLED at once), '
    'then the task awaited',
    'harness': '`await DelegationTasks.cancel(id)`, which returns once the worker has exited',
}


@dataclass
class Deps:
    """What `subagents-pydantic-ai` asks of the parent's deps: a `clone_for_subagent` method."""

    def clone_for_subagent(self, max_depth: int = 0) -> Deps:
        return Deps()


# ----------------------------------------------------------------------------------------------- 1. delegation


def sapa_parent(model: FunctionModel, general_purpose: bool) -> tuple[Agent[Any, str], Any]:
    from subagents_pydantic_ai import SubAgentConfig, create_subagent_toolset

    config = SubAgentConfig(
        name='worker', description='Does small jobs.', instructions=CHILD_INSTRUCTIONS, model=instant_child()
    )
    toolset = create_subagent_toolset(
        [config], default_model=instant_child() if general_purpose else None, include_general_purpose=general_purpose
    )
    return Agent(model, deps_type=Deps, toolsets=[toolset]), toolset


def harness_parent(model: FunctionModel, task_control: bool = False) -> Agent[Any, str]:
    from pydantic_ai_harness.subagents import SubAgent, SubAgents, TaskControl

    child = Agent(instant_child(), name='worker', description='Does small jobs.', instructions=CHILD_INSTRUCTIONS)
    # Without a task owner, the harness runs the child on the parent's shared usage but with the default limits
    # (50 requests), so a long parent run trips them; a child budget of its own (request_limit=None) avoids that.
    sub = SubAgent(child, usage_limits=NO_LIMIT)
    control = TaskControl() if task_control else None
    return Agent(model, capabilities=[SubAgents(agents=[sub], task_control=control)])


async def one_delegation_run(lib: str, variant: str, turns: int) -> float:
    """Seconds per delegation of one parent run with `turns` delegations."""
    if variant == 'floor':
        child = Agent(instant_child(), instructions=CHILD_INSTRUCTIONS)
        parent = Agent(looping_parent(turns, 'delegate', {'description': 'Do job {turn}.'}))

        @parent.tool
        async def delegate(ctx: RunContext[None], description: str) -> str:  # pyright: ignore[reportUnusedFunction]
            """Delegate a job to a helper."""
            return (await child.run(description, usage=ctx.usage, usage_limits=ctx.usage_limits)).output

        started = time.perf_counter()
        result = await parent.run('Go.', usage_limits=NO_LIMIT)
    elif lib == 'sapa':
        model = looping_parent(
            turns, 'task', {'description': 'Do job {turn}.', 'subagent_type': 'worker', 'mode': 'sync'}
        )
        agent, toolset = sapa_parent(model, general_purpose=False)
        async with toolset:
            started = time.perf_counter()
            result = await agent.run('Go.', deps=Deps(), usage_limits=NO_LIMIT)
    else:
        model = looping_parent(turns, 'delegate_task', {'agent_name': 'worker', 'task': 'Do job {turn}.'})
        agent = harness_parent(model)
        started = time.perf_counter()
        result = await agent.run('Go.', usage_limits=NO_LIMIT)
    elapsed = time.perf_counter() - started
    assert result.output == 'done', result.output
    return elapsed / turns


async def delegation(lib: str, turns: int, reps: int) -> dict[str, Any]:
    for variant in ('alt', 'floor'):  # warm-up: imports, schema caches
        await one_delegation_run(lib, variant, 3)
    samples = await alternate(reps, ('alt', 'floor'), lambda v: one_delegation_run(lib, v, turns))
    return {v: spread([s * 1e3 for s in values]) for v, values in samples.items()}


# ----------------------------------------------------------------------------------------------- 5. model cost


async def model_cost(lib: str) -> dict[str, Any]:
    """Characters of the parent's tool definitions and instructions, as the parent model receives them."""
    seen: dict[str, Any] = {}

    def parent_fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen['tools'] = info.function_tools
        seen['instructions'] = info.instructions or ''
        return ModelResponse(parts=[TextPart('done')])

    if lib == 'sapa':
        agent, toolset = sapa_parent(FunctionModel(parent_fn), general_purpose=True)
        async with toolset:
            await agent.run('Go.', deps=Deps())
    else:
        # With task control, as in the background workloads: background tasks, questions, cancel (ours has them all).
        await harness_parent(FunctionModel(parent_fn), task_control=True).run('Go.')
    per_tool = {
        t.name: len(
            json.dumps(
                {'name': t.name, 'description': t.description or '', 'parameters': t.parameters_json_schema},
                separators=(',', ':'),
                ensure_ascii=False,
            )
        )
        for t in seen['tools']
    }
    return {'tools': per_tool, 'tools_total': sum(per_tool.values()), 'instructions': len(seen['instructions'])}


# ----------------------------------------------------------------------------------------------- background tasks


@dataclass
class CancelSample:
    """One hard cancel: when it was called, when the call returned, when the child run had exited."""

    started: float
    returned: float
    stopped: float
    premature: bool
    """The status said cancelled while the run was still going (read right after the call returned)."""
    cancelled: bool
    """The final status says cancelled."""


class Tasks(Protocol):
    """An alternative's background-task API, bound to one parent run."""

    async def start(self, prompt: str) -> str:
        """Start a background task; its id."""
        ...

    async def wait(self, ids: list[str]) -> int:
        """Wait until every task has ended; how many did not complete."""
        ...

    async def hard_cancel(self, task_id: str) -> CancelSample:
        """Stop the task now; the sample ends when its run has exited."""
        ...

    async def soft_cancel(self, task_id: str) -> None:
        """Ask the task to stop at its next clean point."""
        ...

    def status(self, task_id: str) -> str:
        """The task's status or outcome, in the library's words."""
        ...

    def result(self, task_id: str) -> str | None:
        """What the library keeps as the task's result or output."""
        ...


def streamable(model: FunctionModel) -> FunctionModel:
    """The same scripted child, which also answers streamed requests: the harness streams the runs of its tasks."""
    function = model.function
    assert function is not None

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        response = function(messages, info)
        if inspect.isawaitable(response):
            response = await response
        for part in response.parts:
            if isinstance(part, TextPart):
                yield part.content
            elif isinstance(part, ToolCallPart):
                yield {0: DeltaToolCall(part.tool_name, part.args_as_json_str(), tool_call_id=part.tool_call_id)}

    return FunctionModel(function, stream_function=stream)


def _go_parent() -> FunctionModel:
    """A parent model that calls the `go` tool once, then answers `done`."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart('go', {})])
        return ModelResponse(parts=[TextPart('done')])

    return FunctionModel(respond)


class SapaTasks:
    """subagents-pydantic-ai: the toolset's `task(mode='async')` and `wait_tasks`, and its `TaskManager`."""

    def __init__(self, toolset: Any, ctx: RunContext[Deps]) -> None:
        self.toolset, self.ctx, self.manager = toolset, ctx, toolset.task_manager

    async def start(self, prompt: str) -> str:
        text = await self.toolset.task(self.ctx, prompt, 'worker', mode='async')
        found = re.search(r'Task ID: (\S+)', text)
        assert found, text
        return found.group(1)

    async def wait(self, ids: list[str]) -> int:
        await self.toolset.wait_tasks(self.ctx, ids, timeout=3600.0)
        from subagents_pydantic_ai.types import TaskStatus

        return sum(self.manager.get_handle(i).status is not TaskStatus.COMPLETED for i in ids)

    async def hard_cancel(self, task_id: str) -> CancelSample:
        from subagents_pydantic_ai.types import TaskStatus

        task = self.manager.tasks[task_id]
        handle = self.manager.get_handle(task_id)
        started = time.perf_counter()
        await self.manager.hard_cancel(task_id)
        returned = time.perf_counter()
        premature = handle.status is TaskStatus.CANCELLED and not task.done()
        await asyncio.wait({task})
        stopped = time.perf_counter()
        return CancelSample(started, returned, stopped, premature, handle.status is TaskStatus.CANCELLED)

    async def soft_cancel(self, task_id: str) -> None:
        await self.manager.soft_cancel(task_id)

    def status(self, task_id: str) -> str:
        return self.manager.get_handle(task_id).status.value

    def result(self, task_id: str) -> str | None:
        handle = self.manager.get_handle(task_id)
        return handle.result or handle.error


class HarnessTasks:
    """pydantic-ai-harness: `delegate_task(background=True)` with task control, and the `DelegationTasks` owner."""

    def __init__(self, toolset: Any, ctx: RunContext[None], owner: Any) -> None:
        # The tool name the model would call, so that the task events are emitted as they are for a model's call.
        self.toolset, self.ctx, self.owner = toolset, dataclasses.replace(ctx, tool_name='delegate_task'), owner

    async def start(self, prompt: str) -> str:
        text = await self.toolset.delegate_task(self.ctx, 'worker', prompt, background=True)
        found = re.search(r'Task (\S+) is running in the background', text)
        assert found, text
        return found.group(1)

    async def wait(self, ids: list[str]) -> int:
        await self.owner.wait_children(None)
        return sum(self.owner.records[i].outcome != 'ok' for i in ids)

    async def hard_cancel(self, task_id: str) -> CancelSample:
        record = self.owner.records[task_id]
        started = time.perf_counter()
        await self.owner.cancel(task_id)
        stopped = time.perf_counter()
        # The call returns only once the worker has exited, so its status cannot be seen early.
        return CancelSample(started, stopped, stopped, False, record.outcome == 'cancelled')

    async def soft_cancel(self, task_id: str) -> None:
        # What `cancel_task(task_id, force=False)` does: stop before the next model request.
        self.owner.request_stop(task_id)

    def status(self, task_id: str) -> str:
        return self.owner.records[task_id].outcome or 'running'

    def result(self, task_id: str) -> str | None:
        return self.owner.records[task_id].output


async def in_parent_run(
    lib: str,
    child: FunctionModel,
    body: Callable[[Tasks], Awaitable[T]],
    *,
    retained: int = 500,
    child_tools: Sequence[Callable[..., Any]] = (),
) -> T:
    """Run `body` inside the one tool call of a parent run, with the library's background-task API for that run."""
    out: list[T] = []
    if lib == 'sapa':
        from subagents_pydantic_ai import SubAgentConfig, create_subagent_toolset

        config = SubAgentConfig(
            name='worker', description='Does small jobs.', instructions=CHILD_INSTRUCTIONS, model=streamable(child)
        )
        if child_tools:
            config['toolsets'] = [FunctionToolset(list(child_tools))]
        # Finished handles past max_task_handles are evicted; every result must stay readable, as for the floor.
        toolset = create_subagent_toolset([config], include_general_purpose=False, max_task_handles=retained)

        async def go_sapa(ctx: RunContext[Deps]) -> str:
            """Run the benchmark."""
            out.append(await body(SapaTasks(toolset, ctx)))
            await toolset.task_manager.cancel_all()
            return 'ok'

        parent = Agent(_go_parent(), deps_type=Deps, toolsets=[toolset], tools=[Tool(go_sapa, name='go')])
        async with toolset:
            await parent.run('Go.', deps=Deps(), usage_limits=NO_LIMIT)
        return out[0]

    from pydantic_ai_harness.subagents import DelegationTasks, SubAgent, SubAgents, TaskControl

    worker = Agent(
        streamable(child),
        name='worker',
        description='Does small jobs.',
        instructions=CHILD_INSTRUCTIONS,
        tools=child_tools,
    )
    capability = SubAgents(agents=[SubAgent(worker, usage_limits=NO_LIMIT)], task_control=TaskControl())
    owner = DelegationTasks()

    async def go(ctx: RunContext[None]) -> str:
        """Run the benchmark."""
        out.append(await body(HarnessTasks(capability.get_toolset(), ctx, owner)))
        return 'ok'

    parent = Agent(_go_parent(), capabilities=[capability], tools=[go])
    async with owner.opened():
        with owner.bind():
            await parent.run('Go.', usage_limits=NO_LIMIT)
    return out[0]


# ----------------------------------------------------------------------------------------------- 2. fan-out


async def fan_out(lib: str, variant: str, n: int) -> float:
    """Wall seconds to run `n` tasks with a 20 ms child latency and collect every result.

    `floor_unlimited` is the floor without the limit of 100, the schedule of a library that cannot limit.
    """
    if variant in ('floor', 'floor_unlimited'):
        child = Agent(sleeping_child(LATENCY), instructions=CHILD_INSTRUCTIONS)
        limiter = anyio.CapacityLimiter(CONCURRENCY if variant == 'floor' else n)
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

    async def body(tasks: Tasks) -> float:
        started = time.perf_counter()
        ids = [await tasks.start(f'Job {i}.') for i in range(n)]
        failed = await tasks.wait(ids)
        elapsed = time.perf_counter() - started
        assert not failed, f'{failed} of {n} tasks did not complete'
        return elapsed

    return await in_parent_run(lib, sleeping_child(LATENCY), body, retained=n + 1)


async def fanout(lib: str, n: int, reps: int) -> dict[str, Any]:
    for variant in ('alt', 'floor'):
        await fan_out(lib, variant, 20)
    samples = await alternate(reps, ('alt', 'floor'), lambda v: fan_out(lib, v, n))
    return {'tasks': n, 'seconds': {v: spread(s) for v, s in samples.items()}}


async def fanout_point(lib: str, variant: str, n: int) -> dict[str, Any]:
    """The body of a fresh interpreter: one fan-out; its peak RSS growth over the RSS before it.

    No wall time: the fresh interpreters run side by side (see `FreshPoints`).
    """
    await fan_out(lib, variant, 20)
    gc.collect()
    base = rss_bytes() or peak_rss_bytes()
    reset = reset_peak_rss()
    await fan_out(lib, variant, n)
    peak = peak_rss_bytes()
    return {'rss_delta': max(0, peak - base), 'peak_reset': reset}


class FreshPoints:
    """The fan-out in fresh interpreters (alt, floor, and the floor with no limit), one each, all at once.

    They report peak RSS growth, which other processes do not change, so they run in the background while this
    process measures what time does not enter either (tracemalloc bytes).
    """

    VARIANTS = ('alt', 'floor', 'floor_unlimited')

    def __init__(self, lib: str, n: int) -> None:
        self.started = time.perf_counter()
        self.procs = {
            v: subprocess.Popen(
                [sys.executable, __file__, lib, '--fanout-point', v, str(n)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for v in self.VARIANTS
        }

    def results(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for variant, proc in self.procs.items():
            timeout = max(0.0, FANOUT_POINT_TIMEOUT - (time.perf_counter() - self.started))
            stdout, stderr = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f'fan-out point {variant} failed ({proc.returncode}):\n{stderr[-3000:]}')
            out[variant] = json.loads(stdout.strip().splitlines()[-1])
        return out


# ----------------------------------------------------------------------------------------------- 3. cancel

SampleFn = Callable[[random.Random, list[CancelSample]], Awaitable[None]]
"""Hard-cancels one random live task of a population, records the sample, and starts a replacement."""


@dataclass
class _Slot:
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stopped: anyio.Event = field(default_factory=anyio.Event)


@asynccontextmanager
async def floor_population(live: int) -> AsyncIterator[SampleFn]:
    """`live` plain `child.run` tasks, each in its own cancel scope and blocked in its model call (as w_cancel.py)."""
    entered = Entered()
    child = Agent(blocked_child(entered.enter), instructions=CHILD_INSTRUCTIONS)

    async def one(slot: _Slot, prompt: str) -> None:
        try:
            with slot.scope:
                await child.run(prompt)
        finally:
            slot.stopped.set()

    async with anyio.create_task_group() as tg:
        slots = [_Slot() for _ in range(live)]
        for i, slot in enumerate(slots):
            tg.start_soon(one, slot, f'Job {i}.')
        await entered.wait_for(live)

        async def sample(rng: random.Random, out: list[CancelSample]) -> None:
            index = rng.randrange(len(slots))
            slot = slots[index]
            started = time.perf_counter()
            slot.scope.cancel()
            returned = time.perf_counter()
            await slot.stopped.wait()
            out.append(CancelSample(started, returned, time.perf_counter(), False, True))
            slots[index] = _Slot()
            tg.start_soon(one, slots[index], 'Replacement job.')
            await entered.wait_for(entered.count + 1)

        yield sample
        tg.cancel_scope.cancel()


@asynccontextmanager
async def alt_population(tasks: Tasks, entered: Entered, live: int) -> AsyncIterator[SampleFn]:
    """`live` background tasks of the alternative, each blocked in its child's model call."""
    ids = [await tasks.start(f'Job {i}.') for i in range(live)]
    await entered.wait_for(live)

    async def sample(rng: random.Random, out: list[CancelSample]) -> None:
        index = rng.randrange(len(ids))
        out.append(await tasks.hard_cancel(ids[index]))
        ids[index] = await tasks.start('Replacement job.')
        await entered.wait_for(entered.count + 1)

    yield sample  # the tasks still live are cancelled when the parent run's owner closes


async def hard_cancel(lib: str, live: int, samples: int) -> dict[str, Any]:
    """Both populations share one event loop and the samples alternate between them (ABBA), as in w_cancel.py."""
    entered = Entered()

    async def body(tasks: Tasks) -> dict[str, list[CancelSample]]:
        out: dict[str, list[CancelSample]] = {'alt': [], 'floor': []}
        rng = random.Random(SEED + live)
        populations: dict[str, Callable[[], AbstractAsyncContextManager[SampleFn]]] = {
            'alt': lambda: alt_population(tasks, entered, live),
            'floor': lambda: floor_population(live),
        }
        async with AsyncExitStack() as stack:
            fns = {v: await stack.enter_async_context(make()) for v, make in populations.items()}
            for i in range(samples):
                for variant in ('alt', 'floor') if i % 2 == 0 else ('floor', 'alt'):
                    await fns[variant](rng, out[variant])
        return out

    out = await in_parent_run(lib, blocked_child(entered.enter), body, retained=live + samples + 1)
    alt = out['alt']
    return {
        'live': live,
        'alt': latency([(s.stopped - s.started) * 1e6 for s in alt]),
        'floor': latency([(s.stopped - s.started) * 1e6 for s in out['floor']]),
        'alt_call': latency([(s.returned - s.started) * 1e6 for s in alt]),
        'premature_cancelled': sum(s.premature for s in alt),
        'not_cancelled': sum(not s.cancelled for s in alt),
    }


SOFT_STEPS = 10
"""The soft-cancelled child works in steps (a model turn, then a 5 ms tool call) and is done after this many."""


@dataclass
class _Stepper:
    """The child of the soft-cancel samples: it loops model turn -> `work` tool, and counts its model turns."""

    warm: int = 1
    calls: int = 0
    warmed: anyio.Event = field(default_factory=anyio.Event)

    def model(self) -> FunctionModel:
        async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            self.calls += 1
            if self.calls >= self.warm:
                self.warmed.set()
            await anyio.sleep(0.005)
            if self.calls > SOFT_STEPS:
                return ModelResponse(parts=[TextPart('All steps done.')])
            return ModelResponse(parts=[ToolCallPart('work', {})])

        return FunctionModel(respond)


async def work() -> str:
    """One step of work."""
    await anyio.sleep(0.005)
    return 'step done'


async def soft_cancel(lib: str, samples: int) -> dict[str, Any]:
    """Model turns from the soft-cancel request until the task ended, as in w_cancel.py (which has no floor)."""
    rng = random.Random(SEED)
    stepper = _Stepper()

    async def body(tasks: Tasks) -> dict[str, Any]:
        turns_after: list[float] = []
        wall_ms: list[float] = []
        statuses: dict[str, int] = {}
        for _ in range(samples):
            stepper.warm, stepper.calls, stepper.warmed = rng.randint(1, 4), 0, anyio.Event()
            task_id = await tasks.start(f'Do {SOFT_STEPS} steps of work.')
            await stepper.warmed.wait()
            await anyio.sleep(rng.uniform(0, 0.01))
            calls_at = stepper.calls
            started = time.perf_counter()
            await tasks.soft_cancel(task_id)
            await tasks.wait([task_id])
            wall_ms.append((time.perf_counter() - started) * 1e3)
            turns_after.append(stepper.calls - calls_at)
            status = tasks.status(task_id)
            statuses[status] = statuses.get(status, 0) + 1
        return {
            'turns_after': spread(turns_after),
            'wall_ms': spread(wall_ms),
            'statuses': statuses,
            'last_result': tasks.result(task_id),
        }

    return await in_parent_run(lib, stepper.model(), body, child_tools=[work])


# ----------------------------------------------------------------------------------------------- 4. memory


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def live_bytes(lib: str, variant: str, n: int) -> float:
    """Traced bytes per task while `n` tasks are blocked in their child's model call (as w_memory.py)."""
    entered = Entered()
    if variant == 'floor':
        child = Agent(blocked_child(entered.enter), instructions=CHILD_INSTRUCTIONS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(child.run, 'Warm-up.')
            await entered.wait_for(1)
            base = _traced()
            for i in range(n):
                tg.start_soon(child.run, f'Job {i}.')
            await entered.wait_for(n + 1)
            used = _traced() - base
            tg.cancel_scope.cancel()
        return used / n

    async def body(tasks: Tasks) -> float:
        await tasks.start('Warm-up.')
        await entered.wait_for(1)
        base = _traced()
        for i in range(n):
            await tasks.start(f'Job {i}.')
        await entered.wait_for(n + 1)
        return (_traced() - base) / n

    return await in_parent_run(lib, blocked_child(entered.enter), body)


async def retained_bytes(lib: str, n: int) -> float:
    """Traced bytes per finished task that the library keeps (its handle or record, with the result)."""

    async def body(tasks: Tasks) -> float:
        await tasks.wait([await tasks.start('Warm-up.')])
        base = _traced()
        ids = [await tasks.start(f'Job {i}.') for i in range(n)]
        failed = await tasks.wait(ids)
        assert not failed, f'{failed} of {n} tasks did not complete'
        return (_traced() - base) / n

    return await in_parent_run(lib, instant_child(), body, retained=n + 2)


async def memory(lib: str, live: int, retained: int) -> dict[str, Any]:
    # Warm up first: the first runs import and build a lot, and are very slow under tracemalloc.
    for variant in ('alt', 'floor'):
        await live_bytes(lib, variant, 1)
    await retained_bytes(lib, 1)
    tracemalloc.start()
    try:
        return {
            'live_tasks': live,
            'retained_tasks': retained,
            'live_bytes': {v: await live_bytes(lib, v, live) for v in ('alt', 'floor')},
            'retained_bytes': await retained_bytes(lib, retained),
        }
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------------------------- entry


async def measure(lib: str, args: argparse.Namespace, only: tuple[str, ...]) -> dict[str, Any]:
    data: dict[str, Any] = {
        'library': lib,
        'versions': {
            PACKAGES[lib]: version(PACKAGES[lib]),
            'pydantic_ai': version('pydantic-ai-slim'),
            'anyio': version('anyio'),
            'python': sys.version.split()[0],
        },
        'turns': args.turns,
    }
    seconds: dict[str, float] = {}

    async def timed(name: str, work: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await work
        finally:
            seconds[name] = round(time.perf_counter() - started, 1)

    if 'delegation' in only:
        data['delegation'] = await timed('delegation', delegation(lib, args.turns, args.delegation_reps or args.reps))
    if 'model_cost' in only:
        data['model_cost'] = await timed('model_cost', model_cost(lib))
    if 'fanout' in only:
        data['fanout'] = await timed('fanout', fanout(lib, args.fanout, args.reps))
        data['fanout']['concurrency_note'] = CONCURRENCY_NOTES[lib]
    if 'cancel' in only:
        data['cancel'] = {
            'api': CANCEL_APIS[lib],
            'hard': [await timed(f'cancel_{live}', hard_cancel(lib, live, args.cancel_samples)) for live in args.live],
            'soft': await timed('soft_cancel', soft_cancel(lib, args.soft_cancel_samples)),
            'soft_api': SOFT_CANCEL_APIS[lib],
        }
    fresh = FreshPoints(lib, args.fanout) if 'fanout' in only else None
    if 'memory' in only:
        data['memory'] = await timed('memory', memory(lib, args.memory_live, args.memory_retained))
    if fresh is not None:
        data['fanout']['fresh'] = fresh.results()
        seconds['fanout_fresh'] = round(time.perf_counter() - fresh.started, 1)
    data['seconds'] = seconds
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('library', choices=sorted(PACKAGES))
    parser.add_argument('--turns', type=int, default=300, help='delegations per parent run')
    parser.add_argument('--reps', type=int, default=3, help='repetitions of the timed workloads')
    parser.add_argument('--delegation-reps', type=int, help='repetitions of the delegation workload (default: --reps)')
    parser.add_argument('--fanout', type=int, default=1000, help='tasks per fan-out')
    parser.add_argument('--cancel-live', default='1,100,1000', help='live tasks during hard cancel, comma-separated')
    parser.add_argument('--cancel-samples', type=int, default=300, help='hard cancels per number of live tasks')
    parser.add_argument('--soft-cancel-samples', type=int, default=10, help='soft cancels')
    parser.add_argument('--memory-live', type=int, default=300, help='live tasks for bytes per live task')
    parser.add_argument('--memory-retained', type=int, default=500, help='finished tasks for bytes per retained task')
    parser.add_argument('--only', default=','.join(WORKLOADS), help=f'comma-separated, out of {", ".join(WORKLOADS)}')
    parser.add_argument('--fanout-point', nargs=2, metavar=('VARIANT', 'N'), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fanout_point:
        variant, n = args.fanout_point
        print(json.dumps(anyio.run(fanout_point, args.library, variant, int(n))))
        return 0
    only = tuple(name.strip() for name in args.only.split(',') if name.strip())
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        parser.error(f'unknown workload(s) {", ".join(sorted(unknown))}')
    args.live = [int(x) for x in args.cancel_live.split(',') if x.strip()]
    print(json.dumps(anyio.run(measure, args.library, args, only)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
