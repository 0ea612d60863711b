"""Tasks shared through Redis: two managers, each with its own bus, store and connections (two processes as far as
Redis can tell), and real OS processes where a process must die or restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import InMemoryTaskStore, SubAgentConfig, TaskCompleted, TaskManager, TaskRecord, TaskStatus
from pydantic_ai_subagents.redis import redis_task_manager

from . import redis_helpers, redis_server
from .redis_helpers import FAST, fast_worker, until

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url
namespace = redis_helpers.namespace
two = redis_helpers.two


async def blocked_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    await anyio.sleep_forever()
    raise AssertionError('unreachable')


async def asking_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
    if not returns:
        return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
    return ModelResponse(parts=[TextPart(f'Report for {returns[-1].content}')])


async def test_task_started_in_one_process_is_seen_and_hard_cancelled_from_another(
    two: tuple[TaskManager, TaskManager],
) -> None:
    a, b = two
    config = SubAgentConfig(name='worker', instructions='Work.', model=FunctionModel(blocked_child))
    started = await a.start(config, 'block', scope='conv')
    await a.wait_for(started.id, timeout=0.05)
    await until(lambda: (r := b.get(started.id)) is not None and r.status is TaskStatus.RUNNING)
    seen = b.get(started.id)
    assert seen is not None and seen.owner == a.participant
    assert [r.id for r in b.list('conv', active_only=True)] == [started.id]

    assert b.hard_cancel(started.id)
    final = await b.wait_for(started.id, timeout=10)
    assert final.status is TaskStatus.CANCELLED
    assert final.cancel is not None and final.cancel.kind == 'hard'
    assert (await a.wait_for(started.id, timeout=1)).status is TaskStatus.CANCELLED
    assert not b.hard_cancel(started.id)  # finished: refused, in both processes
    assert not a.hard_cancel(started.id)


async def test_question_answered_from_another_process(two: tuple[TaskManager, TaskManager]) -> None:
    a, b = two
    config = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
    started = await a.start(config, 'report', scope='conv')
    await until(lambda: (r := b.get(started.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
    waiting = b.get(started.id)
    assert waiting is not None and waiting.question == 'Which year?'
    assert b.answer(started.id, '1999')
    final = await b.wait_for(started.id, until_question=False, timeout=10)
    assert final.status is TaskStatus.COMPLETED
    assert final.result == 'Report for 1999'


async def test_events_of_one_process_reach_the_other(two: tuple[TaskManager, TaskManager]) -> None:
    a, b = two
    seen: list[Any] = []

    async def watch() -> None:
        async for event in b.events('conv'):
            seen.append(event)
            if event.is_terminal:
                return

    config = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.sleep(0.1)
        started = await a.start(config, 'report', scope='conv')
        await until(lambda: (r := a.get(started.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
        assert a.answer(started.id, '2001')
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ['TaskCreated', 'TaskStarted', 'TaskQuestionAsked', 'TaskAnswered', 'TaskCompleted']
    assert isinstance(seen[-1], TaskCompleted) and seen[-1].result == 'Report for 2001'


def quick_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    prompt = ''.join(str(getattr(p, 'content', '')) for m in messages for p in getattr(m, 'parts', []))
    return ModelResponse(parts=[TextPart(f'done: {prompt[-20:]}')])


async def test_task_runs_on_a_worker(redis_url: str, namespace: str) -> None:

    on_parent = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='q1')
    on_worker = SubAgentConfig(name='remote', instructions='Work.', model=FunctionModel(quick_child))
    worker = fast_worker([on_worker], redis_url, namespace, 'q1')
    async with anyio.create_task_group() as tg, redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        tg.start_soon(worker.run)
        await worker.wait_ready()
        started = await parent.start(on_parent, 'the job', scope='conv')
        final = await parent.wait_for(started.id, timeout=10)
        assert final.status is TaskStatus.COMPLETED, final
        assert final.result == 'done: the job'
        assert final.owner == parent.participant
        assert final.usage.requests == 1
        worker.stop()
    assert worker.jobs_done == 1


# ---------------------------------------------------------------- real OS processes

REPO = Path(__file__).resolve().parent.parent


class Processes:
    """Child processes of one test, killed at its end whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, 'PYTHONUNBUFFERED': '1'},
        )
        self.started.append(process)
        return process

    async def app(self, url: str, namespace: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
        process = self.spawn('-m', 'tests.redis_procs', 'app', url, namespace, '1.0')
        assert process.stdout is not None
        with anyio.fail_after(30):
            line = await anyio.to_thread.run_sync(process.stdout.readline)
        if not line:
            raise AssertionError(
                f'the app process exited: {process.wait()} {process.stderr.read() if process.stderr else ""}'
            )
        return process, json.loads(line)

    async def worker(self, url: str, namespace: str, queue: str, *extra: str) -> subprocess.Popen[str]:
        process = self.spawn(
            '-m', 'pydantic_ai_subagents', 'worker', '--redis', url, '--namespace', namespace,
            '--subagents', 'tests.redis_procs:WORKER_SUBAGENTS', '--queue', queue,
            '--lease-seconds', '1', '--heartbeat', '0.1', *extra,
        )  # fmt: skip
        assert process.stderr is not None
        with anyio.fail_after(30):
            while True:
                line = await anyio.to_thread.run_sync(process.stderr.readline)
                if not line:
                    raise AssertionError(f'the worker exited with {process.wait()}')
                if 'serves queue' in line:
                    return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()  # workers drain and exit cleanly
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.close()


async def test_tasks_of_an_app_process_are_answered_and_cancelled_from_another(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    _, ids = await procs.app(redis_url, namespace)
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as here:
        await here.bus.wait_for_participant(ids['participant'])  # type: ignore[attr-defined]
        done = here.get(ids['done'])
        assert done is not None and done.status is TaskStatus.COMPLETED and done.result == 'finished 1 steps'
        assert {r.id for r in here.list('conv', active_only=True)} == {ids['running'], ids['spare'], ids['question']}

        question = here.get(ids['question'])
        assert question is not None and question.status is TaskStatus.WAITING_FOR_ANSWER
        assert question.question == 'Which year?'
        assert here.answer(ids['question'], '1999')
        answered = await here.wait_for(ids['question'], until_question=False, timeout=10)
        assert answered.status is TaskStatus.COMPLETED and answered.result == 'Report for 1999'

        assert here.soft_cancel(ids['running'])
        assert not here.soft_cancel(ids['running'])  # a repeated request is refused
        soft = await here.wait_for(ids['running'], timeout=10)
        assert soft.status is TaskStatus.CANCELLED
        assert soft.cancel is not None and soft.cancel.kind == 'soft'
        assert soft.partial_result is not None and soft.partial_result.startswith('partial: ')

        assert here.hard_cancel(ids['spare'])
        hard = await here.wait_for(ids['spare'], timeout=10)
        assert hard.status is TaskStatus.CANCELLED
        assert hard.cancel is not None and hard.cancel.kind == 'hard' and hard.partial_result is None


async def test_a_restarted_app_reads_its_records_and_running_tasks_end_failed(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    app, ids = await procs.app(redis_url, namespace)
    app.send_signal(signal.SIGKILL)
    app.wait()
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as restarted:
        done = restarted.get(ids['done'])
        assert done is not None and done.status is TaskStatus.COMPLETED and done.result == 'finished 1 steps'
        for name in ('running', 'spare', 'question'):
            failed = await restarted.wait_for(ids[name], until_question=False, timeout=15)
            assert failed.status is TaskStatus.FAILED, failed
            assert failed.error is not None and 'lease' in failed.error and ids['participant'] in failed.error
        waiting = restarted.get(ids['question'])
        assert waiting is not None and [t.status for t in waiting.history][-2:] == [
            TaskStatus.WAITING_FOR_ANSWER,
            TaskStatus.FAILED,
        ]
    # Another restart sees the same final records, written once.
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as again:
        statuses = {r.id: r.status for r in again.list()}
        assert statuses == {
            ids['done']: TaskStatus.COMPLETED,
            ids['running']: TaskStatus.FAILED,
            ids['spare']: TaskStatus.FAILED,
            ids['question']: TaskStatus.FAILED,
        }


WORKER_STEPPER = SubAgentConfig(name='stepper', description='Works in steps on a worker.', worker_queue='jobs')


async def test_a_worker_process_runs_tasks_and_takes_cancels_and_answers(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    await procs.worker(redis_url, namespace, 'jobs')
    asker = SubAgentConfig(name='asker', description='Asks on a worker.', worker_queue='jobs')
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        quick = await parent.start(WORKER_STEPPER, 'steps=2', scope='conv')
        asking = await parent.start(asker, 'report', scope='conv')
        soft = await parent.start(WORKER_STEPPER, 'steps=100000', scope='conv')
        hard = await parent.start(WORKER_STEPPER, 'steps=100000', scope='conv')

        finished = await parent.wait_for(quick.id, timeout=20)
        assert finished.status is TaskStatus.COMPLETED and finished.result == 'finished 2 steps'
        assert finished.usage.requests == 3 and finished.usage.tool_calls == 2

        waiting = await parent.wait_for(asking.id, timeout=20)
        assert waiting.status is TaskStatus.WAITING_FOR_ANSWER and waiting.question == 'Which year?'
        assert parent.answer(asking.id, '2024')
        answered = await parent.wait_for(asking.id, until_question=False, timeout=20)
        assert answered.status is TaskStatus.COMPLETED and answered.result == 'Report for 2024'

        await until(lambda: all(parent.get(t.id).status is TaskStatus.RUNNING for t in (soft, hard)))  # type: ignore[union-attr]
        assert parent.soft_cancel(soft.id)
        assert parent.hard_cancel(hard.id)
        soft_end = await parent.wait_for(soft.id, timeout=20)
        hard_end = await parent.wait_for(hard.id, timeout=20)
        assert soft_end.status is TaskStatus.CANCELLED and (soft_end.partial_result or '').startswith('partial: ')
        assert hard_end.status is TaskStatus.CANCELLED and hard_end.cancel is not None
        assert hard_end.cancel.kind == 'hard'


async def test_a_killed_worker_fails_its_task_or_hands_it_to_another_worker(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    first = await procs.worker(redis_url, namespace, 'jobs')
    retried = SubAgentConfig(name='stepper', description='Retried once.', worker_queue='jobs', retries=1)
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        lost = await parent.start(WORKER_STEPPER, 'steps=100000', scope='conv')
        kept = await parent.start(retried, 'steps=30', scope='conv')
        await until(lambda: all(parent.get(t.id).status is TaskStatus.RUNNING for t in (lost, kept)))  # type: ignore[union-attr]
        first.send_signal(signal.SIGKILL)
        first.wait()

        failed = await parent.wait_for(lost.id, timeout=20)
        assert failed.status is TaskStatus.FAILED
        assert failed.error is not None and 'worker' in failed.error and 'lease' in failed.error

        await procs.worker(redis_url, namespace, 'jobs')
        completed = await parent.wait_for(kept.id, timeout=30)
        assert completed.status is TaskStatus.COMPLETED, completed
        assert completed.result == 'finished 30 steps'
        assert completed.note is not None and 'attempt 2' in completed.note


async def test_a_worker_stopped_with_sigterm_lets_its_task_finish(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    worker = await procs.worker(redis_url, namespace, 'jobs')
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        task = await parent.start(WORKER_STEPPER, 'steps=10', scope='conv')
        await until(lambda: parent.get(task.id).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
        worker.send_signal(signal.SIGTERM)
        final = await parent.wait_for(task.id, timeout=20)
        assert final.status is TaskStatus.COMPLETED and final.result == 'finished 10 steps'
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(worker.wait)
        assert code == 0


def test_the_worker_command_loads_configs_and_explains_bad_targets(capsys: pytest.CaptureFixture[str]) -> None:
    from pydantic_ai_subagents.__main__ import load_subagents, main

    from . import redis_procs

    assert load_subagents('tests.redis_procs:WORKER_SUBAGENTS') == redis_procs.WORKER_SUBAGENTS
    assert load_subagents('tests.redis_procs:STEPPER') == [redis_procs.STEPPER]
    assert load_subagents('tests.redis_procs:make_subagents') == [redis_procs.ASKER]
    for target, message in [
        ('no-colon', 'module:attribute'),
        ('tests.no_such_module:X', 'cannot import'),
        ('tests.redis_procs:MISSING', 'no attribute'),
        ('tests.redis_procs:STEP_SECONDS', 'must be a SubAgentConfig'),
    ]:
        with pytest.raises(ValueError, match=message):
            load_subagents(target)
    assert main(['worker', '--subagents', 'tests.redis_procs:MISSING']) == 2
    assert 'no attribute' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['worker'])  # --subagents is required


def test_a_worker_refuses_bad_settings() -> None:
    from pydantic_ai_subagents.redis import Worker

    from . import redis_procs

    with pytest.raises(ValueError, match='concurrency'):
        Worker(redis_procs.WORKER_SUBAGENTS, concurrency=0)
    with pytest.raises(ValueError, match='unique'):
        Worker([redis_procs.STEPPER, redis_procs.STEPPER])


async def test_a_worker_task_without_a_shared_store_fails_clearly() -> None:
    async with TaskManager() as manager:
        record = await manager.start(WORKER_STEPPER, 'steps=1', scope='conv')
        final = await manager.wait_for(record.id, timeout=5)
    assert final.status is TaskStatus.FAILED
    assert final.error is not None and 'shared store' in final.error and 'worker_queue' in final.error


async def test_a_worker_reports_a_subagent_it_does_not_have(redis_url: str, namespace: str) -> None:
    from pydantic_ai_subagents.redis import Worker

    from . import redis_procs

    worker = Worker(
        [redis_procs.ASKER], url=redis_url, namespace=namespace, queue='jobs', bus_options=FAST['bus_options']
    )
    async with anyio.create_task_group() as tg, redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        tg.start_soon(worker.run)
        await worker.wait_ready()
        record = await parent.start(WORKER_STEPPER, 'steps=1', scope='conv')
        final = await parent.wait_for(record.id, timeout=10)
        worker.stop()
    assert final.status is TaskStatus.FAILED
    assert final.error == "the worker serving queue 'jobs' has no subagent named 'stepper'"


async def test_a_queued_worker_task_is_cancelled_without_a_worker(redis_url: str, namespace: str) -> None:
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        record = await parent.start(WORKER_STEPPER, 'steps=1', scope='conv')
        await anyio.sleep(0.1)
        assert parent.get(record.id).status is TaskStatus.PENDING  # type: ignore[union-attr]
        assert parent.hard_cancel(record.id)
        final = await parent.wait_for(record.id, timeout=5)
    assert final.status is TaskStatus.CANCELLED


async def test_the_http_api_of_one_process_controls_the_tasks_of_another(
    two: tuple[TaskManager, TaskManager],
) -> None:
    import httpx

    from pydantic_ai_subagents.web import create_app

    a, b = two
    blocked = SubAgentConfig(name='worker', instructions='Work.', model=FunctionModel(blocked_child))
    asking = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
    stuck = await a.start(blocked, 'block', scope='conv')
    question = await a.start(asking, 'report', scope='conv')
    await until(lambda: (r := b.get(question.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
    await until(lambda: (r := b.get(stuck.id)) is not None and r.status is TaskStatus.RUNNING)
    app = create_app(b, allow_unauthenticated=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://b') as client:
        listed = (await client.get('/tasks', params={'scope': 'conv'})).json()
        assert {t['id'] for t in listed['tasks']} == {stuck.id, question.id}
        answered = (await client.post(f'/tasks/{question.id}/answer', json={'answer': '1984'})).json()
        assert answered['accepted'] is True
        cancelled = (await client.post(f'/tasks/{stuck.id}/cancel', json={'kind': 'hard'})).json()
        assert cancelled['accepted'] is True
    assert (await a.wait_for(stuck.id, timeout=10)).status is TaskStatus.CANCELLED
    done = await a.wait_for(question.id, until_question=False, timeout=10)
    assert done.status is TaskStatus.COMPLETED and done.result == 'Report for 1984'


async def test_a_worker_stopped_with_drain_cancel_soft_cancels_its_task(
    redis_url: str, namespace: str, procs: Processes
) -> None:
    worker = await procs.worker(redis_url, namespace, 'jobs', '--drain', 'cancel')
    async with redis_task_manager(redis_url, namespace=namespace, **FAST) as parent:
        task = await parent.start(WORKER_STEPPER, 'steps=100000', scope='conv')
        await until(lambda: parent.get(task.id).status is TaskStatus.RUNNING)  # type: ignore[union-attr]
        worker.send_signal(signal.SIGTERM)
        final = await parent.wait_for(task.id, timeout=20)
        assert final.status is TaskStatus.CANCELLED, final
        assert (final.partial_result or '').startswith('partial: '), final
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(worker.wait)
        assert code == 0


class _UnreachableQueueStore(InMemoryTaskStore):
    """A shared store whose worker queue cannot be written (logic only: no process, no Redis)."""

    heartbeat_interval = 1.0

    async def register_owner(self, owner: str) -> None:
        pass

    async def unregister_owner(self, owner: str) -> None:
        pass

    async def orphans(self) -> list[TaskRecord]:
        return []

    async def owners_alive(self, owners: set[str]) -> set[str]:
        return owners

    async def refresh(self) -> list[TaskRecord]:
        return []

    async def submit(self, queue: str, job: Any) -> None:
        raise ConnectionError('Redis is gone')


async def test_a_job_that_cannot_be_queued_fails_its_task_and_nothing_else() -> None:
    quick = SubAgentConfig(name='quick', instructions='Work.', model=FunctionModel(quick_child))
    async with TaskManager(store=_UnreachableQueueStore()) as manager:
        lost = await manager.start(WORKER_STEPPER, 'steps=1', scope='conv')
        failed = await manager.wait_for(lost.id, timeout=5)
        assert failed.status is TaskStatus.FAILED
        assert failed.error == 'the task could not be queued for a worker: ConnectionError: Redis is gone'
        fine = await manager.start(quick, 'still works', scope='conv')
        assert (await manager.wait_for(fine.id, timeout=5)).result == 'done: still works'


async def test_a_process_that_missed_the_events_catches_up_from_redis(redis_url: str, namespace: str) -> None:
    from pydantic_ai_subagents.redis import RedisTaskStore

    # Each manager on its own in-memory bus: no event crosses, only the records in Redis do.
    options = {'lease_seconds': 1.0, 'heartbeat_interval': 0.05}
    async with (
        RedisTaskStore(redis_url, namespace=namespace, **options) as store_a,
        RedisTaskStore(redis_url, namespace=namespace, **options) as store_b,
        TaskManager(store=store_a) as a,
        TaskManager(store=store_b) as b,
    ):
        config = SubAgentConfig(name='researcher', instructions='Research.', model=FunctionModel(asking_child))
        started = await a.start(config, 'report', scope='conv')
        await until(lambda: (r := b.get(started.id)) is not None and r.status is TaskStatus.WAITING_FOR_ANSWER)
        seen = b.get(started.id)
        assert seen is not None and seen.question == 'Which year?'
        assert a.answer(started.id, '1969')
        final = await b.wait_for(started.id, until_question=False, timeout=10)
        assert final.status is TaskStatus.COMPLETED and final.result == 'Report for 1969'
