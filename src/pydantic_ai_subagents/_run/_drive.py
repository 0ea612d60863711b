"""The one drive loop: runs a subagent's agent on Pydantic AI, for every executor (this loop, a child process).

It counts model turns and reports them, forwards the run's own events when asked, and returns how the run ended as
an [`Outcome`][pydantic_ai_subagents._run.Outcome]: what the run raised becomes one through `failed`
([`outcome_of`][pydantic_ai_subagents._run._drive.outcome_of] unless the executor says otherwise).
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
    is_real_cancel,
    needs_ask_toolset,
    safe_error,
    sync_tool_names,
)

__all__ = ('drive', 'outcome_of')


def outcome_of(error: BaseException) -> Outcome:
    """The outcome of a run that raised `error` (not the caller's own cancellation: that propagates).

    It holds `error` (`Outcome.raised`), whose tracebacks its taker drops once the task is settled.
    """
    if isinstance(error, RunCancelled):
        # The partial result is read from the transcript by the settle point, only when the task keeps one (a hard
        # cancel keeps none): the status is written sooner after the run exits.
        return Outcome(kind='stopped', transcript=error.all_messages(), raised=error)
    transcript = _conversation(error)
    if isinstance(error, UsageLimitExceeded):
        return Outcome(kind='failed', error=f'usage limit reached: {error}', transcript=transcript, raised=error)
    return Outcome(kind='failed', error=safe_error(error), transcript=transcript, raised=error)


def _conversation(error: BaseException) -> list[ModelMessage] | None:
    """The messages a failed run got to, where Pydantic AI kept them on the error."""
    if isinstance(error, AgentRunError) and error.conversation is not None:
        return list(error.conversation.messages)
    return None


async def drive(
    job: TaskJob,
    *,
    on_run: Callable[[AgentRun[Any, Any]], None],
    after_response: Callable[[], None] | None = None,
    on_exit: Callable[[], None] | None = None,
    failed: Callable[[BaseException], Outcome] = outcome_of,
) -> Outcome:
    """Run the job's agent to its end and say how it ended; `on_run` gets the live run as soon as it exists.

    The output and the conversation if it completed, else what `failed` makes of what it raised; only the caller's
    own cancellation propagates. `on_exit` is called as the run is left, whatever happened. A transient model
    failure is tried again as the config allows (`model_retries`, see `_retry`).

    The run is driven node by node with `AgentRun.next`, as `Agent.run` drives it (the same hooks fire), and in one
    coroutine frame, the executor's own: every step of a run resumes each frame above it, so a loop in a helper
    coroutine, a wrapper that only catches what the run raises, or `async for` over the run (which checks the run's
    cancellation once more per node), costs calls on every step.
    """
    observer = job.observer
    try:
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
                            if after_response is not None and node.model_response.tool_calls:
                                after_response()
                        elif run.result is not None:
                            break  # a capability's `wrap_run` answered without the graph
                        if stream and isinstance(node, ModelRequestNode | CallToolsNode):
                            assert observer is not None
                            async with node.stream(run.ctx) as events:
                                async for event in events:
                                    observer.run_event(event)
                        node = await run.next(node)
                break
            except Exception as error:
                if not await retry.again(error):
                    raise
        assert run.result is not None
        # The conversation is kept, so that a follow-up task can continue it.
        return Outcome(kind='completed', output=run.result.output, transcript=run.all_messages())
    except BaseException as e:
        if is_real_cancel(e):
            raise
        # What was raised goes with the outcome (`failed` puts it there): its tracebacks are dropped once the task
        # is settled (`Outcome.release`), so that the status is written before the run's objects are freed.
        return failed(e)
    finally:
        if on_exit is not None:
            on_exit()
