"""What reaches the parent model stays bounded and secret-free; what a task keeps is released with it.

- Secrets in error texts: credentials in URLs, GitHub tokens, `Authorization` headers and JWTs are masked
  (property-based: the secrets are generated, inside generated sentences).
- A subagent's question is bounded where it is recorded.
- An output that cannot be turned into JSON reaches the parent in its text form.
- A config given to `manager.start` is not kept (with its agent) after its task ends.
"""

from __future__ import annotations

import base64
import gc
import json
import string
import weakref
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents._manager._questions import MAX_QUESTION_CHARS
from pydantic_ai_subagents._run import render_output, safe_error

from .conftest import Script, call, child_text, split_sync_reply, task_id_from

pytestmark = pytest.mark.anyio

# --------------------------------------------------------------------------------------- secrets in error texts

_WORDS = st.lists(
    st.sampled_from(['could', 'not', 'connect', 'to', 'the', 'database', 'while', 'loading', 'at', 'with', '(503)']),
    min_size=1,
    max_size=6,
).map(' '.join)
_ALNUM = string.ascii_letters + string.digits
_EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def _check(before: str, shown: str, after: str, *secrets: str) -> str:
    """The error text of `before shown after`: every secret gone, the words around it kept as they were."""
    for secret in secrets:
        assume(secret not in before + after)
    text = safe_error(ValueError(f'{before} {shown} {after}'))
    assert text.startswith(f'ValueError: {before} ')
    assert text.endswith(f' {after}')
    for secret in secrets:
        assert secret not in text
    return text


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    scheme=st.sampled_from(['postgresql', 'postgres', 'mysql+pymysql', 'redis', 'rediss', 'amqp', 'https', 'mongodb']),
    user=st.text(_ALNUM + '-._', min_size=1, max_size=16),
    password=st.text(st.characters(codec='utf-8', exclude_categories=['Cs']), min_size=6, max_size=30),
    encoded=st.booleans(),
)
def test_credentials_in_a_url_are_masked(
    before: str, after: str, scheme: str, user: str, password: str, encoded: bool
) -> None:
    if encoded:
        password = quote(password, safe='')
    else:  # written as is: anything that does not end the URL's authority
        assume(not any(c.isspace() or c in '/?#' for c in password))
    host = 'db.internal:5432/app?sslmode=require'
    text = _check(before, f'{scheme}://{user}:{password}@{host}', after, f'{user}:{password}')
    assert f'{scheme}://[redacted]@{host}' in text


@_EXAMPLES
@given(before=_WORDS, after=_WORDS, token=st.text(_ALNUM, min_size=8, max_size=40))
def test_a_token_as_the_user_of_a_url_is_masked(before: str, after: str, token: str) -> None:
    text = _check(before, f'https://{token}@github.com/acme/repo.git', after, token)
    assert 'https://[redacted]@github.com/acme/repo.git' in text


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    prefix=st.sampled_from(['ghp_', 'gho_', 'ghu_', 'ghs_', 'ghr_']),
    body=st.text(_ALNUM, min_size=36, max_size=36),
)
def test_github_tokens_are_masked(before: str, after: str, prefix: str, body: str) -> None:
    _check(before, f'{prefix}{body}', after, body)


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    first=st.text(_ALNUM, min_size=22, max_size=22),
    second=st.text(_ALNUM, min_size=59, max_size=59),
)
def test_github_fine_grained_tokens_are_masked(before: str, after: str, first: str, second: str) -> None:
    _check(before, f'github_pat_{first}_{second}', after, first, second)


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    header=st.sampled_from(['Authorization', 'authorization', 'AUTHORIZATION', 'Proxy-Authorization']),
    shape=st.sampled_from(['{h}: {v}', '{h}={v}', "{{'{h}': '{v}'}}", '{{"{h}": "{v}"}}']),
    user=st.text(_ALNUM + '-._@', min_size=1, max_size=16),
    password=st.text(st.characters(codec='utf-8', exclude_categories=['Cs']), min_size=1, max_size=30),
)
def test_basic_authorization_headers_are_masked(
    before: str, after: str, header: str, shape: str, user: str, password: str
) -> None:
    credentials = base64.b64encode(f'{user}:{password}'.encode()).decode()
    assume(len(credentials) >= 8)
    text = _check(before, shape.format(h=header, v=f'Basic {credentials}'), after, credentials)
    assert '[redacted]' in text


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    scheme=st.sampled_from(['Bearer', 'bearer', 'Token', 'Digest']),
    token=st.text(_ALNUM + '-._~+/', min_size=8, max_size=60),
)
def test_other_authorization_headers_are_masked(before: str, after: str, scheme: str, token: str) -> None:
    _check(before, f'Authorization: {scheme} {token}', after, token)


_CLAIMS = st.dictionaries(
    st.text(_ALNUM, min_size=1, max_size=8),
    st.one_of(st.text(max_size=20), st.integers(), st.booleans()),
    min_size=1,
    max_size=5,
)


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    alg=st.sampled_from(['HS256', 'RS256', 'ES384', 'none']),
    claims=_CLAIMS,
    signature=st.binary(max_size=64),
    label=st.sampled_from(['', 'jwt ', 'session ', 'id_token ']),
)
def test_jwts_are_masked(
    before: str, after: str, alg: str, claims: dict[str, object], signature: bytes, label: str
) -> None:
    header = _b64url(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())
    payload = _b64url(json.dumps(claims).encode())
    jwt = f'{header}.{payload}.{_b64url(signature)}'
    _check(before, f'{label}{jwt}', after, payload)


@_EXAMPLES
@given(
    before=_WORDS,
    after=_WORDS,
    shown=st.sampled_from(
        [
            'https://example.com/path?q=1',
            'see https://docs.example.com/a@b for details',
            'user@example.com',
            'basic configuration failed',
            'authorization denied',
            'HTTP 401 Unauthorized',
            'eyJ is how JSON starts in base64',
        ]
    ),
)
def test_ordinary_text_is_left_as_it_is(before: str, after: str, shown: str) -> None:
    assert safe_error(ValueError(f'{before} {shown} {after}')) == f'ValueError: {before} {shown} {after}'


# --------------------------------------------------------------------------------------- questions are bounded

LONG_QUESTION = 'Which of these sources should I trust? ' + 'x' * 200_000


def _asks_a_long_question(seen: list[str]) -> FunctionModel:
    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': LONG_QUESTION})])
        seen.append(str(returns[-1].content))
        return ModelResponse(parts=[TextPart('trusted the first')])

    return FunctionModel(child)


async def test_a_long_question_is_cut_where_it_is_recorded_and_the_subagent_is_told() -> None:
    seen: list[str] = []
    recorded: list[str | None] = []

    def answer(s: Script) -> list[Any]:
        task_id = s.reply().split('Task ', 1)[1].split(' ', 1)[0]
        record = toolset.manager.get(task_id)
        assert record is not None
        recorded.append(record.question)
        return [call('answer_subagent', task_id=task_id, answer='the first')]

    script = Script(
        [
            [call('task', description='review', subagent_type='reviewer')],
            answer,
            lambda s: [call('wait_tasks', task_ids=[toolset.manager.list()[0].id])],
        ]
    )
    config = SubAgentConfig(name='reviewer', description='Reviews.', model=_asks_a_long_question(seen))
    toolset = create_subagent_toolset([config])
    async with toolset:
        await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    asked = script.replies[1][0]
    cut = len(LONG_QUESTION) - MAX_QUESTION_CHARS
    shown = f'{LONG_QUESTION[:MAX_QUESTION_CHARS]} [... {cut:,} more characters cut]'
    assert f'the subagent asks: {shown}\n' in asked
    assert len(asked) < MAX_QUESTION_CHARS + 500
    assert recorded == [shown]
    assert seen == [
        f'[Your question was {len(LONG_QUESTION):,} characters long; your parent saw only its first '
        f'{MAX_QUESTION_CHARS:,}. Keep questions short.]\nthe first'
    ]
    assert record.status is TaskStatus.COMPLETED


async def test_a_question_within_the_bound_is_kept_whole() -> None:
    question = 'y' * MAX_QUESTION_CHARS
    async with TaskManager() as manager:
        config = SubAgentConfig(name='w', model=_asks(question))
        record = await manager.start(config, 'go', scope='s')
        with anyio.fail_after(10):
            record = await manager.wait_for(record.id)
        assert record.question == question
        assert manager.answer(record.id, '1999') is True
        record = await manager.wait_for(record.id, until_question=False)
    assert record.result == 'Using 1999'


def _asks(question: str) -> FunctionModel:
    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': question})])
        return ModelResponse(parts=[TextPart(f'Using {returns[-1].content}')])

    return FunctionModel(child)


# --------------------------------------------------------------------------------------- outputs without JSON


def refers_to_itself(n: int) -> dict[str, Any]:
    """An output function whose result refers to itself: it has no JSON form."""
    found: dict[str, Any] = {'n': n}
    found['self'] = found
    return found


def raw_bytes(n: int) -> bytes:
    """An output function whose result is bytes that are not text."""
    return b'\xff\xfe' * n


def _reports_3(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {'n': 3})])


OUTPUTS = [
    pytest.param(refers_to_itself, "{'n': 3, 'self': {...}}", id='refers-to-itself'),
    pytest.param(raw_bytes, repr(b'\xff\xfe' * 3), id='bytes-not-text'),
]


@pytest.mark.parametrize(('output_type', 'shown'), OUTPUTS)
async def test_an_output_without_json_form_reaches_a_sync_caller_as_text(output_type: Any, shown: str) -> None:
    script = Script([[call('task', description='count', subagent_type='counter')]])
    config = SubAgentConfig(name='counter', model=FunctionModel(_reports_3), output_type=output_type)
    toolset = create_subagent_toolset([config])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
        (record,) = toolset.manager.list()
    assert [split_sync_reply(r) for r in script.replies[1]] == [(shown, record.id)]
    assert result.output == 'done'


@pytest.mark.parametrize(('output_type', 'shown'), OUTPUTS)
async def test_an_output_without_json_form_reaches_check_task_as_text(output_type: Any, shown: str) -> None:
    async def wait_then_check(s: Script) -> list[Any]:
        task_id = task_id_from(s.reply())
        await toolset.manager.wait_for(task_id)
        return [call('check_task', task_id=task_id)]

    script = Script([[call('task', description='count', subagent_type='counter', mode='async')], wait_then_check])
    config = SubAgentConfig(name='counter', model=FunctionModel(_reports_3), output_type=output_type)
    toolset = create_subagent_toolset([config])
    async with toolset:
        result = await Agent(script.model(), toolsets=[toolset]).run('go')
    assert script.replies[2][0].endswith(f'completed. Result:\n{shown}')
    assert result.output == 'done'


def test_an_output_whose_repr_fails_still_renders() -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError('no text form')

    assert render_output(Opaque()) == '<a Opaque that cannot be shown as text>'


# --------------------------------------------------------------------------------------- configs are released


async def test_a_config_given_to_start_is_released_with_its_task() -> None:
    async with TaskManager() as manager:
        refs: list[weakref.ref[SubAgentConfig]] = []

        async def start_once(i: int) -> None:
            config = SubAgentConfig(name=f'once-{i}', model=child_text('done'))
            refs.append(weakref.ref(config))
            record = await manager.start(config, 'go', scope='s')
            record = await manager.wait_for(record.id)
            assert record.status is TaskStatus.COMPLETED

        for i in range(20):
            await start_once(i)
        gc.collect()
        assert [r() for r in refs] == [None] * 20
        assert manager._starter._agents == {}  # pyright: ignore[reportPrivateUsage]


async def test_a_config_that_lives_on_keeps_its_agent() -> None:
    config = SubAgentConfig(name='kept', model=child_text('done'))
    async with TaskManager() as manager:
        for _ in range(2):
            record = await manager.start(config, 'go', scope='s')
            await manager.wait_for(record.id)
            gc.collect()
        agents = manager._starter._agents  # pyright: ignore[reportPrivateUsage]
        assert list(agents) == [id(config)]
        agent = agents[id(config)][1]
        record = await manager.start(config, 'again', scope='s')
        await manager.wait_for(record.id)
        assert agents[id(config)][1] is agent
