"""What every executor shares: how outputs and errors read for a model, the `ask_parent` tool and the task tracker.

Every call of a subagent's tool is guarded: a `BaseException` it raises (a `SystemExit`, a stray `CancelledError`)
is turned into an ordinary error of that tool call, so it ends this task `FAILED` and never reaches the event loop,
the manager or another task; a plain `def` tool is noted while it runs in a thread (a stop cannot end a thread).
The tracker capability, added to a run only where needed, takes each model request from the tree's budget ledger.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.tools import RunContext, Tool, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset, ToolsetTool, WrapperToolset
from pydantic_core import to_json

from .._config import SubAgentConfig, build_agent
from .._state import TaskUsage
from ._protocol import TaskJob, current_task

__all__ = (
    'ASK_PARENT_TOOLSET',
    'SOFT_CANCEL_NOTICE',
    'TaskCrashedError',
    'TaskTracker',
    'partial_from_messages',
    'render_output',
    'safe_error',
    'sync_tool_names',
    'task_agent',
    'usage_snapshot',
)

SOFT_CANCEL_NOTICE = (
    'CANCELLATION REQUEST: your parent asked you to stop this task now. Do not start new work or call more tools. '
    'Reply at once with: what you completed, what was in progress, what was not started, and any findings so far.'
)


class TaskCrashedError(Exception):
    """A tool or model of a subagent raised a `BaseException` (not an `Exception`); it ends that task only."""

    def __init__(self, where: str, error: BaseException) -> None:
        self.error = error
        super().__init__(f'{where} raised {type(error).__name__}' + (f': {error}' if str(error) else ''))


def is_real_cancel(error: BaseException) -> bool:
    """Whether `error` is a cancellation of the current task from outside, not one a tool let escape."""
    if not isinstance(error, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def contain(where: str, error: BaseException) -> BaseException:
    """What to raise in place of `error` inside a subagent run: itself if it must propagate, else an `Exception`."""
    if isinstance(error, Exception) or is_real_cancel(error) or isinstance(error, GeneratorExit):
        return error
    return TaskCrashedError(where, error)


def render_output(output: Any) -> str:
    """A subagent's output as text for a model: strings as they are, anything else as JSON, else its text form.

    An output that cannot be turned into JSON (it refers to itself, holds bytes that are not text, ...) is shown as
    its `repr`: it never fails the parent's tool call.
    """
    if isinstance(output, str):
        return output
    try:
        return to_json(output, fallback=repr).decode()
    except Exception:
        try:
            return repr(output)
        except Exception:
            return f'<a {type(output).__name__} that cannot be shown as text>'


def partial_from_messages(messages: Sequence[ModelMessage], limit: int = 4000) -> str | None:
    """What can be recovered from a stopped run's transcript: its last text and the tool results after it."""
    last_text: str | None = None
    tool_results: list[str] = []
    for message in reversed(messages):
        if isinstance(message, ModelResponse):
            text = ''.join(p.content for p in message.parts if isinstance(p, TextPart)).strip()
            if text:
                last_text = text
                break
        else:
            for part in message.parts:
                if isinstance(part, ToolReturnPart) and part.outcome == 'success':
                    tool_results.append(f'{part.tool_name}: {part.model_response_str()}')
    pieces: list[str] = []
    if last_text:
        pieces.append(last_text)
    if tool_results:
        pieces.append('Tool results: ' + '; '.join(reversed(tool_results)))
    if not pieces:
        return None
    text = '\n'.join(pieces)
    return text if len(text) <= limit else text[:limit] + ' [...]'


def safe_error(error: BaseException, limit: int = 500) -> str:
    """An error as one line for a model: the type and message, no traceback, secrets-looking tokens masked.

    Masked: the user and password of a URL (`postgresql://user:pw@host` keeps `postgresql://[redacted]@host`),
    provider keys (`sk-...`, GitHub's `ghp_`/`ghs_`/`github_pat_`, Slack's, AWS key ids), `Authorization` header
    values and bearer tokens, JWTs, and values given for names like `password`, `token` or `api_key`.
    """
    text = str(error) if isinstance(error, TaskCrashedError) else f'{type(error).__name__}: {error}'
    text = mask_secrets(text.replace('\n', ' ').strip())
    return text if len(text) <= limit else text[:limit] + ' [...]'


def mask_secrets(text: str) -> str:
    """`text` with whatever looks like a credential replaced by `[redacted]` (see `safe_error`)."""
    return _SECRET.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    scheme = match.group('scheme')
    return '[redacted]' if scheme is None else f'{scheme}[redacted]@'


_SECRET = re.compile(
    r'(?i)('
    r'(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#]+@'  # the user and password of a URL
    r'|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*'  # JWTs (their header is base64 JSON: `{"`)
    r'|\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{8,}'  # GitHub tokens
    r'|\b(?:sk|pk|rk|xox[bapre])[-_][A-Za-z0-9_-]{8,}'  # provider-style keys
    r'|\b(?:proxy-)?authorization[\'"]?\s*[=:]\s*[\'"]?(?:[a-z-]+\s+)?[^\s\'",}]+'  # Authorization: Basic ...
    r'|\bbearer\s+[A-Za-z0-9._~+/=-]{8,}'  # a bearer token, alone
    r'|\bAKIA[0-9A-Z]{12,}'  # AWS access key ids
    r'|[\'"]?[\w-]*(?:api[_-]?key|token|secret|password|passwd|credential)[\w-]*[\'"]?\s*[=:]\s*[\'"]?[^\s\'",}]+'
    r')'
)


def usage_snapshot(job: TaskJob) -> TaskUsage:
    """The state module's plain copy of a task's usage."""
    usage = job.usage
    return TaskUsage(
        requests=usage.requests,
        tool_calls=usage.tool_calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )


def sync_tool_names(toolsets: Sequence[AbstractToolset[Any]]) -> frozenset[str]:
    """Names of the plain (non-async) function tools: those Pydantic AI runs in a worker thread."""
    names: set[str] = set()
    for toolset in toolsets:
        if isinstance(toolset, FunctionToolset):
            for name, tool in toolset.tools.items():
                if not inspect.iscoroutinefunction(tool.function):
                    names.add(name)
    return frozenset(names)


async def _guarded_call(job: TaskJob | None, name: str, sync: bool, call: Callable[[], Awaitable[Any]]) -> Any:
    """Call a subagent's tool: note it while it runs in a thread, and keep a `BaseException` inside the task."""
    inflight = job.inflight_sync_tools if job is not None and sync else None
    if inflight is not None:
        inflight[name] = inflight.get(name, 0) + 1
    try:
        return await call()
    except BaseException as e:
        raise contain(f'tool {name!r}', e) from e
    finally:
        if inflight is not None:
            inflight[name] -= 1
            if not inflight[name]:
                del inflight[name]


@dataclass
class ContainedToolset(WrapperToolset[Any]):
    """A subagent's own toolset, built into its agent: each call is guarded (see `_guarded_call`).

    Built into the agent rather than added per run: a capability per run costs each run two more asyncio tasks.
    """

    sync_tools: frozenset[str] = frozenset()

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        return await _guarded_call(
            current_task.get(),
            name,
            name in self.sync_tools,
            lambda: self.wrapped.call_tool(name, tool_args, ctx, tool),
        )


def contained(toolset: AbstractToolset[Any]) -> ContainedToolset:
    """Wrap one of a subagent's toolsets so that its calls are guarded."""
    return ContainedToolset(wrapped=toolset, sync_tools=sync_tool_names([toolset]))


@dataclass
class TaskTracker(AbstractCapability[Any]):
    """Per run, where needed: the tree's request budget, and guarded tool calls for a ready agent's own tools."""

    job: TaskJob
    sync_tools: frozenset[str] = frozenset()

    async def wrap_model_request(self, ctx: RunContext[Any], *, request_context: Any, handler: Any) -> Any:
        ledger = self.job.ledger
        if ledger is not None:
            ledger.acquire()
        return await handler(request_context)

    async def wrap_tool_execute(
        self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: ToolDefinition, args: Any, handler: Any
    ) -> Any:
        name = tool_def.name
        return await _guarded_call(self.job, name, name in self.sync_tools, lambda: handler(args))


async def _ask_parent(question: str) -> str:
    """Ask your parent agent a question and wait for the answer. Use it only when you cannot go on without it.

    Args:
        question: The question, self-contained.
    """
    if not question.strip():
        raise ModelRetry('The question is empty: write the question you need answered.')
    job = current_task.get()
    if job is None or job.observer is None:
        raise ModelRetry('No parent can be asked here: go on with your best judgement.')
    return await job.observer.ask(question)


class AskParentTool(Tool[Any]):
    """The `ask_parent` tool, its definition made once, as the model receives it.

    Pydantic AI makes a tool's definition on each listing of a run's tools; for a tool that returns a string it
    carries a return schema, which each model request then copies the definition to drop (a return schema is sent
    only where asked for), and the run copies it once more to stamp its toolset's id. This one's definition has no
    return schema and has its toolset's id from the start, so a run uses it as it is. Nothing in it is per task:
    the tool finds its task through the `current_task` context variable. Being one object, it is the same for every
    run: a `prepare_tools` that changed tool definitions in place, not with `replace` as Pydantic AI does, would
    change it for later runs too.
    """

    def __init__(self) -> None:
        super().__init__(_ask_parent, name='ask_parent', max_retries=2)
        self._toolset_id: str | None = None
        self._definition: ToolDefinition | None = None

    def owned_by(self, toolsets: Sequence[AbstractToolset[Any]]) -> None:
        """Take the id of the toolset among `toolsets` that holds this tool: its definition is made again with it."""
        for toolset in toolsets:
            if isinstance(toolset, FunctionToolset) and toolset.tools.get(self.name) is self:
                self._toolset_id = toolset.id
                self._definition = None

    @property
    def tool_def(self) -> ToolDefinition:
        definition = self._definition
        if definition is None:
            definition = replace(super().tool_def, return_schema=None, toolset_id=self._toolset_id)
            self._definition = definition
        return definition


_SHARED_ASK_PARENT = AskParentTool()
ASK_PARENT_TOOLSET: FunctionToolset[Any] = FunctionToolset([_SHARED_ASK_PARENT], id='pydantic-ai-subagents-ask-parent')
"""The `ask_parent` tool, built once and shared, for a ready agent (which is never changed)."""
_SHARED_ASK_PARENT.owned_by([ASK_PARENT_TOOLSET])

_AGENTS_THAT_ASK: weakref.WeakValueDictionary[int, Agent[Any, Any]] = weakref.WeakValueDictionary()


def task_agent(config: SubAgentConfig) -> Agent[Any, Any]:
    """The agent that runs a config's tasks. One built here has `ask_parent` among its own tools (when allowed).

    Rather than in a toolset passed to each run: Pydantic AI runs the per-step calls of a run's toolsets (listing
    tools, instructions) in a task each as soon as there are two toolsets, which doubles a short run's asyncio tasks.
    A ready agent from the config (`config.agent`) belongs to the user and is never changed: it gets the toolset.
    """
    if config.agent is not None:
        return config.agent
    tool = AskParentTool() if config.can_ask_questions else None
    agent = build_agent(
        replace(config, toolsets=[contained(t) for t in config.toolsets]), tools=() if tool is None else (tool,)
    )
    if tool is not None:
        tool.owned_by(agent.toolsets)
        _AGENTS_THAT_ASK[id(agent)] = agent
    return agent


def needs_ask_toolset(job: TaskJob) -> bool:
    """Whether the job's agent lacks its own `ask_parent` tool and so needs the shared toolset."""
    return job.config.can_ask_questions and _AGENTS_THAT_ASK.get(id(job.agent)) is not job.agent
