"""Running one delegation case: the parent model, its runs, and what they did (the trajectory).

A case is a [`Scenario`][evals.harness.Scenario]: the user's messages (one per parent run), the subagents with their
scripted models, and the moves of the scripted stand-in. [`play`][evals.harness.play] runs it under a deadline
and never raises for what the parent model does: a run that fails (a retry limit, a usage limit, the deadline) is
recorded in [`CaseOutput.error`][evals.harness.CaseOutput.error] next to everything it did before, so the
evaluators can say what went wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic_ai import Agent, capture_run_messages
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    ModelResponsePart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, infer_model
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext, ToolDefinition
from pydantic_ai.usage import UsageLimits

from pydantic_ai_subagents import SubAgentConfig, SubAgentToolset, create_subagent_toolset

__all__ = (
    'MAX_REPEATS',
    'MAX_TOOL_CALLS',
    'PARENT_INSTRUCTIONS',
    'PARENT_REQUEST_LIMIT',
    'CaseOutput',
    'Looping',
    'ParentModel',
    'RunOutput',
    'Scenario',
    'StandIn',
    'ToolCall',
    'View',
    'parent_model_from_env',
    'play',
)

PARENT_INSTRUCTIONS = (
    'You are an assistant that delegates work to subagents with your tools. '
    'When the work is done, answer the user briefly with what the subagents found.'
)
"""The parent's own instructions in every case (the toolset adds its own)."""

PARENT_REQUEST_LIMIT = 30
"""Model requests one case may make, the subagents' included: a model that loops is stopped, not waited out."""

MAX_TOOL_CALLS = 12
"""Tool calls the parent may make in one case; no case needs more than five."""

MAX_REPEATS = 3
"""The same call (tool and arguments) this many times in a row ends the case: the model is looping."""


class Looping(Exception):
    """The parent repeats itself or flails: the case is stopped (a slow model would otherwise loop until timeout)."""


@dataclass
class _LoopGuard(AbstractCapability[Any]):
    """Stops a run whose model makes the same tool call `MAX_REPEATS` times in a row, or too many calls."""

    calls: list[str] = field(default_factory=list[str])

    async def wrap_tool_execute(
        self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: ToolDefinition, args: Any, handler: Any
    ) -> Any:
        self.calls.append(f'{call.tool_name}({call.args_as_json_str()})')
        if len(self.calls) > MAX_TOOL_CALLS:
            raise Looping(f'stopped: more than {MAX_TOOL_CALLS} tool calls')
        if len(self.calls) >= MAX_REPEATS and len(set(self.calls[-MAX_REPEATS:])) == 1:
            raise Looping(f'stopped: the same call {MAX_REPEATS} times in a row: {self.calls[-1][:200]}')
        return await handler(args)


# ----------------------------------------------------------------------------------------------- the parent model


@dataclass(kw_only=True)
class ParentModel:
    """The model under evaluation, or the scripted stand-in when `model` is `None`."""

    name: str
    """How the report names it."""
    model: Model | None = None
    """The model; `None` means each case's scripted stand-in."""
    settings: ModelSettings = field(default_factory=lambda: ModelSettings())
    """Model settings for every parent request (temperature 0 for a real model)."""
    case_timeout: float = 10.0
    """Seconds one case may take, all its runs included."""
    work_seconds: float = 0.2
    """How long a slow scripted subagent works (per step): long enough that a parent who does not wait misses it."""

    @property
    def scripted(self) -> bool:
        """Whether this is the scripted stand-in."""
        return self.model is None


def parent_model_from_env(env: dict[str, str] | None = None) -> ParentModel:
    """The parent model the environment names.

    - `SUBAGENTS_EVAL_MODEL`: a Pydantic AI model string (`openai:gpt-4o`, `anthropic:...`), or
      `openai-compatible:<base_url>` for any OpenAI-compatible server; unset or `scripted`: the scripted stand-in.
    - `SUBAGENTS_EVAL_BASE_URL`: the same as `SUBAGENTS_EVAL_MODEL=openai-compatible:<base_url>`.
    - `SUBAGENTS_EVAL_MODEL_NAME`: the model name to send to an OpenAI-compatible server (default: the first one its
      `/models` lists). `SUBAGENTS_EVAL_API_KEY` is its key (default `local`).
    - `SUBAGENTS_EVAL_CASE_TIMEOUT` (seconds per case, default 150 for a real model),
      `SUBAGENTS_EVAL_WORK_SECONDS` (default 10 for a real model) and `SUBAGENTS_EVAL_MAX_TOKENS` (per response,
      default 200: a tool call takes about 50).
    """
    env = dict(os.environ) if env is None else env
    spec = env.get('SUBAGENTS_EVAL_MODEL', '').strip()
    base_url = env.get('SUBAGENTS_EVAL_BASE_URL', '').strip()
    if spec.startswith('openai-compatible:'):
        base_url = spec.removeprefix('openai-compatible:')
        spec = ''
    if (not spec and not base_url) or spec == 'scripted':
        return ParentModel(name='scripted stand-in')
    case_timeout = float(env.get('SUBAGENTS_EVAL_CASE_TIMEOUT', '150'))
    work_seconds = float(env.get('SUBAGENTS_EVAL_WORK_SECONDS', '10'))
    settings = ModelSettings(temperature=0.0, max_tokens=int(env.get('SUBAGENTS_EVAL_MAX_TOKENS', '200')))
    if base_url:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        api_key = env.get('SUBAGENTS_EVAL_API_KEY', 'local')
        name = env.get('SUBAGENTS_EVAL_MODEL_NAME', '').strip() or _first_served_model(base_url, api_key)
        model: Model = OpenAIChatModel(name, provider=OpenAIProvider(base_url=base_url, api_key=api_key))
        return ParentModel(
            name=f'{name} at {base_url}',
            model=model,
            settings=settings,
            case_timeout=case_timeout,
            work_seconds=work_seconds,
        )
    return ParentModel(
        name=spec, model=infer_model(spec), settings=settings, case_timeout=case_timeout, work_seconds=work_seconds
    )


def _first_served_model(base_url: str, api_key: str) -> str:
    import httpx

    response = httpx.get(f'{base_url.rstrip("/")}/models', headers={'Authorization': f'Bearer {api_key}'}, timeout=10)
    response.raise_for_status()
    return str(response.json()['data'][0]['id'])


# ----------------------------------------------------------------------------------------------- the stand-in


@dataclass
class View:
    """What the stand-in has read so far in the current run, as a model would see it."""

    replies: list[str]
    """Every tool reply of the run so far (a refused call's is the reason it was refused), oldest first."""
    prompts: list[str]
    """Every user prompt of the run so far, and the content of the task notices the toolset enqueued."""
    earlier: list[str] = field(default_factory=list[str])
    """The tool replies of the conversation's earlier runs (in the history a model reads)."""

    @property
    def last(self) -> str:
        """The latest tool reply."""
        return self.replies[-1] if self.replies else ''

    def ids(self) -> list[str]:
        """The task IDs the replies and notices have mentioned, earlier runs' included, in order of first mention."""
        found: dict[str, None] = {}
        for text in (*self.earlier, *self.prompts, *self.replies):
            for match in _ID.finditer(text):
                found[match.group(1) or match.group(2)] = None
        return list(found)


_ID = re.compile(r'\b([0-9a-f]{16,})\b|ID:?\s*[\'"]?([A-Za-z0-9_-]{6,})')

Move = Callable[[View], Sequence[ModelResponsePart]]


@dataclass
class StandIn:
    """The scripted stand-in's play for one run: its tool-call moves in order, then its answer."""

    moves: Sequence[Move]
    """Turn `n` of the run answers with `moves[n](view)`."""
    answer: Callable[[View], str]
    """The final answer, written from what the run has read."""

    def model(self) -> FunctionModel:
        """A scripted model that plays these moves."""

        async def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
            turn = sum(1 for m in messages if isinstance(m, ModelResponse) and m.run_id == messages[-1].run_id)
            view = _view(messages)
            if turn < len(self.moves):
                return ModelResponse(parts=list(self.moves[turn](view)))
            return ModelResponse(parts=[TextPart(self.answer(view))])

        return FunctionModel(respond, model_name='stand-in')


def _view(messages: list[ModelMessage]) -> View:
    run_id = messages[-1].run_id
    replies: list[str] = []
    prompts: list[str] = []
    earlier: list[str] = []
    for message in messages:
        if not isinstance(message, ModelRequest):
            continue
        if message.run_id != run_id:
            earlier.extend(p.model_response_str() for p in message.parts if isinstance(p, ToolReturnPart))
            continue
        for part in message.parts:
            if isinstance(part, ToolReturnPart):
                replies.append(part.model_response_str())
            elif isinstance(part, UserPromptPart):
                # What the model reads: a prompt, or a task notice framed in its tag (a list of text items).
                content = part.content
                if not isinstance(content, str):
                    content = ''.join(
                        item if isinstance(item, str) else getattr(item, 'content', '') for item in content
                    )
                prompts.append(content)
    return View(replies=replies, prompts=prompts, earlier=earlier)


# ----------------------------------------------------------------------------------------------- cases and outputs


@dataclass(kw_only=True)
class Scenario:
    """One delegation case: what the user asks, who the subagents are, and how a good model plays it."""

    name: str
    """The case name."""
    prompts: Sequence[str]
    """The user's messages, one per parent run of the same conversation."""
    subagents: Callable[[float], Sequence[SubAgentConfig]]
    """The subagents, with scripted models; the argument is the work time of a slow subagent, in seconds."""
    stand_in: Sequence[StandIn]
    """The stand-in's play, one per run."""
    between_runs: Callable[[SubAgentToolset], Awaitable[None]] | None = None
    """Called between two runs of the conversation (to let background tasks finish, say)."""


@dataclass(kw_only=True)
class ToolCall:
    """One tool call of the parent and what came back."""

    tool: str
    args: dict[str, Any]
    reply: str | None = None
    """The tool's reply; `None` if none came back (the run stopped first)."""
    retry: bool = False
    """Whether the call was refused and the model asked to try again (an unknown subagent, bad arguments)."""
    run: int = 0
    """Which run of the conversation made it."""


@dataclass(kw_only=True)
class RunOutput:
    """One parent run: its answer and its model usage."""

    answer: str | None
    said: list[str] = field(default_factory=list[str])
    """Every text the model wrote in the run, in order (an early answer that a notice then redirected included)."""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(kw_only=True)
class CaseOutput:
    """What a case did: the trajectory across its runs, the final answer, what became of the tasks."""

    calls: list[ToolCall] = field(default_factory=list[ToolCall])
    runs: list[RunOutput] = field(default_factory=list[RunOutput])
    error: str | None = None
    """Why the case did not end with an answer (an exception of the run, or the case's deadline)."""
    tasks: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    """Every task the case started, as it was at the end: subagent, mode, status, cancel kind, the task it continues."""

    @property
    def answer(self) -> str:
        """The answer of the last run (empty if it gave none)."""
        return (self.runs[-1].answer or '') if self.runs else ''

    @property
    def input_tokens(self) -> int:
        """The parent model's input tokens across runs."""
        return sum(r.input_tokens for r in self.runs)

    @property
    def output_tokens(self) -> int:
        """The parent model's output tokens across runs."""
        return sum(r.output_tokens for r in self.runs)

    @property
    def requests(self) -> int:
        """The parent model's requests across runs."""
        return sum(r.requests for r in self.runs)


async def play(scenario: Scenario, parent: ParentModel) -> CaseOutput:
    """Run a scenario's conversation against the parent model, under the parent's per-case deadline."""
    output = CaseOutput()
    toolset = create_subagent_toolset(scenario.subagents(parent.work_seconds), general_purpose=False)
    history: list[ModelMessage] = []
    guard = _LoopGuard()
    try:
        async with toolset:
            with anyio.fail_after(parent.case_timeout):
                for index, prompt in enumerate(scenario.prompts):
                    if index and scenario.between_runs is not None:
                        await scenario.between_runs(toolset)
                    model = scenario.stand_in[index].model() if parent.model is None else parent.model
                    agent = Agent(model, instructions=PARENT_INSTRUCTIONS, toolsets=[toolset], capabilities=[guard])
                    with capture_run_messages() as messages:
                        try:
                            result = await agent.run(
                                prompt,
                                message_history=history,
                                model_settings=parent.settings,
                                usage_limits=UsageLimits(request_limit=PARENT_REQUEST_LIMIT),
                            )
                        finally:
                            _record(output, messages[len(history) :], index)
                    history = result.all_messages()
                    output.runs[-1].answer = result.output
            output.tasks = [
                {
                    'subagent': r.subagent,
                    'mode': r.mode,
                    'status': r.status.value,
                    'cancel': None if r.cancel is None else f'{r.cancel.kind} by {r.cancel.requested_by}',
                    'continued_from': r.continued_from,
                }
                for r in toolset.manager.list()
            ]
    except TimeoutError:
        output.error = f'timed out after {parent.case_timeout:g} s'
    except Exception as e:
        output.error = f'{type(e).__name__}: {e}'
    return output


def _record(output: CaseOutput, messages: Sequence[ModelMessage], run: int) -> None:
    stats = RunOutput(answer=None)
    pending: dict[str, ToolCall] = {}
    for message in messages:
        if isinstance(message, ModelResponse):
            stats.requests += 1
            stats.input_tokens += message.usage.input_tokens
            stats.output_tokens += message.usage.output_tokens
            said = ''.join(p.content for p in message.parts if isinstance(p, TextPart)).strip()
            if said:
                stats.said.append(said)
            for part in message.parts:
                if isinstance(part, ToolCallPart):
                    call = ToolCall(tool=part.tool_name, args=_args(part), run=run)
                    output.calls.append(call)
                    pending[part.tool_call_id] = call
        else:
            for part in message.parts:
                if isinstance(part, ToolReturnPart) and (call := pending.get(part.tool_call_id)) is not None:
                    call.reply = part.model_response_str()
                    call.retry = part.outcome != 'success'
    output.runs.append(stats)


def _args(part: ToolCallPart) -> dict[str, Any]:
    try:
        return part.args_as_dict()
    except (ValueError, TypeError, json.JSONDecodeError):
        return {'_raw': part.args_as_json_str()}
