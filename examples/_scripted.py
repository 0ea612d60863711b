"""Scripted stand-ins for LLMs, shared by the examples, plus a few printing helpers.

Every example runs offline: the parent and its subagents are Pydantic AI `FunctionModel`s whose functions read the
conversation so far (the prompt, the tool results, any notices) and pick the next tool call or the final answer,
the way an LLM would. A child model can `await anyio.sleep(...)` to take time, so that a cancel lands mid-task.

Set `SUBAGENTS_DEMO_MODEL` (for example `openai:gpt-5-mini`) to run an example on a real model instead; then
`demo_model()` returns that name, `parent()` returns `None` (use the agent's own model) and `child()` returns `None`
(a subagent uses its parent's model). The provider's package (e.g. `pydantic-ai-slim[openai]`) and API key must be
available.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic_ai import RunContext
from pydantic_ai.messages import (
    AgentStreamEvent,
    EnqueuedMessagesEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import TaskEvent, TaskManager, TaskNotice

__all__ = (
    'History',
    'Step',
    'call',
    'calls',
    'child',
    'demo_model',
    'event_printer',
    'format_call',
    'format_event',
    'parent',
    'print_events',
    'print_table',
    'researcher_model',
    'say',
    'script',
    'scripted_model',
    'search_toolset',
    'section',
    'short',
    'writer_model',
)

# ---------------------------------------------------------------------------------------------------- choosing a model


def demo_model() -> str | None:
    """The real model named by `SUBAGENTS_DEMO_MODEL` (e.g. `openai:gpt-5-mini`), or `None` for scripted models."""
    return os.environ.get('SUBAGENTS_DEMO_MODEL') or None


def parent(*steps: Step) -> FunctionModel | None:
    """The parent's model for one run: a script of `steps`, or `None` on a real model (the agent's own is used)."""
    return None if demo_model() else script(*steps)


def child(model: FunctionModel) -> FunctionModel | None:
    """A subagent's model: the scripted one, or `None` on a real model (the subagent then uses its parent's)."""
    return None if demo_model() else model


# ---------------------------------------------------------------------------------------------------- reading history


@dataclass
class History:
    """The conversation so far, as a scripted model reads it."""

    messages: list[ModelMessage]
    info: AgentInfo

    @property
    def prompt(self) -> str:
        """The first user prompt: the task description for a subagent, the user's request for the parent."""
        texts = self.user_texts()
        return texts[0] if texts else ''

    @property
    def turn(self) -> int:
        """How many answers the model has already given in this run (0 on the first request)."""
        return sum(isinstance(m, ModelResponse) for m in self.messages)

    def user_texts(self) -> list[str]:
        """Every user prompt, in order: the first is the prompt, later ones are notices injected into the run."""
        return [
            p.content
            for m in self.messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart) and isinstance(p.content, str)
        ]

    def returns(self, tool_name: str | None = None) -> list[str]:
        """What the tools replied, oldest first (only `tool_name`'s replies if given)."""
        return [
            p.model_response_str()
            for m in self.messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart) and (tool_name is None or p.tool_name == tool_name)
        ]

    def last_return(self, tool_name: str | None = None) -> str:
        """The latest tool reply (of `tool_name` if given), or `''`."""
        replies = self.returns(tool_name)
        return replies[-1] if replies else ''

    def task_ids(self) -> list[str]:
        """The IDs of the tasks this agent started (read from `task`'s replies), in order."""
        ids: list[str] = []
        for reply in self.returns('task'):
            # Async start, a sync task paused on a question or note, a sync task finished (its last line).
            match = re.search(r'Task started with ID: (\w+)|Task (\w+) paused|continue_task_id="(\w+)"\.\)$', reply)
            if match:
                ids.append(next(group for group in match.groups() if group))
        return ids

    @property
    def cancellation_requested(self) -> bool:
        """Whether a soft-cancel notice has reached this subagent."""
        return any('CANCELLATION REQUEST' in text for text in self.user_texts()[1:])

    def has_tool(self, name: str) -> bool:
        """Whether the agent is offered the tool `name` in this run."""
        return any(t.name == name for t in self.info.function_tools)


# ---------------------------------------------------------------------------------------------------- answering


def call(tool_name: str, **args: Any) -> ModelResponse:
    """An answer that calls one tool."""
    return ModelResponse(parts=[ToolCallPart(tool_name, args)])


def calls(*pairs: tuple[str, dict[str, Any]]) -> ModelResponse:
    """An answer that calls several tools at once (they run in parallel)."""
    return ModelResponse(parts=[ToolCallPart(name, args) for name, args in pairs])


def say(text: str) -> ModelResponse:
    """A plain text answer: the end of the run, unless a notice arrives."""
    return ModelResponse(parts=[TextPart(text)])


Decide = Callable[[History], ModelResponse | Awaitable[ModelResponse]]
Step = Callable[[History], ModelResponse]


def scripted_model(name: str, decide: Decide, *, delay: float = 0.0) -> FunctionModel:
    """A `FunctionModel` whose every answer is `decide(history)`, given after `delay` seconds of "thinking".

    It answers both plain and streamed requests, so it also works with `event_stream_handler` and `run_stream`.
    """

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if delay:
            await anyio.sleep(delay)
        answer = decide(History(messages, info))
        if not isinstance(answer, ModelResponse):
            answer = await answer
        return answer

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
        answer = await respond(messages, info)
        tool_calls = [p for p in answer.parts if isinstance(p, ToolCallPart)]
        if tool_calls:
            yield {
                i: DeltaToolCall(name=p.tool_name, json_args=p.args_as_json_str(), tool_call_id=p.tool_call_id)
                for i, p in enumerate(tool_calls)
            }
        else:
            text = ''.join(p.content for p in answer.parts if isinstance(p, TextPart))
            for word in re.findall(r'\S+\s*', text) or ['']:
                yield word

    return FunctionModel(respond, stream_function=stream, model_name=name)


def script(*steps: Step, final: str = 'Done.') -> FunctionModel:
    """A parent model that takes `steps` in order, one per turn; each step reads the history to fill in its call.

    A turn past the last step (a notice can wake the run once more) answers `final`.
    """

    def decide(h: History) -> ModelResponse:
        return steps[h.turn](h) if h.turn < len(steps) else say(final)

    return scripted_model('scripted-parent', decide)


# ---------------------------------------------------------------------------------------------------- the subagents

FACTS = (
    'tide pools form where rock holds seawater at low tide',
    'anemones close up to keep from drying out',
    'hermit crabs swap shells as they grow',
    'sea stars can regrow lost arms',
    'limpets return to the same spot on the rock after feeding',
    'mussels anchor themselves with strong threads',
    'sculpins are small fish that hide in pools',
    'the best time to visit is an hour before low tide',
)


async def search(query: str) -> str:
    """Search the field notes.

    Args:
        query: What to look for; end it with `#2`, `#3`, ... for further results.
    """
    words = {w.rstrip('s') for w in re.findall(r'[a-z]+', query.lower()) if len(w) > 3}
    ranked = sorted(FACTS, key=lambda fact: -len(words & {w.rstrip('s') for w in fact.split()}))
    number = re.search(r'#(\d+)', query)
    return ranked[(int(number.group(1)) - 1 if number else 0) % len(ranked)]


def search_toolset() -> FunctionToolset[Any]:
    """The researcher's one tool: `search`, which answers from a few canned field notes, best match first."""
    return FunctionToolset([search])


def researcher_model(*, searches: int = 2, delay: float = 0.05, stubborn: bool = False) -> FunctionModel:
    """A researcher: runs `searches` searches, then reports its findings.

    On a soft-cancel notice it reports what it has so far, unless it is `stubborn` and keeps searching.
    """

    def decide(h: History) -> ModelResponse:
        notes = h.returns('search')
        if h.cancellation_requested and not stubborn:
            done = '; '.join(notes) or 'nothing yet'
            return say(f'Stopped early. Completed {len(notes)} of {searches} searches: {done}. Not started: the rest.')
        if len(notes) < searches:
            return call('search', query=f'{h.prompt[:40]} #{len(notes) + 1}')
        return say('Findings: ' + '; '.join(notes) + '.')

    return scripted_model('scripted-researcher', decide, delay=delay)


def writer_model(*, delay: float = 0.05) -> FunctionModel:
    """A writer: asks who the text is for unless the task names an audience, then writes two sentences."""

    def decide(h: History) -> ModelResponse:
        if h.cancellation_requested:
            return say('Stopped early: only the opening line was drafted.')
        audience = re.search(r'for (?:an? |the )?([\w -]+? audience)', h.prompt)
        answer = h.last_return('ask_parent')
        if audience is None and not answer and h.has_tool('ask_parent'):
            return call('ask_parent', question='Who is the audience, and what tone should I use?')
        reader = audience.group(1) if audience else answer or 'everyone'
        if 'Notes:' in h.prompt:
            body = 'What we found: ' + h.prompt.split('Notes:', 1)[1].strip()
        else:
            body = 'Every low tide, crabs, anemones and sea stars wait there to be found.'
        return say(f'Draft (for {reader}): Step into a tide pool and you enter a small world of its own. {body}')

    return scripted_model('scripted-writer', decide, delay=delay)


# ---------------------------------------------------------------------------------------------------- printing


def section(title: str) -> None:
    """Print a section heading."""
    print(f'\n== {title} ==')


def short(value: Any, limit: int = 90) -> str:
    """`value` on one line, cut to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + '...'


def format_call(part: ToolCallPart) -> str:
    """A tool call as `name(arg='value', ...)`."""
    args = ', '.join(
        f'{k}={short(v, 60)!r}' if isinstance(v, str) else f'{k}={v!r}' for k, v in part.args_as_dict().items()
    )
    return f'{part.tool_name}({args})'


def format_event(event: TaskEvent) -> str:
    """A task event on one line: kind, task id prefix, subagent, status and the event's own detail."""
    detail = ''
    for name in ('description', 'question', 'cancel_kind', 'requested_by', 'result', 'error', 'partial_result'):
        value = getattr(event, name, None)
        if value:
            detail += f' {name}={short(str(value), 50)!r}'
    return f'{type(event).__name__:<20} {event.task_id[:8]} {event.subagent:<11} {event.status.value}{detail}'


def event_printer(
    *, clock: bool = False
) -> Callable[[RunContext[Any], AsyncIterator[AgentStreamEvent]], Awaitable[None]]:
    """An `event_stream_handler` that prints each tool call and reply as it happens, and any notice or task event.

    With `clock`, each line starts with the seconds since the run started.
    """
    starts: dict[str, float] = {}

    async def handler(ctx: RunContext[Any], events: AsyncIterator[AgentStreamEvent]) -> None:
        # The handler is called once per step of the run; the clock runs from the run's first step.
        start = starts.setdefault(ctx.run_id or '', time.monotonic())

        def show(line: str, more: bool = False) -> None:
            if not clock:
                print(f'  {line}')
            elif more:
                print(f'         {line}')
            else:
                print(f'  {time.monotonic() - start:5.2f}s {line}')

        async for event in events:
            if isinstance(event, FunctionToolCallEvent):
                show(f'-> {format_call(event.part)}')
            elif isinstance(event, FunctionToolResultEvent):
                lines = event.part.model_response_str().splitlines() or ['']
                show(f'<- {short(lines[0], 200)}')
                for line in lines[1:]:
                    show(f'   {short(line, 200)}', more=True)
            elif isinstance(event, EnqueuedMessagesEvent):
                for message in event.messages:
                    for part in message.parts:
                        if isinstance(part, TaskNotice):
                            show(f'(notice) {short(part.content, 200)}')
            elif isinstance(event, TaskEvent):
                show(f'[event] {format_event(event)}')

    return handler


print_events = event_printer()
"""Prints each tool call and reply of a run as it happens (see `event_printer`)."""


def print_table(manager: TaskManager) -> None:
    """Print every task of `manager` as a table: id prefix, subagent, depth, mode, status, requests, outcome."""
    print(f'{"id":<9} {"subagent":<20} {"depth":<5} {"mode":<5} {"status":<18} {"requests":<8} outcome')
    for r in manager.list():
        outcome = r.error or r.partial_result or (None if r.result is None else str(r.result)) or ''
        if r.cancel is not None:
            outcome = f'[{r.cancel.kind} cancel by {r.cancel.requested_by}] {outcome}'
        print(
            f'{r.id[:8]:<9} {r.subagent:<20} {r.depth:<5} {r.mode:<5} {r.status.value:<18} {r.usage.requests:<8} '
            f'{short(outcome, 60)}'
        )
