"""How a subagent is configured, and how a configuration becomes a Pydantic AI agent."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic_ai import Agent
from pydantic_ai.models import KnownModelName, Model
from pydantic_ai.output import OutputSpec
from pydantic_ai.settings import ModelSettings
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import UsageLimits

__all__ = ('DEFAULT_CANCEL_INSTRUCTIONS', 'GENERAL_PURPOSE', 'SubAgentConfig')

_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$')

DEFAULT_CANCEL_INSTRUCTIONS = (
    'If you receive a cancellation request, stop working: call no more tools and reply at once with what you '
    'completed, what was in progress and what was not started, including any findings so far.'
)
"""What a subagent is told about soft cancellation unless its config says otherwise."""

GENERAL_PURPOSE = 'general-purpose'
"""Name of the built-in subagent that uses the parent's model and has no tools of its own."""


@dataclass(kw_only=True)
class SubAgentConfig:
    """A subagent the parent can delegate to.

    `SubAgentConfig(name='researcher', instructions='You research ...')` is enough: the description is derived
    from the instructions and the parent's model is used.
    """

    name: str
    """How the parent names this subagent in `task(subagent_type=...)`: letters, digits, `_`, `-`, `.`."""
    description: str | None = None
    """One line telling the parent's model when to use this subagent. Derived from `instructions` if `None`."""
    instructions: str | None = None
    """The subagent's instructions (system prompt)."""
    model: Model | KnownModelName | str | None = None
    """The subagent's model; `None` uses the parent's model of the run that starts the task."""
    toolsets: Sequence[AbstractToolset[Any]] = ()
    """The subagent's own tools. A subagent gets these and nothing else (plus `ask_parent` when allowed)."""
    output_type: OutputSpec[Any] = str
    """Structured output type; a non-string result reaches the parent's model as JSON."""
    can_ask_questions: bool = True
    """Whether the subagent gets the `ask_parent` tool to ask the parent a question and wait for the answer."""
    usage_limits: UsageLimits | None = None
    """Budget for one task of this subagent; `None` means Pydantic AI's defaults. Always bounded by what the
    parent's own limits have left."""
    timeout: float | None = None
    """Wall-clock seconds one task may take; past it the task ends `FAILED`. `None` uses the toolset's default."""
    model_settings: ModelSettings | None = None
    """Model settings for the subagent's runs."""
    cancel_instructions: str | None = DEFAULT_CANCEL_INSTRUCTIONS
    """Added to the instructions: how to react to a soft-cancel notice. `None` adds nothing."""
    agent: Agent[Any, Any] | None = None
    """A ready agent to run instead of building one from the fields above (`instructions`, `model`, `toolsets`,
    `output_type` and `model_settings` are then ignored; `ask_parent` is still added when allowed)."""
    deps: Callable[[Any], Any] | None = None
    """Maps the parent's `deps` to this subagent's; `None` passes the parent's deps unchanged."""
    isolation: Literal['none', 'process'] = 'none'
    """`'process'` runs each task in a child process of its own, so that a hard cancel (or a timeout) can stop
    blocking work, such as a sync tool stuck in a C call, by terminating the process."""
    worker_queue: str | None = None
    """Run this subagent's tasks on worker processes serving this queue (`python -m pydantic_ai_subagents worker`),
    which need a manager on a shared Redis bus and store. The parent's copy of the config then only needs `name`
    and `description`; the workers hold the full one."""
    retries: int = 0
    """How many times a task on a worker is started again on another worker when the worker running it dies."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f'invalid subagent name {self.name!r}: use 1-64 letters, digits, "_", "-" or "." '
                '(it is what the model types in `subagent_type`)'
            )
        if self.retries < 0:
            raise ValueError(f'subagent {self.name!r}: retries must be >= 0, got {self.retries}')
        if self.worker_queue is not None and not _NAME_RE.match(self.worker_queue):
            raise ValueError(f'subagent {self.name!r}: invalid worker_queue {self.worker_queue!r}')
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f'subagent {self.name!r}: timeout must be positive, got {self.timeout}')

    @property
    def summary(self) -> str:
        """The one-line description shown to the parent's model."""
        if self.description:
            return _one_line(self.description)
        if self.instructions:
            return _one_line(self.instructions)
        if self.agent is not None and self.agent.name:
            return self.agent.name
        return 'A general assistant.'


def _one_line(text: str, limit: int = 120) -> str:
    first = text.strip().split('\n', 1)[0].strip()
    sentence = re.split(r'(?<=[.!?])\s', first, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + '…'


def build_agent(config: SubAgentConfig) -> Agent[Any, Any]:
    """Build the agent a config describes (the model is passed per run, so one agent serves every model)."""
    if config.agent is not None:
        return config.agent
    instructions = [config.instructions] if config.instructions else []
    if config.cancel_instructions:
        instructions.append(config.cancel_instructions)
    return Agent(
        name=config.name,
        instructions=instructions or None,
        output_type=config.output_type,
        toolsets=list(config.toolsets),
        model_settings=config.model_settings,
        deps_type=object,
    )
