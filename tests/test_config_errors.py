"""Configuration mistakes are refused when the `SubAgentConfig` is built, naming the subagent and the field."""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.toolsets import FunctionToolset

from pydantic_ai_subagents import SubAgentConfig, SubAgents, TaskManager, TaskStatus, create_subagent_toolset

pytestmark = pytest.mark.anyio


def message_of(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------------------------------- model


def test_an_unknown_model_name_is_refused_as_agent_refuses_it() -> None:
    with pytest.raises(UserError) as agents:
        Agent('gpt-4o')
    with pytest.raises(UserError) as ours:
        SubAgentConfig(name='researcher', model='gpt-4o')
    assert message_of(ours) == f"subagent 'researcher': model 'gpt-4o' cannot be used: {message_of(agents)}"
    assert message_of(agents) == 'Unknown model: gpt-4o'


def test_a_model_whose_provider_package_is_missing_is_refused() -> None:
    assert importlib.util.find_spec('anthropic') is None, 'this test needs a provider whose package is not installed'
    with pytest.raises(ImportError) as excinfo:
        SubAgentConfig(name='researcher', model='anthropic:claude-sonnet-4-5')
    assert message_of(excinfo) == (
        "subagent 'researcher': model 'anthropic:claude-sonnet-4-5' needs a package that is missing: Please install "
        'the `anthropic` package to use the Anthropic provider, you can use the `anthropic` optional group — '
        '`pip install "pydantic-ai-slim[anthropic]"`'
    )


def test_a_provider_setting_from_the_environment_is_needed_exactly_when_agent_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv('SYSTEM_ONE_BASE_URL', raising=False)
    with pytest.raises(UserError):
        Agent('system-one:m1')
    with pytest.raises(UserError) as excinfo:
        SubAgentConfig(name='researcher', model='system-one:m1')
    assert message_of(excinfo).startswith(
        "subagent 'researcher': model 'system-one:m1' cannot be used: Set the `SYSTEM_ONE_BASE_URL` environment "
        'variable'
    )
    monkeypatch.setenv('SYSTEM_ONE_BASE_URL', 'http://127.0.0.1:9')
    Agent('system-one:m1')
    config = SubAgentConfig(name='researcher', model='system-one:m1')
    assert config.model == 'system-one:m1'  # kept as given: it is resolved again per run, as Agent does


@pytest.mark.parametrize('model', [42, b'openai:gpt-5-mini', ['test']])
def test_a_model_of_the_wrong_type_is_refused(model: Any) -> None:
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', model=model)
    assert message_of(excinfo) == (
        "subagent 'researcher': model must be a Model, a model name such as 'openai:gpt-5-mini', or None (the "
        f"parent's model), not {type(model).__name__}"
    )


def test_good_models_are_accepted() -> None:
    for model in ('test', TestModel(), None):
        assert SubAgentConfig(name='researcher', model=model).model is model


# ---------------------------------------------------------------------------------------------------- toolsets, capabilities


def test_one_toolset_instead_of_a_list_is_refused() -> None:
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', toolsets=FunctionToolset([]))  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == (
        "subagent 'researcher': toolsets must be a sequence of toolset objects, not one toolset: write `toolsets=[...]`"
    )


def test_toolsets_that_are_not_toolsets_are_refused() -> None:
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', toolsets='search')  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == "subagent 'researcher': toolsets must be a list or tuple of toolset objects, not str"
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', toolsets=[FunctionToolset([]), len])  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == (
        "subagent 'researcher': toolsets[1] must be an AbstractToolset, not builtin_function_or_method"
    )


@dataclass
class Remind(AbstractCapability[Any]):
    """Adds one instruction: enough to see that the capability reached the subagent's agent."""

    text: str = 'Cite every source.'

    def get_instructions(self) -> str:
        return self.text


@dataclass
class Holds(AbstractCapability[Any]):
    """A capability that holds a live object."""

    handle: Any = None


def test_capabilities_are_checked_like_toolsets() -> None:
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', capabilities=Remind())  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == (
        "subagent 'researcher': capabilities must be a sequence of capability objects, not one capability: write "
        '`capabilities=[...]`'
    )
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='researcher', capabilities=[Remind(), 'retry'])  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == "subagent 'researcher': capabilities[1] must be an AbstractCapability, not str"
    # One Pydantic AI refuses when it builds the agent.
    with pytest.raises(ValueError) as excinfo:
        SubAgentConfig(name='researcher', capabilities=[Remind(text=42)])  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == "subagent 'researcher': invalid capabilities: TypeError: 'int' object is not iterable"


async def test_capabilities_are_given_to_the_subagents_agent() -> None:
    seen: list[str | None] = []

    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(info.instructions)
        return ModelResponse(parts=[TextPart('ok')])

    config = SubAgentConfig(
        name='researcher', instructions='You research.', model=FunctionModel(answer), capabilities=[Remind()]
    )
    async with TaskManager() as manager:
        record = await manager.start(config, 'go', scope='s')
        record = await manager.wait_for(record.id)
    assert record.status is TaskStatus.COMPLETED
    assert seen and seen[0] is not None
    assert 'You research.' in seen[0] and 'Cite every source.' in seen[0]


# ---------------------------------------------------------------------------------------------------- output type


def test_an_invalid_output_type_is_refused() -> None:
    with pytest.raises(ValueError) as excinfo:
        SubAgentConfig(name='researcher', output_type=[])
    assert message_of(excinfo) == (
        "subagent 'researcher': invalid output_type: UserError: At least one output type must be provided."
    )
    with pytest.raises(ValueError) as excinfo:
        SubAgentConfig(name='researcher', output_type=42)  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo).startswith(
        "subagent 'researcher': invalid output_type: PydanticSchemaGenerationError: Unable to generate pydantic-core "
        'schema for 42.'
    )
    assert excinfo.value.__cause__ is not None


class Finding(BaseModel):
    claim: str


def test_valid_output_types_are_accepted() -> None:
    for output_type in (str, int, Finding, [Finding, str], Finding | None):
        assert SubAgentConfig(name='researcher', output_type=output_type).output_type == output_type


# ---------------------------------------------------------------------------------------------------- a ready agent


@pytest.mark.parametrize(
    ('options', 'fields'),
    [
        ({'instructions': 'You research.'}, '`instructions`'),
        ({'toolsets': [FunctionToolset([])]}, '`toolsets`'),
        ({'output_type': int}, '`output_type`'),
        ({'model_settings': {'temperature': 0}}, '`model_settings`'),
        ({'capabilities': [Remind()]}, '`capabilities`'),
        ({'instructions': 'You research.', 'model': 'test', 'toolsets': [FunctionToolset([])]}, None),
        ({'output_type': int, 'model_settings': {'temperature': 0}}, '`output_type`, `model_settings`'),
    ],
)
def test_a_ready_agent_with_fields_it_would_ignore_is_refused(options: dict[str, Any], fields: str | None) -> None:
    with pytest.raises(ValueError) as excinfo:
        SubAgentConfig(name='researcher', agent=Agent(TestModel()), **options)
    fields = fields or '`instructions`, `toolsets`'
    assert message_of(excinfo) == (
        f"subagent 'researcher': a ready `agent` carries its own settings, so {fields} would be ignored; give them "
        'to the agent or leave `agent` unset'
    )


def answers(text: str) -> FunctionModel:
    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(text)])

    return FunctionModel(answer)


async def test_a_ready_agent_with_only_what_it_uses_is_accepted_and_a_model_overrides_its_own() -> None:
    agent = Agent(answers('from the agent'), name='reviewer')
    plain = SubAgentConfig(name='reviewer', description='Reviews.', agent=agent, timeout=5, can_ask_questions=False)
    assert plain.agent is agent
    # `model` is not ignored with a ready agent: its runs use it instead of the agent's own.
    overridden = SubAgentConfig(name='reviewer', agent=agent, model=answers('from the config'))
    async with TaskManager() as manager:
        results = []
        for config in (plain, overridden):
            record = await manager.start(config, 'go', scope='s')
            results.append((await manager.wait_for(record.id)).result)
    assert results == ['from the agent', 'from the config']


def test_a_ready_agent_must_be_an_agent_and_cannot_be_isolated() -> None:
    with pytest.raises(TypeError) as excinfo:
        SubAgentConfig(name='reviewer', agent='reviewer')  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == "subagent 'reviewer': agent must be a Pydantic AI Agent, not str"
    with pytest.raises(ValueError) as excinfo:
        SubAgentConfig(name='reviewer', agent=Agent(TestModel()), isolation='process')
    assert message_of(excinfo) == (
        "subagent 'reviewer': a ready `agent` cannot run with isolation='process' (an agent cannot be sent to a "
        'child process); describe it with the config fields (instructions, model, toolsets, output_type) instead'
    )


# ---------------------------------------------------------------------------------------------------- process isolation


async def module_level_answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[TextPart('ok')])


def module_level_tool() -> str:
    """A tool defined at module level."""
    return 'ok'


def test_what_process_isolation_sends_is_pickled_when_the_config_is_built() -> None:
    class LocalOutput(BaseModel):
        n: int

    async def local_answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart('ok')])

    cases: list[tuple[dict[str, Any], str]] = [
        ({'model': FunctionModel(local_answer)}, 'model'),
        ({'toolsets': [FunctionToolset([lambda: 'local'])]}, 'toolsets'),
        ({'output_type': LocalOutput}, 'output_type'),
        ({'model_settings': {'extra_body': threading.Lock()}}, 'model_settings'),
        ({'capabilities': [Holds(handle=threading.Lock())]}, 'capabilities'),
    ]
    for options, field in cases:
        with pytest.raises(ValueError) as excinfo:
            SubAgentConfig(name='worker', isolation='process', **options)
        message = message_of(excinfo)
        assert message.startswith(
            f"subagent 'worker': isolation='process' sends `{field}` to a child process, but it cannot be pickled ("
        ), message
        assert message.endswith('); define it at module level'), message
        # Without isolation nothing needs to be pickled.
        SubAgentConfig(name='worker', **options)


def test_module_level_definitions_can_be_isolated() -> None:
    config = SubAgentConfig(
        name='worker',
        model=FunctionModel(module_level_answer),
        toolsets=[FunctionToolset([module_level_tool])],
        output_type=Finding,
        capabilities=[Remind()],
        isolation='process',
        deps=lambda deps: deps,  # maps deps in the parent: never sent
    )
    assert config.isolation == 'process'


# ---------------------------------------------------------------------------------------------------- plain fields


@pytest.mark.parametrize(
    ('options', 'error', 'message'),
    [
        (
            {'name': 'two words'},
            ValueError,
            'invalid subagent name \'two words\': use 1-64 letters, digits, "_", "-" or "." (it is what the model '
            'types in `subagent_type`)',
        ),
        ({'retries': -1}, ValueError, "subagent 'researcher': retries must be >= 0, got -1"),
        ({'worker_queue': 'a queue'}, ValueError, "subagent 'researcher': invalid worker_queue 'a queue'"),
        ({'timeout': 0}, ValueError, "subagent 'researcher': timeout must be a finite number of seconds > 0, got 0"),
        (
            {'isolation': 'thread'},
            ValueError,
            "subagent 'researcher': isolation must be 'none' or 'process', not 'thread'",
        ),
        (
            {'deps': {'db': 1}},
            TypeError,
            "subagent 'researcher': deps must be a function mapping the parent's deps to this subagent's, not dict",
        ),
    ],
)
def test_plain_field_mistakes_are_refused(options: dict[str, Any], error: type[Exception], message: str) -> None:
    options = {'name': 'researcher', **options}
    with pytest.raises(error) as excinfo:
        SubAgentConfig(**options)
    assert message_of(excinfo) == message


# ---------------------------------------------------------------------------------------------------- the toolset


WORKER_QUEUE_WITHOUT_SHARED_STORE = (
    "subagent 'remote': worker_queue='research' sends its tasks to worker processes, which needs a task manager on a "
    "shared store and bus (see pydantic_ai_subagents.redis.redis_task_manager), but this manager's store is "
    'InMemoryTaskStore: pass such a manager as `manager=`, or leave worker_queue unset'
)


@pytest.mark.parametrize(
    'build',
    [
        lambda configs: create_subagent_toolset(configs),
        lambda configs: SubAgents(configs),
        lambda configs: create_subagent_toolset(configs, manager=TaskManager()),
    ],
    ids=['toolset', 'capability', 'given manager'],
)
def test_a_worker_queue_without_a_shared_store_is_refused_when_the_toolset_is_built(build: Any) -> None:
    remote = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='research')
    with pytest.raises(ValueError) as excinfo:
        build([remote])
    assert message_of(excinfo) == WORKER_QUEUE_WITHOUT_SHARED_STORE


async def test_a_worker_queue_with_a_shared_store_is_accepted() -> None:
    from pydantic_ai_subagents.redis import RedisTaskStore

    remote = SubAgentConfig(name='remote', description='Works elsewhere.', worker_queue='research')
    store = RedisTaskStore('redis://127.0.0.1:9')  # describes the store; nothing connects until it is entered
    toolset = create_subagent_toolset([remote], store=store)
    assert toolset.manager.store is store and toolset.subagents['remote'].worker_queue == 'research'
    assert SubAgents([remote], manager=TaskManager(store=store)).toolset.subagents['remote'] is remote


def test_subagents_must_be_a_list_of_configs() -> None:
    researcher = SubAgentConfig(name='researcher', instructions='You research.')
    with pytest.raises(TypeError) as excinfo:
        create_subagent_toolset(researcher)  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == (
        'subagents must be a sequence of SubAgentConfig, not one config: write `[SubAgentConfig(...)]` (subagent '
        "'researcher')"
    )
    with pytest.raises(TypeError) as excinfo:
        SubAgents([researcher, {'name': 'writer'}])  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == 'subagents[1] must be a SubAgentConfig, not dict'
    with pytest.raises(TypeError) as excinfo:
        create_subagent_toolset('researcher')  # pyright: ignore[reportArgumentType]
    assert message_of(excinfo) == 'subagents must be a list or tuple of SubAgentConfig, not str'
