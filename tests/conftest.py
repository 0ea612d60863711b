"""Scripted models and helpers shared by the tests: the model calls the tools as an LLM would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from pydantic_ai import models
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

models.ALLOW_MODEL_REQUESTS = False


@pytest.fixture
def anyio_backend() -> str:
    return 'asyncio'


Turn = Callable[['Script'], Sequence[ModelResponsePart] | Awaitable[Sequence[ModelResponsePart]]]


@dataclass
class Script:
    """A scripted model: turn `n` of a run answers with `turns[n]` (parts, or a function of the script's state)."""

    turns: list[Turn | Sequence[ModelResponsePart]]
    final: str = 'done'
    calls: int = 0
    replies: list[list[str]] = field(default_factory=list[list[str]])
    """What the tools returned before each turn, as text."""
    retries: list[list[str]] = field(default_factory=list[list[str]])
    prompts: list[list[str]] = field(default_factory=list[list[str]])
    """The user-channel text before each turn, as the model reads it: the prompt, notices framed in their tags."""
    info: AgentInfo | None = None

    @property
    def last(self) -> list[str]:
        return self.replies[-1] if self.replies else []

    def reply(self, index: int = 0) -> str:
        return self.last[index]

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.info = info
        turn_no = sum(1 for m in messages if isinstance(m, ModelResponse))
        self.calls += 1
        self._record(messages)
        if turn_no < len(self.turns):
            turn = self.turns[turn_no]
            parts = turn(self) if callable(turn) else turn
            if isinstance(parts, Awaitable):
                parts = await parts
            return ModelResponse(parts=list(parts))
        return ModelResponse(parts=[TextPart(self.final)])

    def _record(self, messages: list[ModelMessage]) -> None:
        # Everything since the last model response: tool returns, retry prompts and enqueued notices.
        tail: list[ModelRequest] = []
        for m in reversed(messages):
            if isinstance(m, ModelResponse):
                break
            if isinstance(m, ModelRequest):
                tail.insert(0, m)
        replies: list[str] = []
        retries: list[str] = []
        prompts: list[str] = []
        for m in tail:
            for p in m.parts:
                if isinstance(p, ToolReturnPart):
                    replies.append(p.model_response_str())
                elif isinstance(p, RetryPromptPart):
                    retries.append(p.model_response())
                elif isinstance(p, UserPromptPart):
                    prompts.append(prompt_text(p))
        self.replies.append(replies)
        self.retries.append(retries)
        self.prompts.append(prompts)

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
        response = await self(messages, info)
        calls: dict[int, DeltaToolCall] = {}
        for i, part in enumerate(response.parts):
            if isinstance(part, ToolCallPart):
                calls[i] = DeltaToolCall(
                    name=part.tool_name, json_args=part.args_as_json_str(), tool_call_id=part.tool_call_id
                )
        if calls:
            yield calls
        else:
            yield ''.join(p.content for p in response.parts if isinstance(p, TextPart))

    def model(self) -> FunctionModel:
        return FunctionModel(self, stream_function=self.stream)


def prompt_text(part: UserPromptPart) -> str:
    """A user-channel part as the model reads it: a framed notice (`<task_notice ...>...</task_notice>`) included."""
    if isinstance(part.content, str):
        return part.content
    return ''.join(item if isinstance(item, str) else getattr(item, 'content', '') for item in part.content)


def call(tool: str, **args: Any) -> ToolCallPart:
    return ToolCallPart(tool, args)


def text(content: str) -> TextPart:
    return TextPart(content)


def task_id_from(reply: str) -> str:
    assert 'Task started with ID: ' in reply, reply
    return reply.split('Task started with ID: ', 1)[1].split()[0]


def sync_reply(result: str, task_id: str) -> str:
    """What the model reads when a sync task completes: its result, then one line with its id (the wording pinned)."""
    return f'{result}\n\n(To revise or extend this result, call task with continue_task_id="{task_id}".)'


def answered_reply(result: str, task_id: str) -> str:
    """What the model reads when answering a sync task's question lets it complete: a confirmation, then its result."""
    return f'Answer delivered; task {task_id} completed. Result:\n{sync_reply(result, task_id)}'


def split_sync_reply(reply: str) -> tuple[str, str]:
    """A completed sync task's reply as `(result, task_id)`; fails unless the reply ends with the id line."""
    result, _, line = reply.rpartition('\n\n(To revise or extend this result, call task with continue_task_id="')
    task_id = line.split('"', 1)[0]
    assert reply == sync_reply(result, task_id), reply
    return result, task_id


def sync_result(reply: str) -> str:
    """The result in a completed sync task's reply, without the id line."""
    return split_sync_reply(reply)[0]


def child_text(answer: str) -> FunctionModel:
    """A child that answers at once."""

    async def fn(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(answer)])

    return FunctionModel(fn)


@dataclass
class Gate:
    """A child model that blocks in its model request until released: for cancels that land mid-task."""

    answer: str = 'child result'
    entered: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    calls: int = 0
    finished: int = 0
    seen_prompts: list[str] = field(default_factory=list[str])

    async def fn(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        last = messages[-1]
        if isinstance(last, ModelRequest):
            for p in last.parts:
                if isinstance(p, UserPromptPart) and isinstance(p.content, str):
                    self.seen_prompts.append(p.content)
        if any('CANCELLATION REQUEST' in s for s in self.seen_prompts):
            return ModelResponse(parts=[TextPart('Cancelled. Partial findings: 3 sources found.')])
        self.entered.set()
        await self.release.wait()
        self.finished += 1
        return ModelResponse(parts=[TextPart(self.answer)])

    def model(self) -> FunctionModel:
        return FunctionModel(self.fn)


def leftover_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [
        t
        for t in asyncio.all_tasks()
        if t is not current and not t.done() and '_call_in_runner_task' not in repr(t.get_coro())
    ]
