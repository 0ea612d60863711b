"""The subagents' scripted models: they behave the same for every parent, so only the parent is measured."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence

import anyio
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

__all__ = ('asking', 'lookup', 'normalize', 'revising', 'stepper', 'structured')


def normalize(text: str) -> str:
    """Lower case without accents, for forgiving comparisons of what a model wrote."""
    decomposed = unicodedata.normalize('NFKD', text.casefold())
    return ''.join(c for c in decomposed if not unicodedata.combining(c))


def _task_text(messages: list[ModelMessage]) -> str:
    """The task description the subagent was given (its first user prompt)."""
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ''


def _cancel_requested(messages: list[ModelMessage]) -> bool:
    return any(
        isinstance(p, UserPromptPart) and isinstance(p.content, str) and 'CANCELLATION REQUEST' in p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
    )


def _tool_returns(messages: list[ModelMessage], tool: str) -> list[str]:
    return [
        p.model_response_str()
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart) and p.tool_name == tool
    ]


def lookup(facts: Mapping[str, str], *, delay: float = 0.0) -> FunctionModel:
    """A subagent that answers with the fact whose keyword its task mentions, after `delay` seconds of work."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        task = normalize(_task_text(messages))
        await anyio.sleep(delay)
        found = [fact for keyword, fact in facts.items() if normalize(keyword) in task]
        return ModelResponse(parts=[TextPart(' '.join(found) or 'I found nothing on that.')])

    return FunctionModel(respond, model_name='scripted-lookup')


def asking(question: str, reply: str) -> FunctionModel:
    """A subagent that first asks its parent `question`, then replies `reply` with `{answer}` filled in."""

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        answers = _tool_returns(messages, 'ask_parent')
        if not answers:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': question})])
        return ModelResponse(parts=[TextPart(reply.format(answer=answers[-1].strip()))])

    return FunctionModel(respond, model_name='scripted-asking')


def stepper(items: Sequence[str], *, what: str) -> FunctionModel:
    """A subagent that works through `items` one `next_item` tool call at a time (its config provides the tool).

    Asked to stop (a soft cancel), it replies at once with the items covered so far, after at least one; left
    alone, it replies with all of them at the end. The tool takes the work time, so a cancel lands between two items.
    """

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        done = _tool_returns(messages, 'next_item')
        if _cancel_requested(messages) and done:
            return ModelResponse(
                parts=[TextPart(f'Stopped early as asked. {what} covered so far ({len(done)}): {", ".join(done)}.')]
            )
        if len(done) < len(items):
            return ModelResponse(parts=[ToolCallPart('next_item', {})])
        return ModelResponse(parts=[TextPart(f'All {len(done)} {what} covered: {", ".join(done)}.')])

    return FunctionModel(respond, model_name='scripted-stepper')


def revising(draft: str, revision: str) -> FunctionModel:
    """A subagent that writes `draft`; asked again in the same conversation (a follow-up), it answers `revision`.

    A new task that asks for a revision gets no revision: that subagent has written nothing yet.
    """

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any(isinstance(m, ModelResponse) for m in messages):  # its own earlier answer: a follow-up
            return ModelResponse(parts=[TextPart(revision)])
        if 'revis' in normalize(_task_text(messages)):
            return ModelResponse(
                parts=[TextPart('I have written nothing to revise in this task: what should I revise?')]
            )
        return ModelResponse(parts=[TextPart(draft)])

    return FunctionModel(respond, model_name='scripted-revising')


def structured(values: Mapping[str, Mapping[str, object]]) -> FunctionModel:
    """A subagent with structured output: it returns `values[k]` for the first key `k` its task mentions.

    A key `''` matches every task: put it last, as the answer to a task that names none of the others.
    """

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        task = normalize(_task_text(messages))
        chosen = next(v for k, v in values.items() if normalize(k) in task)
        (tool,) = info.output_tools
        return ModelResponse(parts=[ToolCallPart(tool.name, dict(chosen))])

    return FunctionModel(respond, model_name='scripted-structured')
