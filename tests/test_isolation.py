"""Process isolation: tasks run in real child processes, which a stop terminates or kills.

The subagents' models and tools are module-level functions so that the spawned child can import them; they learn
where to write (the child's pid, a marker) from the task description or the deps.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import FunctionToolset
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import (
    SubAgentConfig,
    TaskManager,
    TaskRunEvent,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents._run._child import _child_main, _ChildSide
from pydantic_ai_subagents._run._pipe import _Answer, _Done, _Failed, _Job, _Notice, _Progress, _Question, _RunEvent

from .conftest import Script, call, leftover_tasks, sync_reply

pytestmark = pytest.mark.anyio

WRAP_UP = 'Cancelled. Partial findings: 3 sources found.'


# ----------------------------------------------------------------- what runs in the child


def _prompt(messages: list[ModelMessage]) -> str:
    first = messages[0]
    assert isinstance(first, ModelRequest)
    return next(str(p.content) for p in first.parts if p.part_kind == 'user-prompt')


def _returns(messages: list[ModelMessage]) -> list[ToolReturnPart]:
    return [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]


def _notice_seen(messages: list[ModelMessage]) -> bool:
    return any(
        p.part_kind == 'user-prompt' and 'CANCELLATION REQUEST' in str(p.content)
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
    )


def answers_42(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart('42 facts')])


def calls_the_tool_named_in_the_task(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Calls the tool the task description names, then answers; wraps up when it sees the soft-cancel notice."""
    if _notice_seen(messages):
        return ModelResponse(parts=[TextPart(WRAP_UP)])
    if not _returns(messages):
        return ModelResponse(parts=[ToolCallPart(_prompt(messages), {})])
    return ModelResponse(parts=[TextPart('done')])


async def streams_42(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield '42 '
    yield 'facts'


def lists_its_tools(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart(','.join(sorted(t.name for t in info.function_tools)))])


def asks_the_parent(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = _returns(messages)
    if not returns:
        return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
    return ModelResponse(parts=[TextPart(f'Using {returns[-1].content}')])


async def searches_then_hangs(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Says something, calls `search`, then hangs in its next request (after writing the marker it was given)."""
    if not _returns(messages):
        return ModelResponse(parts=[TextPart('Searching now.'), ToolCallPart('search', {})])
    _write(Path(_prompt(messages)), str(os.getpid()))
    await anyio.sleep(3600)
    raise AssertionError('unreachable')


def searches_forever(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart('search', {})])


def _refuse_to_load() -> None:
    raise RuntimeError('this object only loads in the parent')


class LoadsOnlyInTheParent:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_load, ())


class Finding(BaseModel):
    title: str
    count: int


@dataclass
class Handle:
    n: int
    lock: Any


def open_handle(n: int) -> Handle:
    """An output function whose result holds a live object (it cannot be pickled)."""
    return Handle(n=n, lock=threading.Lock())


def reports_n(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {'n': 3})])


def reports_a_finding(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {'title': 'ice', 'count': 3})])


def _write(path: Path, content: str) -> None:
    # Written whole, then renamed: the test never reads half a pid.
    tmp = path.with_suffix('.tmp')
    tmp.write_text(content)
    tmp.replace(path)


def block(ctx: RunContext[str]) -> str:
    """A sync tool stuck in a call Python cannot interrupt from the outside (it runs in a worker thread)."""
    _write(Path(ctx.deps), str(os.getpid()))
    time.sleep(60)
    return 'never'


async def stubborn(ctx: RunContext[str]) -> str:
    """Ignores SIGTERM and blocks the event loop itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write(Path(ctx.deps), str(os.getpid()))
    time.sleep(60)  # noqa: ASYNC251  (blocking the child's loop is the point)
    return 'never'


def crash(ctx: RunContext[str]) -> str:
    _write(Path(ctx.deps), str(os.getpid()))
    os._exit(3)


def die(ctx: RunContext[str]) -> str:
    """Killed from outside (here by itself), as the kernel's out-of-memory killer would."""
    _write(Path(ctx.deps), str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
    return 'never'


async def hold(ctx: RunContext[str]) -> str:
    """Runs until something is enqueued into the run (the soft-cancel notice), so the notice lands mid-task."""
    _write(Path(ctx.deps), str(os.getpid()))
    with anyio.fail_after(30):
        while not ctx.pending_messages:
            await anyio.sleep(0.01)
    return 'held'


def search() -> str:
    return 'found 2 papers'


def _start_family(pid_file: Path) -> None:
    """Start `sleep 300` and a forked helper, and write the pids of this process, the sleep and the helper."""
    sleeper = subprocess.Popen(['sleep', '300'], stdin=subprocess.DEVNULL)
    helper = os.fork()
    if helper == 0:  # the helper: it sleeps until it is stopped from outside
        time.sleep(300)
        os._exit(0)
    _write(pid_file, f'{os.getpid()} {sleeper.pid} {helper}')


def start_family_and_block(ctx: RunContext[str]) -> str:
    """Starts processes of its own, then blocks: a stop must reach them too."""
    _start_family(Path(ctx.deps))
    time.sleep(60)
    return 'never'


def start_family_and_return(ctx: RunContext[str]) -> str:
    """Starts processes of its own and returns, leaving them running."""
    _start_family(Path(ctx.deps))
    return 'started'


TOOLS = FunctionToolset([block, stubborn, crash, die, hold, search])


def worker(model: Any, **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name='worker', instructions='You work.', model=model, isolation='process', **kw)


def tool_worker(**kw: Any) -> SubAgentConfig:
    return worker(FunctionModel(calls_the_tool_named_in_the_task), toolsets=[TOOLS], **kw)


FAMILY_TOOLS = FunctionToolset([start_family_and_block, start_family_and_return])


def family_worker(**kw: Any) -> SubAgentConfig:
    return worker(FunctionModel(calls_the_tool_named_in_the_task), toolsets=[FAMILY_TOOLS], **kw)


# ----------------------------------------------------------------- helpers


async def pid_in(path: Path) -> int:
    file = anyio.Path(path)
    with anyio.fail_after(40):
        while not await file.exists():
            await anyio.sleep(0.01)
    return int(await file.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still takes signals; where /proc exists it tells (an orphan may be reaped late by its new parent).
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


async def family_in(path: Path) -> tuple[int, int, int]:
    """The pids a `start_family_*` tool wrote: the task's process, its `sleep 300` and its forked helper."""
    file = anyio.Path(path)
    with anyio.fail_after(40):
        while not await file.exists():
            await anyio.sleep(0.01)
    child, sleeper, helper = (int(pid) for pid in (await file.read_text()).split())
    return child, sleeper, helper


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group, as /proc tells."""
    members: list[int] = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while listed
        if fields[0] != 'Z' and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


async def gone(*pids: int) -> bool:
    """Whether all of `pids` are gone within 10 s (an orphan is reaped by its new parent, at its own pace)."""
    with anyio.move_on_after(10):
        while any(alive(pid) for pid in pids):
            await anyio.sleep(0.02)
    return not any(alive(pid) for pid in pids)


# ----------------------------------------------------------------- tests


async def test_completed_task_reports_result_and_usage_and_rolls_it_up() -> None:
    script = Script([[call('task', description='find facts', subagent_type='worker')]])
    toolset = create_subagent_toolset([worker(FunctionModel(answers_42))])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert script.replies[1] == [sync_reply('42 facts', record.id)]
    assert record.status is TaskStatus.COMPLETED
    assert record.result == '42 facts'
    assert record.usage.requests == 1
    assert record.usage.input_tokens > 0
    assert result.usage.requests == 3  # the parent's 2 and the child's 1
    assert record.note is None
    assert leftover_tasks() == []
    assert multiprocessing.active_children() == []


async def test_structured_output_comes_back_as_its_type() -> None:
    async with TaskManager() as manager:
        record = await manager.start(worker(FunctionModel(reports_a_finding), output_type=Finding), 'go', scope='s')
        record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.COMPLETED
    assert record.result == Finding(title='ice', count=3)


async def test_an_output_that_cannot_be_pickled_comes_back_as_json() -> None:
    async with TaskManager() as manager:
        record = await manager.start(worker(FunctionModel(reports_n), output_type=open_handle), 'go', scope='s')
        record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.COMPLETED
    assert isinstance(record.result, dict)
    assert record.result['n'] == 3
    assert record.result['lock'].startswith('<unlocked _thread.lock')


async def test_hard_cancel_terminates_a_sync_tool_blocked_in_a_thread(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pid'
    async with TaskManager() as manager:
        record = await manager.start(tool_worker(), 'block', scope='s', deps=str(pid_file))
        pid = await pid_in(pid_file)
        started = time.monotonic()
        assert manager.hard_cancel(record.id) is True
        with anyio.fail_after(20):
            record = await manager.wait_for(record.id)
        elapsed = time.monotonic() - started
    assert record.status is TaskStatus.CANCELLED
    assert record.note == 'stopped by terminating its process'
    assert record.usage.requests == 1
    assert not alive(pid)
    assert elapsed < 10  # the tool would have slept for 60 s


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pid'
    async with TaskManager(hard_cancel_wait=0.5) as manager:
        record = await manager.start(tool_worker(), 'stubborn', scope='s', deps=str(pid_file))
        pid = await pid_in(pid_file)
        assert manager.hard_cancel(record.id) is True
        with anyio.fail_after(20):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.note == 'killed after 0.5 s: its process did not stop when told to terminate'
    assert not alive(pid)


@pytest.mark.parametrize('hard_cancel_wait', [5.0, 0.5])
async def test_hard_cancel_stops_what_the_tools_started(tmp_path: Path, hard_cancel_wait: float) -> None:
    pid_file = tmp_path / 'pids'
    async with TaskManager(hard_cancel_wait=hard_cancel_wait) as manager:
        record = await manager.start(family_worker(), 'start_family_and_block', scope='s', deps=str(pid_file))
        child, sleeper, helper = await family_in(pid_file)
        assert alive(sleeper) and alive(helper)
        assert sorted(group_members(child)) == sorted([child, sleeper, helper])  # the task's own process group
        assert manager.hard_cancel(record.id) is True
        with anyio.fail_after(20):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.note == 'stopped by terminating its process'
    assert await gone(child, sleeper, helper)
    assert group_members(child) == []
    assert multiprocessing.active_children() == []


async def test_timeout_stops_what_the_tools_started(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pids'
    async with TaskManager() as manager:
        config = family_worker(timeout=10)
        record = await manager.start(config, 'start_family_and_block', scope='s', deps=str(pid_file))
        child, sleeper, helper = await family_in(pid_file)
        assert alive(sleeper) and alive(helper)
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error == 'timed out after 10 s'
    assert await gone(child, sleeper, helper)
    assert group_members(child) == []


async def test_what_the_tools_left_running_ends_with_the_task(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pids'
    async with TaskManager() as manager:
        record = await manager.start(family_worker(), 'start_family_and_return', scope='s', deps=str(pid_file))
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
        child, sleeper, helper = await family_in(pid_file)
    assert record.status is TaskStatus.COMPLETED
    assert record.result == 'done'
    assert await gone(child, sleeper, helper)
    assert group_members(child) == []


async def test_closing_the_manager_stops_what_the_tools_started(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pids'
    async with TaskManager(hard_cancel_wait=0.5) as manager:
        await manager.start(family_worker(), 'start_family_and_block', scope='s', deps=str(pid_file))
        child, sleeper, helper = await family_in(pid_file)
    assert await gone(child, sleeper, helper)
    assert group_members(child) == []


async def test_timeout_stops_the_process_and_fails_the_task(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pid'
    async with TaskManager() as manager:
        record = await manager.start(tool_worker(timeout=5), 'block', scope='s', deps=str(pid_file))
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error == 'timed out after 5 s'
    assert record.note == 'stopped by terminating its process'
    # The timeout counts the process start: on a slow machine the tool may not have been reached.
    if pid_file.exists():
        assert not alive(int(pid_file.read_text()))
    assert multiprocessing.active_children() == []


async def test_ask_parent_waits_for_the_answer_from_the_parent_process() -> None:
    async with TaskManager() as manager:
        record = await manager.start(worker(FunctionModel(asks_the_parent)), 'go', scope='s')
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
        assert record.status is TaskStatus.WAITING_FOR_ANSWER
        assert record.question == 'Which year?'
        assert manager.answer(record.id, '1999') is True
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id, until_question=False)
    assert record.status is TaskStatus.COMPLETED
    assert record.result == 'Using 1999'
    assert record.usage.requests == 2


@pytest.mark.parametrize('can_ask', [True, False])
async def test_ask_parent_is_offered_only_when_allowed(can_ask: bool) -> None:
    async with TaskManager() as manager:
        config = worker(FunctionModel(lists_its_tools), toolsets=[TOOLS], can_ask_questions=can_ask)
        record = await manager.start(config, 'go', scope='s')
        record = await manager.wait_for(record.id)
    expected = 'block,crash,die,hold,search,stubborn'
    assert record.result == ('ask_parent,' + expected if can_ask else expected)


async def test_soft_cancel_reaches_the_child_and_keeps_its_wrap_up(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pid'
    async with TaskManager() as manager:
        record = await manager.start(tool_worker(), 'hold', scope='s', deps=str(pid_file))
        pid = await pid_in(pid_file)
        assert manager.soft_cancel(record.id) is True
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.kind == 'soft'
    assert record.partial_result == WRAP_UP
    assert record.note is None
    assert not alive(pid)


async def test_soft_cancel_escalation_keeps_what_the_child_had(tmp_path: Path) -> None:
    marker = tmp_path / 'hanging'
    config = worker(FunctionModel(searches_then_hangs), toolsets=[TOOLS])
    async with TaskManager(soft_cancel_grace=2) as manager:
        record = await manager.start(config, str(marker), scope='s')
        pid = await pid_in(marker)
        assert manager.soft_cancel(record.id) is True
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    assert record.cancel is not None and record.cancel.requested_by == 'escalation'
    assert record.partial_result == 'Searching now.\nTool results: search: found 2 papers'
    assert record.note == 'stopped by terminating its process'
    assert not alive(pid)


@pytest.mark.parametrize(
    ('config', 'deps', 'culprit'),
    [
        pytest.param(worker(FunctionModel(answers_42)), threading.Lock(), 'deps', id='lock-in-deps'),
    ],
)
async def test_a_task_that_cannot_be_pickled_fails_at_once(config: SubAgentConfig, deps: Any, culprit: str) -> None:
    async with TaskManager() as manager:
        record = await manager.start(config, 'go', scope='s', deps=deps)
        with anyio.fail_after(5):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error is not None
    assert record.error.startswith(f"process isolation: the subagent's {culprit} cannot be pickled"), record.error
    assert record.error.endswith('define its model, tools and output type at module level')
    assert multiprocessing.active_children() == []


def test_a_config_with_a_ready_agent_cannot_be_isolated() -> None:
    # Refused when the config is built (tests/test_config_errors.py has the message).
    with pytest.raises(ValueError, match="a ready `agent` cannot run with isolation='process'"):
        SubAgentConfig(name='worker', agent=Agent(FunctionModel(answers_42)), isolation='process')


async def test_a_child_that_cannot_load_the_task_fails_it() -> None:
    async with TaskManager() as manager:
        record = await manager.start(worker(FunctionModel(answers_42)), 'go', scope='s', deps=LoadsOnlyInTheParent())
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error == (
        'process isolation: the child process could not load the task: '
        'RuntimeError: this object only loads in the parent'
    )


async def test_a_run_that_fails_in_the_child_reports_its_error_and_usage() -> None:
    config = worker(FunctionModel(searches_forever), toolsets=[TOOLS], usage_limits=UsageLimits(request_limit=2))
    async with TaskManager() as manager:
        record = await manager.start(config, 'go', scope='s')
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error is not None and record.error.startswith('usage limit reached: ')
    assert record.usage.requests == 2
    assert record.usage.tool_calls == 2


@pytest.mark.parametrize('tool', ['block', 'stubborn'])
async def test_closing_the_manager_leaves_no_process_alive(tmp_path: Path, tool: str) -> None:
    pid_file = tmp_path / 'pid'
    manager = TaskManager(hard_cancel_wait=0.5)
    async with manager:
        record = await manager.start(tool_worker(), tool, scope='s', deps=str(pid_file))
        pid = await pid_in(pid_file)
    record = manager.get(record.id)
    assert record is not None and record.status is TaskStatus.CANCELLED
    assert not alive(pid)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    ('tool', 'error'),
    [('crash', 'its process exited with code 3'), ('die', 'its process was killed by signal 9 (SIGKILL)')],
)
async def test_a_child_that_dies_on_its_own_fails_the_task(tmp_path: Path, tool: str, error: str) -> None:
    pid_file = tmp_path / 'pid'
    async with TaskManager() as manager:
        record = await manager.start(tool_worker(), tool, scope='s', deps=str(pid_file))
        with anyio.fail_after(30):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED
    assert record.error == error
    assert record.note is None
    assert not alive(await pid_in(pid_file))


async def test_run_events_are_forwarded_from_the_child() -> None:
    events: list[TaskRunEvent] = []
    async with TaskManager(forward_subagent_events=True) as manager:

        async def collect() -> None:
            async for event in manager.events():
                if isinstance(event, TaskRunEvent):
                    events.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            config = worker(FunctionModel(answers_42, stream_function=streams_42))
            record = await manager.start(config, 'go', scope='s')
            record = await manager.wait_for(record.id)
            tg.cancel_scope.cancel()
    assert record.status is TaskStatus.COMPLETED
    assert events and all(e.task_id == record.id for e in events)
    assert '42 facts' in repr([e.event for e in events])


def run_orphaned_parent(pid_file: str) -> None:
    """A parent process for the test below: it starts a blocked isolated task and waits to be killed."""

    async def main() -> None:
        async with TaskManager() as manager:
            await manager.start(tool_worker(), 'block', scope='s', deps=pid_file)
            await anyio.sleep(3600)

    anyio.run(main)


async def test_a_child_exits_when_its_parent_process_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / 'pid'
    code = f'from tests.test_isolation import run_orphaned_parent; run_orphaned_parent({str(pid_file)!r})'
    root = Path(__file__).parent.parent
    async with await anyio.open_process(
        [sys.executable, '-c', code], cwd=root, stdin=subprocess.DEVNULL, stdout=None, stderr=None
    ) as parent:
        try:
            pid = await pid_in(pid_file)
            assert alive(pid)
        finally:
            parent.kill()
    assert parent.returncode == -signal.SIGKILL
    with anyio.fail_after(20):
        while alive(pid):
            await anyio.sleep(0.05)


async def test_cancels_that_land_while_the_process_starts(tmp_path: Path) -> None:
    async with TaskManager() as manager:
        hard = await manager.start(tool_worker(), 'block', scope='s', deps=str(tmp_path / 'hard'))
        soft = await manager.start(tool_worker(), 'block', scope='s', deps=str(tmp_path / 'soft'))
        with anyio.fail_after(5):
            while any(manager.get(r.id).status is TaskStatus.PENDING for r in (hard, soft)):  # type: ignore[union-attr]
                await anyio.sleep(0)
        assert manager.hard_cancel(hard.id) is True
        assert manager.soft_cancel(soft.id) is True
        with anyio.fail_after(30):
            hard, soft = await manager.wait([hard.id, soft.id])
    assert hard.status is TaskStatus.CANCELLED
    assert hard.note == 'stopped by terminating its process'
    assert not (tmp_path / 'hard').exists()  # stopped before its tool ran
    assert soft.status is TaskStatus.CANCELLED
    assert soft.partial_result == WRAP_UP  # the notice was its first model request
    assert not (tmp_path / 'soft').exists()
    assert multiprocessing.active_children() == []


# ----------------------------------------------------------------- the child's side, driven in this process
# The same code runs in the child process in the tests above; here it is driven directly, message by message.


def child_job(model: FunctionModel, **kw: Any) -> _Job:
    config = worker(model, toolsets=[TOOLS], **{k: v for k, v in kw.items() if k == 'output_type'})
    return _Job(
        task_id='t1',
        depth=1,
        config=config,
        prompt='go',
        model=model,
        deps=None,
        usage_limits=kw.get('usage_limits'),
        can_ask_questions=True,
        forward_events=kw.get('forward_events', False),
    )


async def drive_child(job: _Job, *, notice_first: bool = False) -> list[Any]:
    """Run the child's side against a pipe, answering its questions with '1999'; return what it sent."""
    parent_end, child_end = multiprocessing.Pipe()
    gone = threading.Event()
    side = _ChildSide(conn=child_end, job=job, parent_gone=gone.set)
    if notice_first:
        parent_end.send(_Notice())  # as if sent while the process was starting
    received: list[Any] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(side.run)
        while not received or not isinstance(received[-1], _Done | _Failed):
            with anyio.fail_after(10):
                await anyio.wait_readable(parent_end)
            received.append(parent_end.recv())
            if isinstance(received[-1], _Question):
                parent_end.send(_Answer(id=received[-1].id, answer='1999'))
    parent_end.close()
    assert await anyio.to_thread.run_sync(gone.wait, 10)  # its reader thread saw the pipe close
    child_end.close()
    return received


async def test_the_child_side_relays_the_question_the_notice_and_the_result() -> None:
    received = await drive_child(child_job(FunctionModel(asks_the_parent)), notice_first=True)
    assert [type(m).__name__ for m in received] == [
        '_Partial',
        '_Progress',
        '_Progress',
        '_Question',
        '_Progress',
        '_Done',
    ]
    # A progress report at each turn and after the response that calls a tool; the last response ends the run.
    assert [m.turn for m in received if isinstance(m, _Progress)] == [True, False, True]
    assert received[3] == _Question(id=0, question='Which year?')
    done = received[-1]
    assert done.output == 'Using 1999'
    assert done.usage.requests == 2


async def test_the_child_side_forwards_events_and_reports_failures() -> None:
    received = await drive_child(child_job(FunctionModel(answers_42, stream_function=streams_42), forward_events=True))
    assert any(isinstance(m, _RunEvent) for m in received)
    assert received[-1].output == '42 facts'

    received = await drive_child(child_job(FunctionModel(searches_forever), usage_limits=UsageLimits(request_limit=1)))
    failed = received[-1]
    assert isinstance(failed, _Failed)
    assert failed.error.startswith('usage limit reached: ')
    assert failed.usage is not None and failed.usage.requests == 1

    received = await drive_child(child_job(FunctionModel(reports_n), output_type=open_handle))
    assert received[-1].output['n'] == 3  # sent as JSON: the handle itself cannot be pickled


def test_the_child_reports_a_task_it_cannot_load() -> None:
    parent_end, child_end = multiprocessing.Pipe()
    with parent_end, child_end:
        with pytest.raises(SystemExit) as exit_info:
            _child_main(child_end, b'not a pickle')
        assert exit_info.value.code == 1
        failed = parent_end.recv()
    assert isinstance(failed, _Failed)
    assert failed.error.startswith('process isolation: the child process could not load the task: UnpicklingError')
