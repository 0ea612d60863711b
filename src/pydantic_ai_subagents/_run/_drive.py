"""The one drive loop: runs a subagent's agent on Pydantic AI, for every executor (this loop, a child process).

It counts model turns and reports them, forwards the run's own events when asked, and returns the output. It does
not decide how the task ends: the executor turns what it returns or raises into an
[`Outcome`][pydantic_ai_subagents._run.Outcome] with [`outcome_of`][pydantic_ai_subagents._run._drive.outcome_of].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic_ai import CallToolsNode, ModelRequestNode, RunCancelled
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import AgentRunError, UsageLimitExceeded
from pydantic_ai.messages import ModelMessage
from pydantic_ai.run import AgentRun
from pydantic_ai.toolsets import AbstractToolset
from pydantic_graph import End

from ._protocol import Outcome, TaskJob
from ._retry import Retry
from ._support import (
    ASK_PARENT_TOOLSET,
    TaskTracker,
    needs_ask_toolset,
    safe_error,
    sync_tool_names,
)

__all__ = ('drive', 'outcome_of')


async def drive(
    job: TaskJob,
    *,
    on_run: Callable[[AgentRun[Any, Any]], None],
    after_response: Callable[[], None] | None = None,
) -> Any:
    """Run the job's agent to its end and return its output; `on_run` gets the live run as soon as it exists.

    A transient model failure is tried again as the config allows (`model_retries`, see `_retry`).

    The run is driven node by node with `AgentRun.next`, as `Agent.run` drives it (the same hooks fire), and in one
    coroutine frame: every step of a run resumes each frame above it, so a loop in a helper coroutine, or
    `async for` over the run (which checks the run's cancellation once more per node), costs calls on every step.
    """
    observer = job.observer
    toolsets: list[AbstractToolset[Any]] = [ASK_PARENT_TOOLSET] if needs_ask_toolset(job) else []
    capabilities: list[AbstractCapability[Any]] = []
    ready_agent = job.config.agent is not None
    if ready_agent or (job.ledger is not None and job.ledger.bounded):
        tools = sync_tool_names(job.agent.toolsets) if ready_agent else frozenset[str]()
        capabilities.append(TaskTracker(job, tools))
    stream = job.forward_events and observer is not None
    retry = Retry(job)
    while True:
        try:
            async with job.agent.iter(
                retry.prompt,
                message_history=retry.history,
                model=job.model,
                deps=job.deps,
                usage=job.usage,
                usage_limits=job.usage_limits,
                toolsets=toolsets,
                capabilities=capabilities,
            ) as run:
                on_run(run)
                node = run.next_node
                while not isinstance(node, End):
                    if isinstance(node, ModelRequestNode):
                        job.turns += 1
                        if observer is not None:
                            observer.turn()
                    elif isinstance(node, CallToolsNode):
                        if after_response is not None:
                            after_response()
                    elif run.result is not None:
                        break  # a capability's `wrap_run` answered without the graph
                    if stream and isinstance(node, ModelRequestNode | CallToolsNode):
                        assert observer is not None
                        async with node.stream(run.ctx) as events:
                            async for event in events:
                                observer.run_event(event)
                    node = await run.next(node)
            assert run.result is not None
            return run.result.output
        except Exception as error:
            if not await retry.again(error):
                raise


def outcome_of(error: BaseException) -> Outcome:
    """The outcome of a run that raised `error` (not the caller's own cancellation: that propagates)."""
    if isinstance(error, RunCancelled):
        # The partial result is read from the transcript by the settle point, only when the task keeps one (a hard
        # cancel keeps none): the status is written sooner after the run exits.
        return Outcome(kind='stopped', transcript=error.all_messages())
    transcript = _conversation(error)
    if isinstance(error, UsageLimitExceeded):
        return Outcome(kind='failed', error=f'usage limit reached: {error}', transcript=transcript)
    return Outcome(kind='failed', error=safe_error(error), transcript=transcript)


def _conversation(error: BaseException) -> list[ModelMessage] | None:
    """The messages a failed run got to, where Pydantic AI kept them on the error."""
    if isinstance(error, AgentRunError) and error.conversation is not None:
        return list(error.conversation.messages)
    return None
