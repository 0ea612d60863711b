"""A subagent that remembers: its model answers with every prompt of its conversation, so a test sees what a
follow-up starts from."""

from __future__ import annotations

from typing import Any

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import SubAgentConfig


def prompts_of(messages: list[ModelMessage]) -> list[str]:
    return [
        p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    ]


def remembering(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Answers with every prompt of its conversation, so a test sees what it remembers."""
    return ModelResponse(parts=[TextPart(' | '.join(prompts_of(messages)))])


REMEMBERING = FunctionModel(remembering)


def worker(model: Any = REMEMBERING, name: str = 'worker', **kw: Any) -> SubAgentConfig:
    return SubAgentConfig(name=name, instructions='You work.', model=model, **kw)
