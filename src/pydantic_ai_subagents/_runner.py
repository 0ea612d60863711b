"""Runs one subagent task on Pydantic AI: the only module that drives an agent run.

One task is one `Agent.iter` run with its own [`CancellationToken`][pydantic_ai.CancellationToken] and its own
[`RunUsage`][pydantic_ai.usage.RunUsage] (so a child's budget is its own), rolled up into the parent's usage when it
ends. The runner owns the translation of how the run ended into exactly one terminal state:

- the run returns: `COMPLETED`, or `CANCELLED` with the output as partial result if a soft cancel was requested;
- `RunCancelled` after a hard cancel: `CANCELLED` (after an escalated soft cancel, with what the transcript holds);
- `RunTimedOut`, `UsageLimitExceeded` or any other error: `FAILED` with a message that is safe to show a model.

The status only becomes terminal after the run has really exited.

A subagent with `isolation='process'` is the one exception to "only module": its run is driven in a child process
by `_isolation`, which reports to the manager through the same calls.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from opentelemetry.context import Context
from pydantic_ai import Agent, CancellationToken, RunCancelled
from pydantic_ai._agent_graph import CallToolsNode, ModelRequestNode
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelRetry, UsageLimitExceeded, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRun
from pydantic_ai.tools import RunContext, Tool, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, FunctionToolset
from pydantic_ai.usage import RunUsage, UsageLimits
from pydantic_core import to_json

from ._config import SubAgentConfig, build_agent
from ._state import TaskRecord, TaskUsage

if TYPE_CHECKING:
    from ._manager import TaskManager

__all__ = ('current_task', 'partial_from_messages', 'render_output')

SOFT_CANCEL_NOTICE = (
    'CANCELLATION REQUEST: your parent asked you to stop this task now. Do not start new work or call more tools. '
    'Reply at once with: what you completed, what was in progress, what was not started, and any findings so far.'
)


@dataclass(kw_only=True, eq=False, slots=True, weakref_slot=True)
class TaskRuntime:
    """What the manager and the runner share about one live task (never handed to users)."""

    id: str
    config: SubAgentConfig
    agent: Agent[Any, Any]
    prompt: str
    model: Model | str | None
    deps: Any
    usage_limits: UsageLimits | None
    timeout: float | None
    depth: int
    parent_usage: RunUsage | None = None
    run: AgentRun[Any, Any] | None = None
    usage: RunUsage = field(default_factory=RunUsage)
    stopped: anyio.Event = field(default_factory=anyio.Event)
    """Set once the task's run has exited (or the task ended before starting)."""
    watchers: list[Watcher] = field(default_factory=list['Watcher'])
    """Set at the task's next status change, then dropped (waiters register here)."""
    children: list[tuple[TaskManager, str]] = field(default_factory=list[tuple['TaskManager', str]])
    """Nested tasks started by this task's subagent, for the hard-cancel cascade."""
    soft_requested_turn: int | None = None
    cancel_when_started: bool = False
    timed_out: bool = False
    asking: str | None = None
    """Correlation id of the question the subagent is waiting on, if any."""
    turns: int = 0
    notice_pending: bool = False
    inflight_sync_tools: dict[str, int] = field(default_factory=dict[str, int])
    sync_tool_names: frozenset[str] = frozenset()
    thread_note: str | None = None
    transcript: list[ModelMessage] | None = None
    final: TaskRecord | None = None
    """The task's terminal snapshot, kept here for waiters even if retention drops the record."""
    trace_context: Context = field(default_factory=Context)
    """The tracing context of the tool call that created the task."""
    direct_waiters: int = 0
    """Tool calls of the parent waiting on this task right now; they report its outcome, so no notice is sent."""
    backend: RunBackend | None = None
    """Where the run executes when not in this process's event loop (a child process, a worker)."""
    # Made when first needed: a queued task does without them (many queued tasks are many objects for the GC).
    _token: CancellationToken | None = field(default=None, init=False, repr=False)
    _cancel_scope: anyio.CancelScope | None = field(default=None, init=False, repr=False)

    @property
    def token(self) -> CancellationToken:
        """The cancellation token of the task's run."""
        if self._token is None:
            self._token = CancellationToken()
        return self._token

    @property
    def cancel_scope(self) -> anyio.CancelScope:
        """The cancel scope around the task's whole life once it is spawned; cancelling it first is allowed."""
        if self._cancel_scope is None:
            self._cancel_scope = anyio.CancelScope()
        return self._cancel_scope

    def stop(self) -> None:
        """Stop the run now; if it is still being set up, as soon as it exists."""
        if self.backend is not None:
            self.backend.stop()
        elif self.run is not None:
            self.token.cancel()
        else:
            # Pydantic AI can lose a cancellation that lands while a run is being set up, so the runner fires the
            # token as soon as the run exists.
            self.cancel_when_started = True

    def send_soft_notice(self) -> None:
        """Put the soft-cancel notice into the live run (or hold it until the run exists)."""
        if self.backend is not None:
            self.backend.soft_notice()
            return
        run = self.run
        if run is None:
            self.notice_pending = True
            return
        # If the run is already ending, enqueue refuses: its result then counts as the wrap-up answer.
        with contextlib.suppress(UserError):
            run.enqueue(SOFT_CANCEL_NOTICE, priority='asap')

    def notify(self) -> None:
        watchers, self.watchers = self.watchers, []
        for event in watchers:
            event.set()


class Watcher(Protocol):
    """What waits for a task's next status change: an `anyio.Event`, or anything else with a `set()`."""

    def set(self) -> None:
        """The task's status changed."""
        ...


class RunBackend(Protocol):
    """A task's run executing outside this event loop: how the manager stops it or sends it the soft notice."""

    def stop(self) -> None:
        """Stop the run now (a hard cancel or a timeout)."""
        ...

    def soft_notice(self) -> None:
        """Deliver the soft-cancel notice into the run."""
        ...


current_task: ContextVar[tuple[TaskManager, TaskRuntime] | None] = ContextVar(
    'pydantic_ai_subagents.current_task', default=None
)
"""The task whose subagent is running in this context: how a nested task finds its parent."""


def render_output(output: Any) -> str:
    """A subagent's output as text for a model: strings as they are, anything else as JSON."""
    if isinstance(output, str):
        return output
    return to_json(output).decode()


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


def bounded_limits(own: UsageLimits | None, parent: UsageLimits | None, parent_usage: RunUsage | None) -> UsageLimits:
    """The child's limits: its own (or the defaults), lowered to what the parent's limits have left."""
    limits = UsageLimits() if own is None else UsageLimits(**{f.name: getattr(own, f.name) for f in fields(own)})
    if parent is None or parent_usage is None:
        return limits
    pairs = (
        ('request_limit', 'requests'),
        ('tool_calls_limit', 'tool_calls'),
        ('input_tokens_limit', 'input_tokens'),
        ('output_tokens_limit', 'output_tokens'),
        ('total_tokens_limit', 'total_tokens'),
    )
    for limit_name, usage_name in pairs:
        parent_limit: int | None = getattr(parent, limit_name)
        if parent_limit is None:
            continue
        left = max(0, parent_limit - getattr(parent_usage, usage_name))
        own_limit: int | None = getattr(limits, limit_name)
        setattr(limits, limit_name, left if own_limit is None else min(own_limit, left))
    return limits


def _exhausted_limit(limits: UsageLimits | None) -> str | None:
    # Pydantic AI reads a limit of 0 as "no limit", so a budget the parent has used up must be caught here.
    if limits is None:
        return None
    for name in (
        'request_limit',
        'tool_calls_limit',
        'input_tokens_limit',
        'output_tokens_limit',
        'total_tokens_limit',
    ):
        if getattr(limits, name) == 0:
            return name
    return None


def sync_tool_names(toolsets: Sequence[AbstractToolset[Any]]) -> frozenset[str]:
    """Names of the plain (non-async) function tools: those Pydantic AI runs in a worker thread."""
    names: set[str] = set()
    for toolset in toolsets:
        if isinstance(toolset, FunctionToolset):
            for name, tool in toolset.tools.items():
                if not inspect.iscoroutinefunction(tool.function):
                    names.add(name)
    return frozenset(names)


@dataclass
class _TaskTracker(AbstractCapability[Any]):
    """Counts model turns and notes which thread-run tools are in flight, for soft-cancel grace and hard cancel."""

    runtime: TaskRuntime

    async def wrap_tool_execute(
        self, ctx: RunContext[Any], *, call: ToolCallPart, tool_def: ToolDefinition, args: Any, handler: Any
    ) -> Any:
        name = tool_def.name
        if name not in self.runtime.sync_tool_names:
            return await handler(args)
        inflight = self.runtime.inflight_sync_tools
        inflight[name] = inflight.get(name, 0) + 1
        try:
            return await handler(args)
        finally:
            inflight[name] -= 1
            if not inflight[name]:
                del inflight[name]


async def _ask_parent(question: str) -> str:
    """Ask your parent agent a question and wait for the answer. Use it only when you cannot go on without it.

    Args:
        question: The question, self-contained.
    """
    if not question.strip():
        raise ModelRetry('The question is empty: write the question you need answered.')
    entry = current_task.get()
    assert entry is not None, 'ask_parent runs inside a subagent task'
    manager, runtime = entry
    return await manager.ask_parent(runtime.id, question)


ASK_PARENT_TOOLSET: FunctionToolset[Any] = FunctionToolset(
    [Tool(_ask_parent, name='ask_parent', max_retries=2)], id='pydantic-ai-subagents-ask-parent'
)
"""The `ask_parent` tool, built once and shared: it finds its task through the `current_task` context variable."""

_AGENTS_THAT_ASK: weakref.WeakValueDictionary[int, Agent[Any, Any]] = weakref.WeakValueDictionary()


def task_agent(config: SubAgentConfig) -> Agent[Any, Any]:
    """The agent that runs a config's tasks. One built here has `ask_parent` among its own tools (when allowed).

    Rather than in a toolset passed to each run: Pydantic AI runs the per-step calls of a run's toolsets (listing
    tools, instructions) in a task each as soon as there are two toolsets, which doubles a short run's asyncio tasks.
    A ready agent from the config (`config.agent`) belongs to the user and is never changed: it gets the toolset.
    """
    agent = build_agent(config)
    if config.agent is None and config.can_ask_questions:
        agent.tool_plain(name='ask_parent', retries=2)(_ask_parent)
        _AGENTS_THAT_ASK[id(agent)] = agent
    return agent


async def run_subagent(manager: TaskManager, runtime: TaskRuntime) -> None:
    """Drive the subagent's run and record how it ended. Never raises (except for the caller's cancellation)."""
    asks = runtime.config.can_ask_questions and _AGENTS_THAT_ASK.get(id(runtime.agent)) is not runtime.agent
    toolsets: list[AbstractToolset[Any]] = [ASK_PARENT_TOOLSET] if asks else []
    # Counting thread-run tools costs a hook per tool call: only subagents that have such tools pay it.
    capabilities: list[AbstractCapability[Any]] = [_TaskTracker(runtime)] if runtime.sync_tool_names else []
    exhausted = _exhausted_limit(runtime.usage_limits)
    if exhausted is not None:
        manager.finish_failed(runtime, f"usage limit reached: the parent's {exhausted} is used up")
        return
    token = current_task.set((manager, runtime))
    try:
        if runtime.config.isolation == 'process':
            from ._isolation import run_in_process

            await run_in_process(manager, runtime)
            return
        async with runtime.agent.iter(
            runtime.prompt,
            model=runtime.model,
            deps=runtime.deps,
            usage=runtime.usage,
            usage_limits=runtime.usage_limits,
            cancellation_token=runtime.token,
            toolsets=toolsets,
            capabilities=capabilities,
        ) as run:
            runtime.run = run
            if runtime.cancel_when_started:
                runtime.token.cancel()
            if runtime.notice_pending:
                run.enqueue(SOFT_CANCEL_NOTICE, priority='asap')
                runtime.notice_pending = False
            async for node in run:
                if isinstance(node, ModelRequestNode):
                    runtime.turns += 1
                    manager.on_turn(runtime)
                if manager.forward_subagent_events and isinstance(node, ModelRequestNode | CallToolsNode):
                    async with node.stream(run.ctx) as stream:
                        async for event in stream:
                            manager.forward_run_event(runtime, event)
            assert run.result is not None
            output = run.result.output
        manager.finish_completed(runtime, output)
    except RunCancelled as e:
        runtime.transcript = e.all_messages()
        if runtime.timed_out:
            manager.finish_failed(runtime, f'timed out after {runtime.timeout:g} s')
        else:
            manager.finish_cancelled(runtime, partial_from_messages(runtime.transcript))
    except UsageLimitExceeded as e:
        manager.finish_failed(runtime, f'usage limit reached: {e}')
    except Exception as e:
        manager.finish_failed(runtime, safe_error(e))
    finally:
        current_task.reset(token)
        runtime.run = None
        if runtime.parent_usage is not None:
            runtime.parent_usage.incr(runtime.usage)
        runtime.inflight_sync_tools.clear()


def safe_error(error: BaseException, limit: int = 500) -> str:
    """An error as one line for a model: the type and message, no traceback, secrets-looking tokens masked."""
    text = f'{type(error).__name__}: {error}'.replace('\n', ' ').strip()
    text = _mask_secrets(text)
    return text if len(text) <= limit else text[:limit] + ' [...]'


_SECRET = re.compile(
    r'(?i)('
    r'\b(?:sk|pk|rk|ghp|gho|xox[bap])[-_][A-Za-z0-9_-]{8,}'  # provider-style keys
    r'|\bbearer\s+[A-Za-z0-9._~+/=-]{8,}'  # Authorization: Bearer ...
    r'|\bAKIA[0-9A-Z]{12,}'  # AWS access key ids
    r'|[\'"]?[\w-]*(?:api[_-]?key|token|secret|password|passwd|credential)[\w-]*[\'"]?\s*[=:]\s*[\'"]?[^\s\'",}]+'
    r')'
)


def _mask_secrets(text: str) -> str:
    return _SECRET.sub('[redacted]', text)


def usage_snapshot(usage: RunUsage) -> TaskUsage:
    """The state module's plain copy of a run's usage."""
    return TaskUsage(
        requests=usage.requests,
        tool_calls=usage.tool_calls,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
    )
