"""What a finished task's transcript tells: its last tool calls, and what its model requests cost.

A task's manager keeps its transcript once it has ended, completed, stopped or failed, while its record is kept (see
[`TaskManager.transcript`][pydantic_ai_subagents.TaskManager.transcript]); a live task has none yet. Costs
come from Pydantic AI's price data (`ModelResponse.cost()`, backed by `genai-prices`): a response of a model it has
no price for (a scripted or local model) is counted as unpriced, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, ToolCallPart, ToolReturnPart

from .._state import TaskRecord

__all__ = ('MAX_TOOL_CALLS', 'MAX_TOOL_TEXT_CHARS', 'CostView', 'TaskActivity', 'ToolCallView', 'task_activity')

MAX_TOOL_CALLS = 10
"""How many of a transcript's tool calls are shown: the last ones, which say where the task got to."""
MAX_TOOL_TEXT_CHARS = 500
"""Longest tool argument or return text shown; longer ones are cut with a marker (a page, not a log viewer)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra='forbid')


class ToolCallView(_Model):
    """One tool call of a task's subagent, with what it returned."""

    tool_name: str
    """The tool called."""
    args: str
    """The arguments, as JSON text (cut to `MAX_TOOL_TEXT_CHARS`)."""
    result: str | None
    """What the tool returned, as the model read it (cut the same way); `null` if no return was recorded."""
    timestamp: datetime | None
    """When the model asked for the call (UTC), when the model said."""


class CostView(_Model):
    """What a task's model requests cost, by Pydantic AI's price data."""

    total_usd: float
    """The summed price of the priced requests, in US dollars."""
    priced_requests: int
    """Model responses with a known price."""
    unpriced_requests: int
    """Model responses of a model with no known price (not counted in `total_usd`)."""


class TaskActivity(_Model):
    """The answer to `GET /tasks/{task_id}/activity`."""

    task_id: str
    """The task."""
    transcript_available: bool
    """Whether the task's transcript is kept: once it has ended, until it is pruned."""
    tool_calls: list[ToolCallView]
    """The last tool calls (at most `MAX_TOOL_CALLS`), oldest first."""
    tool_calls_total: int
    """How many tool calls the transcript holds in all."""
    cost: CostView | None
    """What the transcript's model requests cost; `null` without a transcript."""


def _cut(text: str) -> str:
    if len(text) <= MAX_TOOL_TEXT_CHARS:
        return text
    return text[:MAX_TOOL_TEXT_CHARS] + f'... [{len(text) - MAX_TOOL_TEXT_CHARS} more characters]'


def _cost(responses: Sequence[ModelResponse]) -> CostView:
    total = Decimal(0)
    priced = unpriced = 0
    for response in responses:
        try:
            total += response.cost().total_price
        except (LookupError, ValueError):
            unpriced += 1
        else:
            priced += 1
    return CostView(total_usd=float(total), priced_requests=priced, unpriced_requests=unpriced)


def task_activity(record: TaskRecord, transcript: Sequence[ModelMessage] | None) -> TaskActivity:
    """The activity view of `record`, from its transcript (`None` while it runs, or once pruned)."""
    if transcript is None:
        return TaskActivity(task_id=record.id, transcript_available=False, tool_calls=[], tool_calls_total=0, cost=None)
    returns: dict[str, str] = {}
    calls: list[tuple[ToolCallPart, datetime | None]] = []
    responses: list[ModelResponse] = []
    for message in transcript:
        if isinstance(message, ModelResponse):
            responses.append(message)
            calls.extend((part, message.timestamp) for part in message.tool_calls)
        elif isinstance(message, ModelRequest):  # pyright: ignore[reportUnnecessaryIsInstance]
            for part in message.parts:
                if isinstance(part, ToolReturnPart):
                    returns[part.tool_call_id] = part.model_response_str()
    shown = [
        ToolCallView(
            tool_name=part.tool_name,
            args=_cut(part.args_as_json_str()),
            result=None if part.tool_call_id not in returns else _cut(returns[part.tool_call_id]),
            timestamp=timestamp,
        )
        for part, timestamp in calls[-MAX_TOOL_CALLS:]
    ]
    return TaskActivity(
        task_id=record.id,
        transcript_available=True,
        tool_calls=shown,
        tool_calls_total=len(calls),
        cost=_cost(responses),
    )
