"""Retries of a task's run after transient model failures: what is retried, from where, and what is recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import (
    SubAgentConfig,
    TaskEvent,
    TaskManager,
    TaskRetrying,
    TaskStatus,
    create_subagent_toolset,
)

from .conftest import Script, call, sync_reply
from .test_tracing import by_name, spans  # noqa: F401  # pyright: ignore[reportUnusedImport]

pytestmark = pytest.mark.anyio


class Flaky:
    """A child model that calls a tool, then fails with `errors` in turn, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.tool_runs = 0

    def fn(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            return ModelResponse(parts=[ToolCallPart('fetch', {})])
        if self.errors:
            raise self.errors.pop(0)
        return ModelResponse(parts=[TextPart(f'done after {len(messages)} messages')])

    def config(self, **kw: Any) -> SubAgentConfig:
        def fetch() -> str:
            self.tool_runs += 1
            return 'fetched'

        return SubAgentConfig(
            name='worker',
            instructions='You work.',
            model=FunctionModel(self.fn),
            toolsets=[FunctionToolset([fetch])],
            **kw,
        )


async def test_rate_limits_and_server_errors_are_retried_from_where_the_run_was() -> None:
    flaky = Flaky(ModelHTTPError(429, 'm', body='slow down'), ModelHTTPError(503, 'm', body='busy'))
    toolset = create_subagent_toolset([flaky.config(model_retries=2, retry_backoff=0.0)])
    events: list[TaskEvent] = []
    script = Script([[call('task', description='fetch it', subagent_type='worker')]])
    async with toolset:
        manager = toolset.manager

        async def listen() -> None:
            async for event in manager.events():
                events.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(listen)
            await anyio.sleep(0)
            await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        (record,) = manager.list()
    assert script.replies[1] == [sync_reply('done after 3 messages', record.id)]
    assert record.status is TaskStatus.COMPLETED and record.attempts == 3
    # The tool ran once: each retry went on from the conversation, not from the start.
    assert flaky.tool_runs == 1 and flaky.calls == 4
    retrying = [e for e in events if isinstance(e, TaskRetrying)]
    assert [(e.attempt, e.task_id) for e in retrying] == [(2, record.id), (3, record.id)]
    assert 'status_code: 429' in retrying[0].error and 'status_code: 503' in retrying[1].error
    assert all(e.status is TaskStatus.RUNNING for e in retrying)


async def test_other_failures_and_exhausted_retries_fail_the_task() -> None:
    async with TaskManager() as manager:
        bad_request = Flaky(ModelHTTPError(400, 'm', body='bad'))
        first = await manager.start(bad_request.config(model_retries=3, retry_backoff=0.0), 'x', scope='s')
        limited = Flaky(*[ModelHTTPError(429, 'm') for _ in range(5)])
        second = await manager.start(limited.config(model_retries=1, retry_backoff=0.0), 'x', scope='s')
        unreachable = Flaky(ModelAPIError('m', 'connection refused'), ConnectionError('reset'))
        third = await manager.start(unreachable.config(model_retries=2, retry_backoff=0.0), 'x', scope='s')
        first, second, third = await manager.wait([first.id, second.id, third.id])
    assert first.status is TaskStatus.FAILED and first.attempts == 1 and '400' in (first.error or '')
    assert second.status is TaskStatus.FAILED and second.attempts == 2 and '429' in (second.error or '')
    assert third.status is TaskStatus.COMPLETED and third.attempts == 3


async def test_without_model_retries_the_first_transient_failure_fails_the_task() -> None:
    async with TaskManager() as manager:
        flaky = Flaky(ModelHTTPError(429, 'm'))
        record = await manager.start(flaky.config(), 'x', scope='s')
        record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.FAILED and record.attempts == 1


async def test_a_hard_cancel_during_the_wait_before_a_retry_ends_the_task_at_once() -> None:
    flaky = Flaky(ModelHTTPError(503, 'm'))
    async with TaskManager() as manager:
        record = await manager.start(
            flaky.config(model_retries=1, retry_backoff=600.0, max_retry_backoff=600.0), 'x', scope='s'
        )
        with anyio.fail_after(10):
            while (manager.get(record.id) or record).attempts == 1:
                await anyio.sleep(0.01)
        assert manager.hard_cancel(record.id)
        with anyio.fail_after(5):
            record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED and record.attempts == 2
    assert flaky.calls == 2  # the second try never started


async def test_retries_are_on_the_task_span(spans: InMemorySpanExporter) -> None:  # noqa: F811
    flaky = Flaky(ModelHTTPError(429, 'm'))
    async with TaskManager() as manager:
        record = await manager.start(flaky.config(model_retries=1, retry_backoff=0.0), 'x', scope='s')
        await manager.wait_for(record.id)
    (span,) = by_name(spans.get_finished_spans(), 'subagent worker')
    assert span.attributes is not None and span.attributes['subagents.attempts'] == 2
    (event,) = [e for e in span.events if e.name == 'subagents.retry']
    assert event.attributes is not None and event.attributes['subagents.attempt'] == 2


def _fails_once_in_child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Fails with a 429 the first time (a marker file remembers it across tries), then answers."""
    first = messages[0]
    assert isinstance(first, ModelRequest)
    marker = Path(next(str(p.content) for p in first.parts if isinstance(p, UserPromptPart)))
    if not marker.exists():
        marker.touch()
        raise ModelHTTPError(429, 'm', body='slow down')
    return ModelResponse(parts=[TextPart('ok')])


async def test_a_task_in_its_own_process_is_retried_and_the_owner_records_it(tmp_path: Path) -> None:
    config = SubAgentConfig(
        name='worker',
        model=FunctionModel(_fails_once_in_child),
        isolation='process',
        model_retries=1,
        retry_backoff=0.0,
    )
    async with TaskManager() as manager:
        record = await manager.start(config, str(tmp_path / 'failed-once'), scope='s')
        record = await manager.wait_for(record.id, timeout=30)
    assert record.status is TaskStatus.COMPLETED, record.error
    assert record.result == 'ok' and record.attempts == 2


@pytest.mark.parametrize(
    ('field', 'value'),
    [
        ('model_retries', -1),
        ('retry_backoff', -0.5),
        ('retry_backoff', float('nan')),
        ('max_retry_backoff', float('inf')),
    ],
)
def test_retry_settings_are_checked_when_the_config_is_built(field: str, value: float) -> None:
    options: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"subagent 'worker': {field} must be"):
        SubAgentConfig(name='worker', **options)


def test_a_retry_event_and_its_record_travel_between_processes() -> None:
    from pydantic_ai_subagents import TaskEventMessage, TaskRecord
    from pydantic_ai_subagents.redis._codec import decode, encode

    record = TaskRecord(id='t', subagent='worker', description='d', mode='async', scope='s', attempts=3)
    event = TaskRetrying(task_id='t', subagent='worker', scope='s', attempt=3, error='HTTP 429', delay=1.5)
    message = TaskEventMessage(sender='m', topic='subagents.events', event=event, record=record)
    decoded = decode(encode(message, origin='me', reply_to=None)).message
    assert isinstance(decoded, TaskEventMessage)
    assert decoded.event == event and decoded.record is not None and decoded.record.attempts == 3
