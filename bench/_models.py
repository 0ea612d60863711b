"""Scripted models (Pydantic AI `FunctionModel`): no network, deterministic, cheap."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


@dataclass
class Entered:
    """Counts children that reached their blocking model call; wakes whoever waits for a count."""

    count: int = 0
    target: int = 0
    reached: anyio.Event = field(default_factory=anyio.Event)

    def enter(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def wait_for(self, target: int) -> None:
        self.target = target
        if self.count < target:
            self.reached = anyio.Event()
            await self.reached.wait()


CHILD_INSTRUCTIONS = 'You do small jobs and reply with the result.'


def instant_child() -> FunctionModel:
    """A child that answers at once."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('ok')])

    return FunctionModel(answer)


def sleeping_child(seconds: float) -> FunctionModel:
    """A child whose one model call takes `seconds` (an `anyio.sleep`, so it costs no CPU)."""

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await anyio.sleep(seconds)
        return ModelResponse(parts=[TextPart('ok')])

    return FunctionModel(answer)


def blocked_child(
    on_enter: Callable[[], None], seconds: float = 3600.0, on_exit: Callable[[], None] | None = None
) -> FunctionModel:
    """A child that calls `on_enter` and then blocks in its model call (until cancelled); `on_exit` as it leaves."""

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        on_enter()
        try:
            await anyio.sleep(seconds)
        finally:
            if on_exit is not None:
                on_exit()
        return ModelResponse(parts=[TextPart('too late')])

    return FunctionModel(answer)


def looping_parent(turns: int, tool_name: str, args: dict[str, Any]) -> FunctionModel:
    """A parent that calls `tool_name(**args)` once per turn for `turns` turns, then answers `done`.

    A string argument's `{turn}` is replaced by the turn's number, so that each call is a job of its own (a toolset
    may answer a job it has already done from what it kept, as ours does). The parent keeps its own counter (it does
    not scan the history), so its own cost per turn is constant.
    """
    state = {'calls': 0}

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if state['calls'] < turns:
            state['calls'] += 1
            turn = state['calls']
            call = {k: v.replace('{turn}', str(turn)) if isinstance(v, str) else v for k, v in args.items()}
            return ModelResponse(parts=[ToolCallPart(tool_name, call)])
        return ModelResponse(parts=[TextPart('done')])

    return FunctionModel(respond)


def request_text(message: ModelMessage) -> str:
    """The user-prompt text of a request (empty for responses)."""
    if not isinstance(message, ModelRequest):
        return ''
    return ' '.join(p.content for p in message.parts if isinstance(p, UserPromptPart) and isinstance(p.content, str))
