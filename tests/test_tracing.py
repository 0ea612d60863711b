"""One span per task, in the right place in the trace, through the OpenTelemetry API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset

from .conftest import Gate, Script, call, child_text

pytestmark = pytest.mark.anyio

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    trace.set_tracer_provider(_provider)  # only the first call in a process takes effect; all tests share it
    _exporter.clear()
    Agent.instrument_all(True)
    try:
        yield _exporter
    finally:
        Agent.instrument_all(False)
        _exporter.clear()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_sync_task_span_nests_under_the_tool_call_and_the_subagent_run_under_it(
    spans: InMemorySpanExporter,
) -> None:
    config = SubAgentConfig(name='researcher', model=child_text('facts'))
    script = Script([[call('task', description='find', subagent_type='researcher')]])
    toolset = create_subagent_toolset([config])
    async with toolset:
        agent = Agent(script.model(), toolsets=[toolset])
        await agent.run('go')
    finished = spans.get_finished_spans()
    (task_span,) = by_name(finished, 'subagent researcher')
    tool_spans = [s for s in finished if s.attributes and s.attributes.get('gen_ai.tool.name') == 'task']
    assert len(tool_spans) == 1
    assert task_span.parent is not None
    assert task_span.parent.span_id == tool_spans[0].context.span_id
    attrs = dict(task_span.attributes or {})
    assert attrs['subagents.status'] == 'completed'
    assert attrs['subagents.mode'] == 'sync'
    assert attrs['subagents.usage.requests'] == 1
    children = [s for s in finished if s.parent is not None and s.parent.span_id == task_span.context.span_id]
    assert children, 'the subagent run has no span under the task span'


async def test_async_task_span_is_linked_to_the_tool_call_and_records_the_cancel(spans: InMemorySpanExporter) -> None:
    gate = Gate()
    config = SubAgentConfig(name='worker', model=gate.model())
    script = Script([[call('task', description='bg', subagent_type='worker', mode='async')]])
    toolset = create_subagent_toolset([config])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        await gate.entered.wait()
        (record,) = toolset.manager.list()
        toolset.manager.hard_cancel(record.id)
        record = await toolset.manager.wait_for(record.id)
    assert record.status is TaskStatus.CANCELLED
    finished = spans.get_finished_spans()
    (task_span,) = by_name(finished, 'subagent worker')
    tool_span = next(s for s in finished if s.attributes and s.attributes.get('gen_ai.tool.name') == 'task')
    assert task_span.parent is None
    assert [link.context.span_id for link in task_span.links] == [tool_span.context.span_id]
    attrs = dict(task_span.attributes or {})
    assert attrs['subagents.status'] == 'cancelled'
    assert attrs['subagents.cancel_kind'] == 'hard'


async def test_failed_task_span_has_error_status(spans: InMemorySpanExporter) -> None:
    from pydantic_ai.messages import ModelMessage, ModelResponse
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    async def boom(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ValueError('nope')

    script = Script([[call('task', description='x', subagent_type='broken')]])
    toolset = create_subagent_toolset([SubAgentConfig(name='broken', model=FunctionModel(boom))])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
    (task_span,) = by_name(spans.get_finished_spans(), 'subagent broken')
    assert task_span.status.status_code is trace.StatusCode.ERROR
    assert (task_span.attributes or {})['subagents.error'] == 'ValueError: nope'


async def test_queued_tasks_have_spans_from_their_creation_also_when_cancelled_in_the_queue(
    spans: InMemorySpanExporter,
) -> None:
    gate = Gate()
    manager = TaskManager(max_concurrent_tasks=1)
    async with manager:
        first = await manager.start(SubAgentConfig(name='first', model=gate.model()), 'block', scope='s')
        queued = await manager.start(SubAgentConfig(name='queued', model=child_text('ok')), 'wait', scope='s')
        dropped = await manager.start(SubAgentConfig(name='dropped', model=child_text('ok')), 'drop', scope='s')
        await gate.entered.wait()
        assert manager.hard_cancel(dropped.id)
        assert (await manager.wait_for(dropped.id)).status is TaskStatus.CANCELLED
        gate.release.set()
        assert (await manager.wait_for(queued.id)).status is TaskStatus.COMPLETED
        assert (await manager.wait_for(first.id)).status is TaskStatus.COMPLETED
    finished = spans.get_finished_spans()
    (queued_span,) = by_name(finished, 'subagent queued')
    (dropped_span,) = by_name(finished, 'subagent dropped')
    for span, record in ((queued_span, queued), (dropped_span, dropped)):
        assert span.start_time == int(record.created_at.timestamp() * 1e9)
    assert (queued_span.attributes or {})['subagents.status'] == 'completed'
    assert (dropped_span.attributes or {})['subagents.status'] == 'cancelled'
