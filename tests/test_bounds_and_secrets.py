"""What reaches the parent model stays bounded and secret-free; what a task keeps is released with it.

- Secrets in error texts: credentials in URLs, GitHub tokens, `Authorization` headers and JWTs are masked
  (property-based: the secrets are generated, inside generated sentences).
- A subagent's question is bounded where it is recorded.
- An output that cannot be turned into JSON reaches the parent in its text form.
- A config given to `manager.start` is not kept (with its agent) after its task ends.
"""

from __future__ import annotations

import base64
import json
import string
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pydantic_ai_subagents._run import safe_error

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
