"""Test agents that delegate, offline: scripted subagents, and a parent that makes the tool calls you list.

No model is called and no API key is needed. A subagent built by
[`scripted_subagent`][pydantic_ai_subagents.testing.scripted_subagent] behaves like a well-understood LLM would:
it answers, asks its parent a question, works in steps until told to stop, ignores a soft cancel, or hangs inside
its model request. [`run_parent`][pydantic_ai_subagents.testing.run_parent] runs your parent agent on a scripted
model that makes the tool calls you give, one per turn, and returns what each tool replied and which notices
arrived: exactly what a real model would have read.

```python
from pydantic_ai import Agent
from pydantic_ai_subagents import create_subagent_toolset
from pydantic_ai_subagents.testing import call, run_parent, scripted_subagent


async def test_my_agent_delegates_research():
    subagents = create_subagent_toolset(
        [scripted_subagent('researcher', answer='Found 3 sources on {prompt}.')], general_purpose=False
    )
    agent = Agent(toolsets=[subagents])  # your agent; its model is replaced for the test run
    async with subagents:
        run = await run_parent(agent, [call('task', description='bicycles', subagent_type='researcher')])
    # A sync task's reply is its result, then a line with its id for a follow-up (`continue_task_id`).
    assert run.texts[0].startswith('Found 3 sources on bicycles.')
    assert run.task_ids == [subagents.manager.list()[0].id]
```

A step can also be a function of the run so far, to use a reply of an earlier call:
`lambda run: call('soft_cancel_task', task_id=run.task_ids[0])`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai import Agent
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset

from ._config import SubAgentConfig
from ._notices import TaskNotice
from ._run import SOFT_CANCEL_NOTICE
from ._tools import FOLLOW_UP

__all__ = ('ParentRun', 'Step', 'ToolReply', 'call', 'run_parent', 'scripted_subagent')

WORK_TOOL = 'work'
"""The tool a scripted subagent calls once per step of work."""

_TASK_STARTED = re.compile(r'Task started with ID: (\S+)|Task (\S+) paused')
"""The start of `task`'s reply for a task started in the background or paused on a question."""

_TASK_FINISHED = re.compile(
    re.escape(FOLLOW_UP.strip()).replace(re.escape('{task_id}'), r'(\S+?)', 1).replace(re.escape('{task_id}'), r'\1')
    + '$',
    re.MULTILINE,
)
"""The line after the result in `task`'s reply for a sync task that completed; the last such line is the real one."""


# ---------------------------------------------------------------------------------------------------- subagents


def scripted_subagent(
    name: str,
    *,
    answer: str = 'Done.',
    ask: str | None = None,
    steps: int | None = 0,
    step_seconds: float = 0.01,
    ignore_cancel: bool = False,
    stall: bool = False,
    partial: str = 'Stopped on request after {steps} step(s); the rest was not started.',
    **config: Any,
) -> SubAgentConfig:
    """A subagent whose model is a script: it answers, asks, works in steps, ignores a cancel or stalls.

    In order, the scripted model:

    1. with `stall=True`, hangs inside its first model request until the task is stopped (a hard cancel, the
       escalation after an unanswered soft cancel, or the timeout), like a provider that never responds;
    2. with `ask`, calls `ask_parent(question=ask)` and waits for the parent's answer;
    3. calls the `work` tool `steps` times (each call takes `step_seconds`), or without end if `steps` is `None`;
    4. replies `answer`.

    When the soft-cancel notice reaches it, it stops and replies `partial`, unless `ignore_cancel` is set: it
    then goes on working as if nothing had arrived, so the task only ends by escalation to a hard cancel.

    In `answer` and `partial`, `{prompt}` is replaced by the task's description, `{answer}` by the parent's answer
    to `ask`, and `{steps}` by the number of steps done; other braces are left as they are.

    Example:
        ```python
        writer = scripted_subagent('writer', ask='Who is it for?', answer='Draft for {answer}.')
        slow = scripted_subagent('slow', steps=None)  # works until soft-cancelled, then reports progress
        stuck = scripted_subagent('stuck', stall=True, timeout=0.5)  # ends FAILED after half a second
        ```

    The model and its `work` tool live in this process: such a subagent cannot use `isolation='process'`.

    Args:
        name: The subagent's name (what the parent types as `subagent_type`).
        answer: The final reply.
        ask: A question to ask the parent first, through `ask_parent`.
        steps: How many `work` calls to make before answering; `None` for as many as it takes to be stopped.
        step_seconds: How long each `work` call takes.
        ignore_cancel: Whether to go on working after the soft-cancel notice.
        stall: Whether to hang in the first model request until the task is stopped.
        partial: The reply to the soft-cancel notice.
        **config: Other [`SubAgentConfig`][pydantic_ai_subagents.SubAgentConfig] fields (`description`,
            `timeout`, `toolsets`, ...). `model` and `agent` are not accepted: the script is the model.

    Returns:
        The subagent's config.
    """
    for taken in ('model', 'agent'):
        if taken in config:
            raise TypeError(f'scripted_subagent({name!r}): `{taken}` is the script itself and cannot be given')
    if steps is not None and steps < 0:
        raise ValueError(f'scripted_subagent({name!r}): steps must be >= 0 or None, got {steps}')
    if ask is not None and not config.get('can_ask_questions', True):
        raise ValueError(f'scripted_subagent({name!r}): `ask` needs can_ask_questions=True')
    script = _SubagentScript(
        answer=answer,
        ask=ask,
        steps=steps,
        ignore_cancel=ignore_cancel,
        stall=stall,
        partial=partial,
    )
    toolsets = [*config.pop('toolsets', ()), _work_toolset(step_seconds)]
    config.setdefault('description', f'Scripted subagent {name}.')
    return SubAgentConfig(name=name, model=script.model(name), toolsets=toolsets, **config)


def _work_toolset(step_seconds: float) -> FunctionToolset[Any]:
    async def work(step: int) -> str:
        """Do one step of the task.

        Args:
            step: The step's number, from 1.
        """
        await anyio.sleep(step_seconds)
        return f'step {step} done'

    return FunctionToolset([work], id='scripted-subagent-work')


@dataclass(kw_only=True)
class _SubagentScript:
    answer: str
    ask: str | None
    steps: int | None
    ignore_cancel: bool
    stall: bool
    partial: str

    async def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompts = _user_prompts(messages)
        prompt = prompts[0] if prompts else ''
        done = len(_returns(messages, WORK_TOOL))
        parent_answers = _returns(messages, 'ask_parent')
        values = {'prompt': prompt, 'steps': str(done), 'answer': parent_answers[-1] if parent_answers else ''}
        if self.stall:
            await anyio.sleep_forever()
        cancelled = any(SOFT_CANCEL_NOTICE in p for p in prompts[1:])
        if cancelled and not self.ignore_cancel:
            return _say(_fill(self.partial, values))
        if self.ask is not None and not parent_answers:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': self.ask})])
        if self.steps is None or done < self.steps:
            return ModelResponse(parts=[ToolCallPart(WORK_TOOL, {'step': done + 1})])
        return _say(_fill(self.answer, values))

    def model(self, name: str) -> FunctionModel:
        return FunctionModel(self.respond, stream_function=_streamed(self.respond), model_name=f'scripted-{name}')


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace('{' + key + '}', value)
    return template


# ---------------------------------------------------------------------------------------------------- the parent


@dataclass(kw_only=True)
class ToolReply:
    """One tool call of the parent and what its model read back."""

    tool_name: str
    """The tool called."""
    args: dict[str, Any]
    """The arguments it was called with."""
    content: str
    """The reply as the model read it: the tool's return value as text, or the retry prompt."""
    retry: bool = False
    """Whether the tool asked the model to try again (a `ModelRetry` or invalid arguments) instead of returning."""


@dataclass(kw_only=True)
class ParentRun:
    """What the parent's model saw during [`run_parent`][pydantic_ai_subagents.testing.run_parent]."""

    replies: list[ToolReply] = field(default_factory=list[ToolReply])
    """Every tool call's reply, in the order of the calls."""
    notices: list[str] = field(default_factory=list[str])
    """Messages put into the run besides the prompt: the content of each
    [`TaskNotice`][pydantic_ai_subagents.TaskNotice] (a background task finished or asks), and any user text
    enqueued."""
    output: Any = None
    """The run's output (the scripted model's final text), once the run has ended."""
    messages: list[ModelMessage] = field(default_factory=list[ModelMessage])
    """The run's whole conversation."""

    @property
    def texts(self) -> list[str]:
        """The replies' contents, in order."""
        return [r.content for r in self.replies]

    @property
    def task_ids(self) -> list[str]:
        """The IDs of the tasks the parent started, in order: from `task`'s replies (started, paused or finished)."""
        ids: list[str] = []
        for reply in self.replies:
            if reply.tool_name != 'task':
                continue
            finished = [*_TASK_FINISHED.finditer(reply.content)]
            if match := _TASK_STARTED.match(reply.content) or (finished[-1] if finished else None):
                ids.append(next(group for group in match.groups() if group))
        return ids

    def reply(self, tool_name: str, index: int = -1) -> str:
        """The content of a reply of `tool_name`: the last one, or the one at `index` among that tool's replies."""
        return [r.content for r in self.replies if r.tool_name == tool_name][index]


Step = ToolCallPart | Sequence[ToolCallPart] | Callable[[ParentRun], ToolCallPart | Sequence[ToolCallPart]]
"""One turn of the parent: a tool call, several at once (they run in parallel), or a function of the run so far
that returns them."""


def call(tool_name: str, /, **args: Any) -> ToolCallPart:
    """A tool call for a step of [`run_parent`][pydantic_ai_subagents.testing.run_parent].

    Example:
        `call('task', description='Find sources', subagent_type='researcher', mode='async')`
    """
    return ToolCallPart(tool_name, args)


async def run_parent(
    parent: AbstractAgent[Any, Any] | AbstractToolset[Any],
    steps: Sequence[Step],
    *,
    prompt: str = 'Go.',
    final: str = 'Done.',
    deps: Any = None,
    **run_options: Any,
) -> ParentRun:
    """Run a parent agent on a scripted model that takes `steps`, one per turn, then answers `final`.

    The parent's own model is replaced for this run only. A turn that the run takes because a message arrived
    (a background task's notice) also takes the next step, as a real model would answer it.

    Example:
        ```python
        run = await run_parent(
            agent,
            [
                call('task', description='Find sources', subagent_type='researcher', mode='async'),
                lambda run: call('wait_tasks', task_ids=run.task_ids),
            ],
        )
        assert 'COMPLETED' in run.reply('wait_tasks')
        ```

    Args:
        parent: Your agent, or a toolset (such as the one `create_subagent_toolset` returns) to put on a bare one.
            Closing the toolset's manager is left to you (`async with toolset:`).
        steps: The tool calls to make, in order.
        prompt: The user prompt of the run.
        final: The text the scripted model answers once the steps are taken.
        deps: The run's dependencies.
        **run_options: Other arguments of `Agent.run` (`usage_limits`, ...).

    Returns:
        What the parent's model read: each tool's reply, the notices, the output and the messages.
    """
    agent = parent if isinstance(parent, AbstractAgent) else Agent(name='parent', toolsets=[parent])
    todo = list(steps)

    async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turn = sum(isinstance(m, ModelResponse) for m in messages)
        if turn >= len(todo):
            return _say(final)
        step = todo[turn]
        if callable(step):
            step = step(_read(messages))
        parts = [step] if isinstance(step, ToolCallPart) else list(step)
        return ModelResponse(parts=list(parts))

    model = FunctionModel(respond, stream_function=_streamed(respond), model_name='scripted-parent')
    result = await agent.run(prompt, model=model, deps=deps, **run_options)
    run = _read(result.all_messages())
    run.output = result.output
    return run


def _read(messages: list[ModelMessage]) -> ParentRun:
    calls: dict[str, ToolCallPart] = {}
    run = ParentRun(messages=list(messages))
    first_prompt = True
    for message in messages:
        if isinstance(message, ModelResponse):
            calls.update((p.tool_call_id, p) for p in message.parts if isinstance(p, ToolCallPart))
            continue
        for part in message.parts:
            if isinstance(part, ToolReturnPart) and part.tool_call_id in calls:
                made = calls[part.tool_call_id]
                run.replies.append(
                    ToolReply(
                        tool_name=made.tool_name,
                        args=made.args_as_dict(),
                        content=part.model_response_str(),
                        retry=part.outcome == 'retried',
                    )
                )
            elif isinstance(part, TaskNotice):
                run.notices.append(part.content)
            elif isinstance(part, UserPromptPart) and isinstance(part.content, str):
                if first_prompt:
                    first_prompt = False
                else:
                    run.notices.append(part.content)
    return run


# ---------------------------------------------------------------------------------------------------- shared


def _say(text: str) -> ModelResponse:
    return ModelResponse(parts=[TextPart(text)])


def _user_prompts(messages: list[ModelMessage]) -> list[str]:
    return [
        p.content
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, UserPromptPart) and isinstance(p.content, str)
    ]


def _returns(messages: list[ModelMessage], tool_name: str) -> list[str]:
    return [
        p.model_response_str()
        for m in messages
        if isinstance(m, ModelRequest)
        for p in m.parts
        if isinstance(p, ToolReturnPart) and p.tool_name == tool_name
    ]


Respond = Callable[[list[ModelMessage], AgentInfo], Awaitable[ModelResponse]]


def _streamed(
    respond: Respond,
) -> Callable[[list[ModelMessage], AgentInfo], AsyncIterator[str | dict[int, DeltaToolCall]]]:
    """The streamed form of a scripted model, for runs that stream (`run_stream`, forwarded subagent events)."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | dict[int, DeltaToolCall]]:
        response = await respond(messages, info)
        tool_calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
        if tool_calls:
            yield {
                i: DeltaToolCall(name=p.tool_name, json_args=p.args_as_json_str(), tool_call_id=p.tool_call_id)
                for i, p in enumerate(tool_calls)
            }
        else:
            yield ''.join(p.content for p in response.parts if isinstance(p, TextPart))

    return stream
