"""How a subagent is configured, and how a configuration becomes a Pydantic AI agent.

A configuration is checked when it is built, not when its first task runs: a mistake found at a task's start would
reach the parent's model as a failed task instead of the developer as an exception. Every error names the subagent
and the field. Model names are resolved as `Agent` resolves them (so an unknown name, a missing provider package
or missing credentials fail here exactly when `Agent(model)` would fail), and what `isolation='process'` sends to a
child process is pickled once to be sure it can be.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel, ValidationError
from pydantic_ai import Agent
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import UserError
from pydantic_ai.models import KnownModelName, Model
from pydantic_ai.output import OutputSpec
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import Tool
from pydantic_ai.toolsets import AbstractToolset
from pydantic_ai.usage import UsageLimits

__all__ = ('DEFAULT_CANCEL_INSTRUCTIONS', 'GENERAL_PURPOSE', 'SubAgentConfig', 'SubAgentSpec', 'config_from_spec')

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

    A config is checked when it is built, so a mistake reaches you instead of the parent's model: a field of the
    wrong type raises `TypeError`, a value that cannot work raises `ValueError`, and a model name that
    `Agent(model)` would refuse raises what it raises (`UserError`, or `ImportError` for a missing provider
    package). Each message names the subagent and the field.
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
    capabilities: Sequence[AbstractCapability[Any]] = ()
    """Pydantic AI capabilities given to the subagent's agent (`Agent(capabilities=...)`), e.g. for history
    processing or model routing."""
    agent: Agent[Any, Any] | None = None
    """A ready agent to run instead of building one from the fields above. It then carries its own instructions,
    tools, output type, model settings and capabilities: setting any of those fields too is an error. `model`, if
    set, is the model its runs use instead of the agent's own. `ask_parent` is still offered to it when allowed; it
    cannot use `isolation='process'`."""
    deps: Callable[[Any], Any] | None = None
    """Maps the parent's `deps` to this subagent's; `None` passes the parent's deps unchanged."""
    isolation: Literal['none', 'process'] = 'none'
    """`'process'` runs each task in a child process of its own, so that a hard cancel (or a timeout) can stop
    blocking work, such as a sync tool stuck in a C call, by terminating the process. What the process needs
    (`model`, `toolsets`, `output_type`, ...) is pickled when the config is built, so a local function or a lambda
    is refused at once; with `model=None` the parent's model is sent, and checked when a task starts."""
    worker_queue: str | None = None
    """Run this subagent's tasks on worker processes serving this queue (`python -m pydantic_ai_subagents worker`),
    which need a manager on a shared Redis bus and store. The parent's copy of the config then only needs `name`
    and `description`; the workers hold the full one."""
    retries: int = 0
    """How many times a task on a worker is started again on another worker when the worker running it dies."""
    model_retries: int = 0
    """How many times a task's run is tried again after a transient model failure: a rate limit (HTTP 429), a server
    error (5xx), a timeout or a lost connection. The run goes on from the conversation it got to, so tools that
    already ran are not run again. 0: the first such failure fails the task."""
    retry_backoff: float = 1.0
    """Seconds before the first retry; each next one waits twice as long (up to `max_retry_backoff`), half of the
    wait random, so that tasks rate-limited at the same moment do not all come back at once."""
    max_retry_backoff: float = 30.0
    """The longest wait between two tries, in seconds."""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f'invalid subagent name {self.name!r}: use 1-64 letters, digits, "_", "-" or "." '
                '(it is what the model types in `subagent_type`)'
            )
        if self.retries < 0:
            raise ValueError(f'subagent {self.name!r}: retries must be >= 0, got {self.retries}')
        if self.model_retries < 0:
            raise ValueError(f'subagent {self.name!r}: model_retries must be >= 0, got {self.model_retries}')
        for field, seconds in (('retry_backoff', self.retry_backoff), ('max_retry_backoff', self.max_retry_backoff)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise ValueError(
                    f'subagent {self.name!r}: {field} must be a finite number of seconds >= 0, got {seconds}'
                )
        if self.worker_queue is not None and not _NAME_RE.match(self.worker_queue):
            raise ValueError(f'subagent {self.name!r}: invalid worker_queue {self.worker_queue!r}')
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(
                f'subagent {self.name!r}: timeout must be a finite number of seconds > 0, got {self.timeout}'
            )
        if self.isolation not in ('none', 'process'):
            raise ValueError(f"subagent {self.name!r}: isolation must be 'none' or 'process', not {self.isolation!r}")
        if self.deps is not None and not callable(self.deps):
            raise TypeError(
                f"subagent {self.name!r}: deps must be a function mapping the parent's deps to this subagent's, "
                f'not {type(self.deps).__name__}'
            )
        self._check_sequence('toolsets', self.toolsets, AbstractToolset, 'toolset')
        self._check_sequence('capabilities', self.capabilities, AbstractCapability, 'capability')
        if self.agent is not None:
            self._check_ready_agent(self.agent)
        else:
            self._check_output_type()
            if self.capabilities:
                self._check_agent_builds('capabilities', capabilities=list(self.capabilities))
        self._check_model()
        if self.isolation == 'process':
            self._check_picklable()

    def _check_sequence(self, field: str, value: object, kind: type, noun: str) -> None:
        if isinstance(value, kind):
            raise TypeError(
                f'subagent {self.name!r}: {field} must be a sequence of {noun} objects, not one {noun}: '
                f'write `{field}=[...]`'
            )
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise TypeError(
                f'subagent {self.name!r}: {field} must be a list or tuple of {noun} objects, not {type(value).__name__}'
            )
        items: Sequence[object] = value  # pyright: ignore[reportUnknownVariableType]
        for i, item in enumerate(items):
            if not isinstance(item, kind):
                raise TypeError(
                    f'subagent {self.name!r}: {field}[{i}] must be an {kind.__name__}, not {type(item).__name__}'
                )

    def _check_ready_agent(self, agent: object) -> None:
        if not isinstance(agent, AbstractAgent):
            raise TypeError(f'subagent {self.name!r}: agent must be a Pydantic AI Agent, not {type(agent).__name__}')
        conflicting = [
            name
            for name, is_set in (
                ('instructions', self.instructions is not None),
                ('toolsets', bool(self.toolsets)),
                ('output_type', self.output_type is not str),
                ('model_settings', self.model_settings is not None),
                ('capabilities', bool(self.capabilities)),
            )
            if is_set
        ]
        if conflicting:
            fields = ', '.join(f'`{name}`' for name in conflicting)
            raise ValueError(
                f'subagent {self.name!r}: a ready `agent` carries its own settings, so {fields} would be ignored; '
                'give them to the agent or leave `agent` unset'
            )
        if self.isolation == 'process':
            raise ValueError(
                f"subagent {self.name!r}: a ready `agent` cannot run with isolation='process' (an agent cannot be "
                'sent to a child process); describe it with the config fields (instructions, model, toolsets, '
                'output_type) instead'
            )

    def _check_output_type(self) -> None:
        if self.output_type is str:
            return
        self._check_agent_builds('output_type', output_type=self.output_type)

    def _check_agent_builds(self, field: str, **options: Any) -> None:
        # Pydantic AI checks these when an agent is built: building one is the check that agrees with it.
        try:
            Agent(name=self.name, deps_type=object, **options)
        except Exception as e:
            raise ValueError(f'subagent {self.name!r}: invalid {field}: {type(e).__name__}: {e}') from e

    def _check_model(self) -> None:
        model = cast('object', self.model)  # checked for users without a type checker
        if model is None or isinstance(model, Model):
            return
        if not isinstance(model, str):
            raise TypeError(
                f"subagent {self.name!r}: model must be a Model, a model name such as 'openai:gpt-5-mini', or None "
                f"(the parent's model), not {type(model).__name__}"
            )
        # As `Agent(model)` does, with the capabilities that may resolve names of their own.
        try:
            Agent(model, name=self.name, deps_type=object, capabilities=list(self.capabilities) or None)
        except ImportError as e:
            raise ImportError(f'subagent {self.name!r}: model {model!r} needs a package that is missing: {e}') from e
        except UserError as e:
            raise UserError(f'subagent {self.name!r}: model {model!r} cannot be used: {e}') from e

    def _check_picklable(self) -> None:
        # What `isolation='process'` sends to the task's process besides plain values; `deps` (the mapping) stays
        # in the parent, and the deps it returns are only known when a task starts.
        for field, value in (
            ('model', self.model),
            ('toolsets', self.toolsets),
            ('output_type', self.output_type),
            ('model_settings', self.model_settings),
            ('capabilities', self.capabilities),
            ('usage_limits', self.usage_limits),
        ):
            try:
                pickle.dumps(value)
            except Exception as e:
                raise ValueError(
                    f"subagent {self.name!r}: isolation='process' sends `{field}` to a child process, but it cannot "
                    f'be pickled ({type(e).__name__}: {e}); define it at module level'
                ) from e

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


class SubAgentSpec(BaseModel, extra='forbid', use_attribute_docstrings=True):
    """A subagent as an agent spec (YAML or JSON) describes it: the plain-value fields of a config.

    The fields are those of [`SubAgentConfig`][pydantic_ai_subagents.SubAgentConfig] that are plain values.

    Tools, output types, capabilities, a ready agent and a deps mapping are Python objects: a subagent that needs
    them is built in code, or runs on workers (`worker_queue`) that hold its full config.
    """

    name: str
    """How the parent names this subagent in `task(subagent_type=...)`."""
    description: str | None = None
    """One line telling the parent's model when to use this subagent."""
    instructions: str | None = None
    """The subagent's instructions (system prompt)."""
    model: str | None = None
    """A model name, such as `'openai:gpt-5-mini'`; `None` uses the parent's model."""
    can_ask_questions: bool = True
    """Whether the subagent gets the `ask_parent` tool."""
    usage_limits: dict[str, int | None] | None = None
    """The fields of a `UsageLimits` for one task, such as `{'request_limit': 10}`."""
    timeout: float | None = None
    """Wall-clock seconds one task may take."""
    model_settings: dict[str, Any] | None = None
    """Model settings for the subagent's runs."""
    cancel_instructions: str | None = DEFAULT_CANCEL_INSTRUCTIONS
    """How to react to a soft-cancel notice; `None` adds nothing."""
    isolation: Literal['none', 'process'] = 'none'
    """`'process'` runs each task in a child process of its own."""
    worker_queue: str | None = None
    """Run this subagent's tasks on workers serving this queue."""
    retries: int = 0
    """How many times a task on a worker is started again when its worker dies."""
    model_retries: int = 0
    """How many times a run is tried again after a transient model failure."""
    retry_backoff: float = 1.0
    """Seconds before the first retry after a transient model failure."""
    max_retry_backoff: float = 30.0
    """The longest wait between two retries."""

    def to_config(self, label: str) -> SubAgentConfig:
        """The config, checked as one built in code is; `label` names this entry in an error."""
        options: dict[str, Any] = {name: getattr(self, name) for name in self.model_fields_set}
        if self.usage_limits is not None:
            try:
                options['usage_limits'] = UsageLimits(**self.usage_limits)  # pyright: ignore[reportArgumentType]
            except TypeError as e:
                raise ValueError(f'{label} in the agent spec: usage_limits: {e}') from None
        return SubAgentConfig(**options)


def config_from_spec(entry: object, index: int) -> SubAgentConfig:
    """The config an agent spec's `subagents[index]` describes, checked as a config built in code is.

    Raises:
        ValueError: the entry is not a mapping of known fields of the right types; the message names the entry (by
            its name when it has one) and the field.
    """
    label = f'subagents[{index}]'
    if isinstance(entry, Mapping):
        name = cast('Mapping[object, object]', entry).get('name')
        if isinstance(name, str):
            label = f'subagent {name!r}'
    if isinstance(entry, SubAgentSpec):
        spec = entry
    else:
        try:
            spec = SubAgentSpec.model_validate(entry)
        except ValidationError as e:
            problems = '; '.join(
                f'{".".join(str(part) for part in error["loc"]) or "the entry"}: {error["msg"]}' for error in e.errors()
            )
            raise ValueError(f'{label} in the agent spec: {problems}') from None
    return spec.to_config(label)


def _one_line(text: str, limit: int = 120) -> str:
    first = text.strip().split('\n', 1)[0].strip()
    sentence = re.split(r'(?<=[.!?])\s', first, maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + '…'


def build_agent(config: SubAgentConfig, *, tools: Sequence[Tool[Any]] = ()) -> Agent[Any, Any]:
    """Build the agent a config describes, with `tools` as its own (the model is given per run: one serves all)."""
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
        capabilities=list(config.capabilities) or None,
        deps_type=object,
        tools=tools,
    )
