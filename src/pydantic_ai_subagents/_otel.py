"""Tracing: one OpenTelemetry span per task, through the OpenTelemetry API only.

With no tracer provider configured the API is a no-op, and the task span is not even opened. With Logfire
(`logfire.configure()` + `logfire.instrument_pydantic_ai()`) or a plain OpenTelemetry SDK, each task is one span named
for its subagent. A sync task's span is a child of the parent's tool-call span (the caller waits inside it); an async
task's span starts a trace of its own with a link to that tool-call span, since it outlives the call. The subagent's
own Pydantic AI spans nest under the task span.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from ._state import TaskRecord

__all__ = ('TRACER_NAME', 'capture_context', 'end_attributes', 'retry_event', 'task_span', 'tracing')

TRACER_NAME = 'pydantic-ai-subagents'
"""The instrumentation scope name of this library's spans."""

_tracer = trace.get_tracer(TRACER_NAME)


def tracing() -> bool:
    """Whether a tracer provider is configured; if not, a span would be a no-op, and so would making it current."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def capture_context() -> otel_context.Context:
    """The caller's tracing context, captured where a task is created (the parent's tool call)."""
    return otel_context.get_current()


@contextmanager
def task_span(
    record: TaskRecord, caller: otel_context.Context, *, start_time: datetime | None = None
) -> Generator[trace.Span]:
    """The span of one task, current for the duration of the block (so the subagent's spans nest under it).

    `start_time`: when the task was created, for a span opened later (a task that waited in the queue).
    """
    if not tracing():
        yield trace.INVALID_SPAN
        return
    attributes: dict[str, Any] = {
        'subagents.task_id': record.id,
        'subagents.subagent': record.subagent,
        'subagents.mode': record.mode,
        'subagents.scope': record.scope,
        'subagents.depth': record.depth,
    }
    if record.parent_task_id:
        attributes['subagents.parent_task_id'] = record.parent_task_id
    caller_span = trace.get_current_span(caller).get_span_context()
    if record.mode == 'sync':
        parent, links = caller, None
    else:
        parent = otel_context.Context()
        links = [trace.Link(caller_span)] if caller_span.is_valid else None
    with _tracer.start_as_current_span(
        f'subagent {record.subagent}',
        context=parent,
        links=links,
        attributes=attributes,
        start_time=None if start_time is None else int(start_time.timestamp() * 1e9),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def end_attributes(span: trace.Span, record: TaskRecord) -> None:
    """Record how the task ended on its span."""
    if not span.is_recording():
        return
    span.set_attribute('subagents.status', record.status.value)
    span.set_attribute('subagents.attempts', record.attempts)
    usage = record.usage
    span.set_attribute('subagents.usage.requests', usage.requests)
    span.set_attribute('subagents.usage.input_tokens', usage.input_tokens)
    span.set_attribute('subagents.usage.output_tokens', usage.output_tokens)
    if record.cancel is not None:
        span.set_attribute('subagents.cancel_kind', record.cancel.kind)
        span.set_attribute('subagents.cancel_requested_by', record.cancel.requested_by)
    if record.error:
        span.set_attribute('subagents.error', record.error)
        span.set_status(trace.StatusCode.ERROR, record.error)


def retry_event(attempt: int, error: str, delay: float) -> None:
    """Record on the current task span that its run will be tried again."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            'subagents.retry',
            {'subagents.attempt': attempt, 'subagents.error': error, 'subagents.retry_delay': delay},
        )
