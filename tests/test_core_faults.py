"""The core's promises under faults, races and budgets, each through a real `Agent`.

- Fault containment: whatever a subagent's run raises, `BaseException` included, ends that task `FAILED` (or
  `CANCELLED` when it truly was cancelled) with a truthful error, and touches nothing else: other tasks, other
  conversations and the manager go on. A real interrupt of the application still stops it, with every task ended.
- Durations are validated where they are given: NaN, infinite or negative is a `ValueError` naming the field.
- Race-free start: many first runs at once on a fresh toolset or capability all complete.
- `on_run_end='wait'` keeps its word for runs that complete, fail or are cancelled, in both registration paths.
- One budget for the tree: the parent's `UsageLimits` bound its parallel children too.

A fault that escapes into the event loop (`SystemExit` and `KeyboardInterrupt` end `asyncio`'s loop) must fail one
test, not the session: the fault scenarios run on an event loop of their own, in a thread (`contained`).
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic_ai import Agent, CancellationToken, RunCancelled
from pydantic_ai.exceptions import RunTimedOut
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    SubAgentConfig,
    SubAgents,
    SubAgentToolset,
    TaskManager,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import Gate, Script, call, child_text, split_sync_reply, task_id_from

pytestmark = pytest.mark.anyio

MANAGER_CLOSED_NOTE = 'stopped because the task manager was closed'


# ----------------------------------------------------------------------------------------------------------- helpers


def contained(scenario: Callable[[], Awaitable[None]], *, within: float = 30) -> Callable[[], BaseException | None]:
    """`scenario` run by `asyncio.run` on a loop of its own; whatever escapes that loop is returned, not raised."""

    def run() -> BaseException | None:
        async def bounded() -> None:
            with anyio.fail_after(within):
                await scenario()

        try:
            asyncio.run(bounded())
        except BaseException as e:  # the point is to see what escapes
            return e
        return None

    return run


async def run_contained(scenario: Callable[[], Awaitable[None]], *, within: float = 30) -> None:
    """Run a fault scenario on its own loop; an assertion it makes fails the test, anything else escaping too."""
    with anyio.fail_after(within + 15):
        escaped = await anyio.to_thread.run_sync(contained(scenario, within=within), abandon_on_cancel=True)
    if isinstance(escaped, AssertionError):
        raise escaped
    if escaped is not None:
        pytest.fail(f'{type(escaped).__name__}({escaped}) escaped the application: it ended the event loop')


def tool_returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


def calls_once(tool: str) -> FunctionModel:
    """A child that calls `tool` once, then answers with what it returned."""

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = tool_returns(messages)
        if not returns:
            return ModelResponse(parts=[ToolCallPart(tool, {})])
        return ModelResponse(parts=[TextPart(f'tool said: {returns[-1].content}')])

    return FunctionModel(fn)


async def start_async(toolset: SubAgentToolset, subagent: str, conversation_id: str) -> str:
    """One parent run, in its own conversation, that starts one async task and ends; the task's id."""
    script = Script([[call('task', description='job', subagent_type=subagent, mode='async')]])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id=conversation_id)
    return task_id_from(script.reply())


# ------------------------------------------------------------------------------------------------ fault containment


class Boom(BaseException):
    """A user's `BaseException` subclass: not an `Exception`, not a cancellation, not an exit."""


def _raise_error() -> None:
    raise RuntimeError('the tool failed')


def _raise_cancelled() -> None:
    raise asyncio.CancelledError()


async def _await_cancelled_future() -> None:
    # A tool that awaited something another party cancelled: nobody cancelled the task itself.
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    await future


def _raise_boom() -> None:
    raise Boom('the tool gave up')


def _exit() -> None:
    sys.exit(3)


def _raise_keyboard_interrupt() -> None:
    # Raised by the tool's own code: not a Ctrl-C of the application, which arrives as a signal.
    raise KeyboardInterrupt


FAULTS: dict[str, tuple[str, Callable[[], Any], str]] = {
    # kind: (where the fault is raised, what raises it, the exception type the task's error must name)
    # The control: an ordinary exception, contained today; the same checks must hold for every other kind.
    'exception': ('async_tool', _raise_error, 'RuntimeError'),
    'cancelled_error_raised': ('async_tool', _raise_cancelled, 'CancelledError'),
    'cancelled_future_awaited': ('async_tool', _await_cancelled_future, 'CancelledError'),
    'base_exception': ('async_tool', _raise_boom, 'Boom'),
    'base_exception_in_thread': ('sync_tool', _raise_boom, 'Boom'),
    'base_exception_from_model': ('model', _raise_boom, 'Boom'),
    'system_exit': ('async_tool', _exit, 'SystemExit'),
    'system_exit_in_thread': ('sync_tool', _exit, 'SystemExit'),
    'keyboard_interrupt_from_tool': ('async_tool', _raise_keyboard_interrupt, 'KeyboardInterrupt'),
    'keyboard_interrupt_from_tool_in_thread': ('sync_tool', _raise_keyboard_interrupt, 'KeyboardInterrupt'),
}


def faulty_config(kind: str) -> SubAgentConfig:
    where, fault, _ = FAULTS[kind]

    async def faulty_async() -> str:
        result = fault()
        if asyncio.iscoroutine(result):
            await result
        return 'unreachable'

    def faulty_sync() -> str:
        fault()
        return 'unreachable'

    if where == 'model':

        async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            fault()
            return ModelResponse(parts=[TextPart('unreachable')])

        return SubAgentConfig(name='faulty', model=FunctionModel(model), can_ask_questions=False)
    tool = faulty_async if where == 'async_tool' else faulty_sync
    return SubAgentConfig(
        name='faulty',
        model=calls_once(tool.__name__),
        toolsets=[FunctionToolset([tool])],
        can_ask_questions=False,
    )


@pytest.mark.parametrize('mode', ['async', 'sync'])
@pytest.mark.parametrize('kind', list(FAULTS))
async def test_a_fault_in_one_task_ends_that_task_failed_and_nothing_else(kind: str, mode: str) -> None:
    """Two conversations each have a live task; a third task's run raises `kind`.

    The faulty task ends `FAILED` naming the exception; its parent run goes on and reads that; the two live tasks
    stay `RUNNING` and later complete; the manager is the same one and still starts tasks; nobody is told the
    manager was closed.
    """
    exception_name = FAULTS[kind][2]

    async def scenario() -> None:
        gates = {'c1': Gate(answer='first done'), 'c2': Gate(answer='second done')}
        toolset = create_subagent_toolset(
            [
                SubAgentConfig(name='slow1', model=gates['c1'].model(), can_ask_questions=False),
                SubAgentConfig(name='slow2', model=gates['c2'].model(), can_ask_questions=False),
                faulty_config(kind),
                SubAgentConfig(name='later', model=child_text('still working'), can_ask_questions=False),
            ]
        )
        manager = toolset.manager
        async with toolset:
            live = {
                'c1': await start_async(toolset, 'slow1', 'c1'),
                'c2': await start_async(toolset, 'slow2', 'c2'),
            }
            for gate in gates.values():
                with anyio.fail_after(5):
                    await gate.entered.wait()
            participant = manager.participant

            async def wait_for_it(s: Script) -> list[Any]:
                return [call('wait_tasks', task_ids=[task_id_from(s.reply())])]

            turns: list[Any] = [[call('task', description='do it', subagent_type='faulty', mode=mode)]]
            if mode == 'async':
                turns.append(wait_for_it)
            script = Script(turns, final='parent carried on')
            result = await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c3')

            (faulty,) = manager.list('c3')
            assert faulty.status is TaskStatus.FAILED, (faulty.status, faulty.error, faulty.note)
            assert faulty.error is not None and exception_name in faulty.error, faulty.error
            assert faulty.note is None or MANAGER_CLOSED_NOTE not in faulty.note, faulty.note
            assert result.output == 'parent carried on'
            reply = script.replies[-1][0]
            assert reply.startswith(f'Task {faulty.id} (faulty) failed: '), reply
            assert exception_name in reply, reply

            for conversation, task_id in live.items():
                record = manager.get(task_id)
                assert record is not None and record.status is TaskStatus.RUNNING, (conversation, record)
            assert manager.participant == participant
            assert not manager.closed

            for gate in gates.values():
                gate.release.set()
            for conversation, task_id in live.items():
                with anyio.fail_after(5):
                    record = await manager.wait_for(task_id)
                assert record.status is TaskStatus.COMPLETED, (conversation, record.status, record.note)
                assert record.result == gates[conversation].answer

            # The same manager still runs new work, in a conversation of its own.
            fresh = Script([[call('task', description='after', subagent_type='later')]])
            await Agent(fresh.model(), toolsets=[toolset]).run('go', conversation_id='c4')
            (later,) = manager.list('c4')
            assert [split_sync_reply(r) for r in fresh.replies[1]] == [('still working', later.id)]
            assert manager.participant == participant
            for record in manager.list():
                assert record.note is None or MANAGER_CLOSED_NOTE not in record.note, (record.subagent, record.note)

    await run_contained(scenario)


# ----------------------------------------------------------------------------------------------- a real interrupt

INTERRUPTED_APP = textwrap.dedent(
    """
    import asyncio
    import sys

    import anyio
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

    WHERE = sys.argv[1]


    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.sleep_forever()
        raise AssertionError


    async def parent(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) > 1:
            return ModelResponse(parts=[TextPart('started')])
        if 'third' in str(messages[0]):
            print('ready', flush=True)
            await anyio.sleep_forever()
        args = {'description': 'work', 'subagent_type': 'worker', 'mode': 'async'}
        return ModelResponse(parts=[ToolCallPart('task', args)])


    toolset = create_subagent_toolset(
        [SubAgentConfig(name='worker', model=FunctionModel(child), can_ask_questions=False)]
    )


    async def work() -> None:
        agent = Agent(FunctionModel(parent), toolsets=[toolset])
        for conversation in ('c1', 'c2'):
            await agent.run('go', conversation_id=conversation)
        while any(r.status.value != 'running' for r in toolset.manager.list()):
            await anyio.sleep(0.01)
        if WHERE == 'during_a_run':
            await agent.run('third', conversation_id='c3')
        else:
            print('ready', flush=True)
            await anyio.sleep_forever()


    async def main() -> None:
        if WHERE == 'manager_never_closed':
            await work()
        else:
            async with toolset:
                await work()


    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print('interrupted', flush=True)
    for record in toolset.manager.list():
        print('task', record.status.value, flush=True)
    """
)


@pytest.mark.parametrize('where', ['idle', 'during_a_run', 'manager_never_closed'])
def test_a_real_ctrl_c_still_stops_the_application_with_every_task_ended(where: str, tmp_path: Path) -> None:
    """SIGINT to an application with two live tasks: it stops, exits normally, and both tasks ended `CANCELLED`.

    What a tool raises is contained in its task; a real interrupt of the application is not a tool's fault.
    """
    app = tmp_path / 'app.py'
    app.write_text(INTERRUPTED_APP)
    process = subprocess.Popen(
        [sys.executable, str(app), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'},
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.strip() == 'ready', (ready, process.stderr.read() if process.stderr else '')
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, (process.returncode, err)
    lines = out.splitlines()
    assert lines[0] == 'interrupted', out
    assert lines[1:] == ['task cancelled', 'task cancelled'], out
    assert 'Traceback' not in err, err
    assert 'never retrieved' not in err and 'destroyed but it is pending' not in err, err


# --------------------------------------------------------------------------------------------- durations validated

BAD_DURATIONS = [math.nan, math.inf, -1.0]
MANAGER_DURATIONS = [
    'soft_cancel_grace',
    'default_timeout',
    'question_timeout',
    'hard_cancel_wait',
    'retention_seconds',
]


def assert_rejected(build: Callable[[Any], Any], field: str) -> None:
    """`build(value)` raises a `ValueError` naming `field` for NaN, infinity and a negative value."""
    for value in BAD_DURATIONS:
        with pytest.raises(ValueError, match=field):
            build(value)


@pytest.mark.parametrize('field', MANAGER_DURATIONS)
def test_manager_durations_must_be_finite_and_not_negative(field: str) -> None:
    assert_rejected(lambda value: TaskManager(**{field: value}), field)


@pytest.mark.parametrize('field', MANAGER_DURATIONS)
def test_manager_durations_given_through_the_toolset_or_the_capability_are_checked(field: str) -> None:
    assert_rejected(lambda value: create_subagent_toolset(**{field: value}), field)
    assert_rejected(lambda value: SubAgents(**{field: value}), field)


def test_subagent_timeout_must_be_finite_and_positive() -> None:
    assert_rejected(lambda value: SubAgentConfig(name='w', timeout=value), 'timeout')


def test_max_wait_seconds_must_be_finite_and_not_negative() -> None:
    assert_rejected(lambda value: create_subagent_toolset(max_wait_seconds=value), 'max_wait_seconds')
    assert_rejected(lambda value: SubAgents(max_wait_seconds=value), 'max_wait_seconds')


# ------------------------------------------------------------------------------------------------ race-free start


def registered(registration: str, configs: list[SubAgentConfig], **options: Any) -> tuple[dict[str, Any], TaskManager]:
    """The `Agent(...)` keyword that registers subagents the given way, and the manager behind it."""
    if registration == 'toolset':
        toolset = create_subagent_toolset(configs, **options)
        return {'toolsets': [toolset]}, toolset.manager
    capability = SubAgents(configs, **options)
    return {'capabilities': [capability]}, capability.manager


@pytest.mark.parametrize('registration', ['toolset', 'capability'])
async def test_fifty_first_runs_at_once_on_a_fresh_registration_all_complete(registration: str) -> None:
    """50 parent runs start together on a toolset (or capability) nobody has used yet; each delegates a sync task."""
    registration_kw, manager = registered(
        registration,
        [SubAgentConfig(name='w', model=child_text('child result'), can_ask_questions=False)],
        max_concurrent_tasks=None,
    )
    scripts = [
        Script([[call('task', description=f'job {i}', subagent_type='w')]], final=f'parent {i}') for i in range(50)
    ]
    outputs: dict[int, str] = {}

    async def one(i: int) -> None:
        result = await Agent(scripts[i].model(), **registration_kw).run('go', conversation_id=f'c{i}')
        outputs[i] = result.output

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
    except TimeoutError:
        pytest.fail(f'hung: {len(outputs)} of 50 runs completed')
    finally:
        with anyio.fail_after(30):
            await manager.aclose()
    assert outputs == {i: f'parent {i}' for i in range(50)}
    records = manager.list()
    for i, script in enumerate(scripts):
        (record,) = manager.list(f'c{i}')
        assert [split_sync_reply(r) for r in script.replies[1]] == [('child result', record.id)]
    assert len(records) == 50
    assert {r.status for r in records} == {TaskStatus.COMPLETED}


# ------------------------------------------------------------------------------------- on_run_end='wait' keeps its word

ENDINGS = ['completes', 'model_raises', 'token_cancelled', 'deadline_passed', 'outer_cancel']


@pytest.mark.parametrize('registration', ['toolset', 'capability'])
@pytest.mark.parametrize('ending', ENDINGS)
async def test_wait_policy_keeps_its_word_however_the_run_ends(ending: str, registration: str) -> None:
    """`on_run_end='wait'`: a run that completes returns only once its task is done; a run that fails or is
    cancelled cannot wait, so its task is cancelled (requested by `parent`) and the run ends as it would have.

    The parent's model starts one async task whose subagent works until released, then, in its second turn, answers
    (`completes`), raises (`model_raises`), or parks until its run is cancelled by a `CancellationToken`, by the run's
    own `timeout`, or by an outer cancel scope.
    """
    gate = Gate(answer='waited for')
    parked = anyio.Event()

    async def second_turn(s: Script) -> list[Any]:
        if ending == 'completes':
            return [TextPart('all done')]
        if ending == 'model_raises':
            raise RuntimeError('model provider is down')
        parked.set()
        await anyio.sleep_forever()
        raise AssertionError('unreachable')

    script = Script([[call('task', description='long job', subagent_type='w', mode='async')], second_turn])
    registration_kw, manager = registered(
        registration,
        [SubAgentConfig(name='w', model=gate.model(), can_ask_questions=False)],
        on_run_end='wait',
    )
    agent = Agent(script.model(), **registration_kw)
    token = CancellationToken()
    outer = anyio.CancelScope()
    outcome: list[BaseException | str] = []
    phase = 'starting the task'

    async def run_parent() -> None:
        with outer:
            try:
                result = await agent.run(
                    'go',
                    conversation_id='c1',
                    cancellation_token=token,
                    timeout=0.5 if ending == 'deadline_passed' else None,
                )
            except Exception as e:
                outcome.append(e)
            else:
                outcome.append(result.output)
        if outer.cancelled_caught:
            outcome.append('cancelled from outside')

    try:
        with anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_parent)
                await gate.entered.wait()
                if ending == 'completes':
                    while script.calls < 2:
                        await anyio.sleep(0.001)
                    await anyio.sleep(0.05)
                    assert outcome == [], f'the run ended before its task finished: {outcome!r}'
                    gate.release.set()
                elif ending in ('token_cancelled', 'outer_cancel'):
                    await parked.wait()
                    if ending == 'token_cancelled':
                        token.cancel()
                    else:
                        outer.cancel()
                phase = f'waiting for the run to end ({ending})'
                while not outcome:
                    await anyio.sleep(0.001)
            (record,) = manager.list('c1')
            if ending == 'completes':
                assert outcome == ['all done']
                assert record.status is TaskStatus.COMPLETED, record.status
                assert record.result == 'waited for'
                return
            expected = {
                'model_raises': RuntimeError,
                'token_cancelled': RunCancelled,
                'deadline_passed': RunTimedOut,
                'outer_cancel': str,
            }[ending]
            assert len(outcome) == 1 and isinstance(outcome[0], expected), outcome
            # The run has ended: its task was cancelled on its behalf, not left working.
            assert record.cancel is not None and record.cancel.requested_by == 'parent', (record.status, record.cancel)
            phase = 'waiting for the cancelled task to stop'
            record = await manager.wait_for(record.id, until_question=False)
            assert record.status is TaskStatus.CANCELLED, record.status
            assert gate.finished == 0
    except TimeoutError:
        pytest.fail(f'hung while {phase}; the task is {[r.status.value for r in manager.list()]}')
    finally:
        gate.release.set()
        with anyio.fail_after(10):
            await manager.aclose()


# --------------------------------------------------------------------------------------------- one budget for a tree


def greedy_child(counter: list[int]) -> FunctionModel:
    """A child that never finishes by itself: each turn it calls `peek` again; `counter[0]` counts its requests."""

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        counter[0] += 1
        return ModelResponse(parts=[ToolCallPart('peek', {})])

    return FunctionModel(fn)


async def peek() -> str:
    return 'more to see'


@pytest.mark.parametrize('children', [3, 10])
async def test_parallel_children_share_the_parents_request_limit(children: int) -> None:
    """The parent's `UsageLimits(request_limit=6)` bound the whole tree, children started in parallel included.

    The parent's model starts `children` sync tasks in one turn (they run in parallel) and answers in its next turn.
    Each child would go on calling tools forever: only the budget stops it. The whole tree makes at most 6 model
    requests; a child that runs out ends `FAILED` saying so; the parent reads a plain reply for each task and
    finishes its run (a child's budget is never the parent's exception, so the children cannot take the request
    the parent needs to read their replies).
    """
    child_requests = [0]
    toolset = create_subagent_toolset(
        [
            SubAgentConfig(
                name='w',
                model=greedy_child(child_requests),
                toolsets=[FunctionToolset([peek])],
                can_ask_questions=False,
            )
        ],
        max_concurrent_tasks=None,
    )
    script = Script(
        [[call('task', description=f'look {i}', subagent_type='w') for i in range(children)]],
        final='parent finished',
    )
    async with toolset:
        with anyio.fail_after(30):
            result = await Agent(script.model(), toolsets=[toolset]).run(
                'go', usage_limits=UsageLimits(request_limit=6)
            )
        records = toolset.manager.list()
    assert result.output == 'parent finished'
    assert script.calls + child_requests[0] <= 6, (script.calls, child_requests[0])
    assert result.usage.requests <= 6, result.usage
    assert len(records) == children
    assert {r.status for r in records} == {TaskStatus.FAILED}, [(r.status, r.error) for r in records]
    for record in records:
        assert record.error is not None and re.search(r'usage limit|request_limit', record.error), record.error
    replies = script.replies[1]
    assert len(replies) == children
    by_id = {r.id: r for r in records}
    for reply in replies:
        task_id = reply.removeprefix('Task ').split(' ', 1)[0]
        assert task_id in by_id, reply
        assert reply.startswith(f'Task {task_id} (w) failed: '), reply
        assert re.search(r'usage limit|request_limit', reply), reply
