"""Reading a control route's JSON body, after authentication and within a size limit.

The control routes take the raw `Request` instead of a body parameter, so FastAPI reads nothing before the route's
dependencies (`auth` first) have run: an unauthenticated request is refused without its body being read at all.
The body is then read here, counted as it arrives, and refused with `413` as soon as it passes the limit (at once
when `Content-Length` already says so), so a huge body never sits in memory. The JSON content-type rule lives here
too, so it holds whatever FastAPI version serves the app.
"""

from __future__ import annotations

import email.message
import json
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

__all__ = ('MAX_BODY_BYTES', 'read_json_body', 'request_body_openapi')

MAX_BODY_BYTES = 256 * 1024
"""Default size limit of a control route's body, in bytes.

The largest legitimate body is an answer of `MAX_ANSWER_CHARS` (20,000) characters; written as JSON escapes (up to
12 bytes for a character outside the Basic Multilingual Plane) that is 240,000 bytes, which this leaves room for.
"""

ModelT = TypeVar('ModelT', bound=BaseModel)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message['content-type'] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == 'application' and (subtype == 'json' or subtype.endswith('+json'))


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    too_large = HTTPException(413, f'the request body is larger than {max_bytes} bytes')
    declared = request.headers.get('content-length')
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            # Stop reading here: the server discards (or closes the connection on) whatever is still coming.
            raise too_large
        chunks.append(chunk)
    return b''.join(chunks)


async def read_json_body(request: Request, model: type[ModelT], *, max_bytes: int) -> ModelT:
    """Read `request`'s body as JSON and validate it as `model`.

    Raises:
        HTTPException: `413` when the body is larger than `max_bytes`.
        RequestValidationError: `422` when the content type is not JSON, or the body is not valid JSON for `model`.
    """
    raw = await _read_limited(request, max_bytes)
    content_type = request.headers.get('content-type')
    if not _is_json(content_type):
        raise RequestValidationError(
            [
                {
                    'type': 'content_type',
                    'loc': ('header', 'content-type'),
                    'msg': 'the body must be JSON, sent with the application/json content type',
                    'input': content_type,
                }
            ]
        )
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        error = {'type': 'json_invalid', 'loc': ('body', e.start), 'msg': 'the body is not UTF-8', 'input': None}
        raise RequestValidationError([error]) from None
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        errors: list[dict[str, Any]] = json.loads(e.json(include_url=False))
        for error in errors:
            error['loc'] = ['body', *error['loc']]
        raise RequestValidationError(errors) from None


def request_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """The `openapi_extra` that documents `model` as a route's JSON request body."""
    return {
        'requestBody': {
            'required': True,
            'content': {'application/json': {'schema': model.model_json_schema()}},
        }
    }
