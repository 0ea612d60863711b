"""How messages travel through Redis: JSON envelopes naming the message class, and the registry of those classes.

An envelope is a JSON object:

```json
{"v": 1, "type": "Progress", "origin": "<bus instance id>", "reply_to": null, "data": {"sender": "...", ...}}
```

`type` names a registered [`Message`][pydantic_ai_subagents.Message] subclass and `data` holds its fields, turned
into JSON (and back) by a Pydantic `TypeAdapter` of that class. The built-in message kinds are registered
out of the box, and so is the manager's `TaskEventMessage` (its event travels with its class name);
[`register_message_type`][pydantic_ai_subagents.redis.register_message_type] adds more, as long as every field is
something Pydantic can round-trip through JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from functools import partial
from typing import Any, Final, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.messages import AgentStreamEvent

from .._bus import Answer, CancelRequest, Message, Progress, Question, StatusChanged, TaskAssigned, TaskResult
from .._errors import BusError
from .._events import (
    TaskAnswered,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskEventMessage,
    TaskFailed,
    TaskQuestionAsked,
    TaskRetrying,
    TaskRunEvent,
    TaskStarted,
)
from .._remote import ClaimReply, SteerMessage, TaskClaim, WorkerUpdate
from .._state import TaskRecord

__all__ = (
    'Envelope',
    'MessageCodecError',
    'decode',
    'encode',
    'is_registered',
    'register_message_type',
)

ENVELOPE_VERSION: Final = 1
"""The version written into every envelope; envelopes of another version are refused."""

_M = TypeVar('_M', bound=type[Message])

_Dump = Callable[[Message], Any]
_Load = Callable[[Any], Message]

_BY_NAME: dict[str, type[Message]] = {}
_BY_CLASS: dict[type[Message], tuple[str, _Dump, _Load]] = {}


class MessageCodecError(BusError):
    """A message could not be turned into JSON for Redis, or a JSON envelope read from Redis into a message."""


def register_message_type(cls: _M, *, name: str | None = None) -> _M:
    """Let messages of class `cls` cross processes through a Redis bus.

    Every process that sends or receives the class must register it under the same name. Usable as a decorator.

    Args:
        cls: A [`Message`][pydantic_ai_subagents.Message] subclass whose fields Pydantic can dump to JSON and
            validate back (strings, numbers, literals, Pydantic models, plain dataclasses of those, ...).
        name: The name written into envelopes; the class name by default.

    Returns:
        `cls`, unchanged.

    Raises:
        TypeError: `cls` is not a `Message` subclass.
        ValueError: Another class is already registered under `name`.
    """
    if not (isinstance(cls, type) and issubclass(cls, Message)):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f'{cls!r} is not a Message subclass')
    adapter: TypeAdapter[Any] = TypeAdapter(cls)
    _register(cls, name or cls.__name__, partial(adapter.dump_python, mode='json'), adapter.validate_python)
    return cls


def _register(cls: type[Message], type_name: str, dump: _Dump, load: _Load) -> None:
    known = _BY_NAME.get(type_name)
    if known is not None and known is not cls:
        raise ValueError(f'message type name {type_name!r} is already registered for {known.__qualname__}')
    _BY_NAME[type_name] = cls
    _BY_CLASS[cls] = (type_name, dump, load)


def is_registered(cls: type[Message]) -> bool:
    """Whether messages of exactly this class can cross processes."""
    return cls in _BY_CLASS


for _builtin in (
    TaskAssigned,
    CancelRequest,
    Question,
    Answer,
    Progress,
    TaskResult,
    StatusChanged,
    TaskClaim,
    ClaimReply,
    WorkerUpdate,
    SteerMessage,
):
    register_message_type(_builtin)


# Task events travel with the record they change, so that other processes can update their copy of the store.
# `TaskEventMessage.event` is a class hierarchy, so the event's own class name travels with its fields.
_EVENT_CLASSES: dict[str, type[TaskEvent]] = {
    cls.__name__: cls
    for cls in (
        TaskCreated,
        TaskStarted,
        TaskQuestionAsked,
        TaskAnswered,
        TaskCancelRequested,
        TaskCompleted,
        TaskFailed,
        TaskCancelled,
        TaskRunEvent,
        TaskRetrying,
    )
}
_EVENT_ADAPTERS: dict[type[TaskEvent], TypeAdapter[Any]] = {cls: TypeAdapter(cls) for cls in _EVENT_CLASSES.values()}
_RECORD_ADAPTER: TypeAdapter[TaskRecord] = TypeAdapter(TaskRecord)
_STREAM_EVENT_ADAPTER: TypeAdapter[AgentStreamEvent] = TypeAdapter(AgentStreamEvent)
_MESSAGE_FIELDS: Final = tuple(f.name for f in dataclass_fields(Message))


def _dump_task_event(message: Message) -> dict[str, Any]:
    assert isinstance(message, TaskEventMessage)
    event = message.event
    data: dict[str, Any] = {name: getattr(message, name) for name in _MESSAGE_FIELDS}
    event_data = _EVENT_ADAPTERS[type(event)].dump_python(event, mode='json')
    if isinstance(event, TaskRunEvent):
        event_data['event'] = _STREAM_EVENT_ADAPTER.dump_python(event.event, mode='json')
    data['event_type'] = type(event).__name__
    data['event'] = event_data
    data['record'] = None if message.record is None else _RECORD_ADAPTER.dump_python(message.record, mode='json')
    return data


def _load_task_event(data: Any) -> Message:
    if not isinstance(data, dict):
        raise ValueError('a TaskEventMessage must be a JSON object')
    fields_: dict[str, Any] = dict(data)  # pyright: ignore[reportUnknownArgumentType]
    event_cls = _EVENT_CLASSES.get(fields_.pop('event_type', None))
    if event_cls is None:
        raise ValueError('unknown task event type')
    event_data = fields_.pop('event')
    event = _EVENT_ADAPTERS[event_cls].validate_python(event_data)
    if isinstance(event, TaskRunEvent):
        event.event = _STREAM_EVENT_ADAPTER.validate_python(event_data.get('event'))
    raw_record = fields_.pop('record', None)
    record = None if raw_record is None else _RECORD_ADAPTER.validate_python(raw_record)
    return TaskEventMessage(event=event, record=record, **fields_)


_register(TaskEventMessage, 'TaskEventMessage', _dump_task_event, _load_task_event)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message read from Redis, with the routing details that travelled with it."""

    message: Message
    """The message itself."""
    origin: str
    """Instance id of the bus that wrote it."""
    reply_to: str | None
    """Instance id of the bus waiting for the reply, when the message is a request made with `ask`."""


def encode(message: Message, *, origin: str, reply_to: str | None = None) -> str:
    """Turn `message` into a JSON envelope.

    Raises:
        MessageCodecError: The message's class is not registered, or a field cannot be dumped to JSON.
    """
    entry = _BY_CLASS.get(type(message))
    if entry is None:
        raise MessageCodecError(
            f'{type(message).__qualname__} is not registered for Redis, so it cannot leave this process; '
            'call pydantic_ai_subagents.redis.register_message_type on it in every process that uses it'
        )
    type_name, dump, _ = entry
    try:
        data = dump(message)
    except Exception as exc:
        raise MessageCodecError(f'cannot turn {type_name} into JSON: {exc}') from exc
    envelope = {'v': ENVELOPE_VERSION, 'type': type_name, 'origin': origin, 'reply_to': reply_to, 'data': data}
    return json.dumps(envelope, separators=(',', ':'))


def decode(raw: str | bytes) -> Envelope:
    """Turn a JSON envelope back into its message.

    Raises:
        MessageCodecError: The text is not an envelope of this version, names an unregistered type, or its
            fields do not fit that type.
    """
    try:
        envelope = json.loads(raw)
    except ValueError as exc:
        raise MessageCodecError(f'not JSON: {exc}') from exc
    if not isinstance(envelope, dict):
        raise MessageCodecError('envelope is not a JSON object')
    fields: dict[str, Any] = envelope  # pyright: ignore[reportUnknownVariableType]
    if fields.get('v') != ENVELOPE_VERSION:
        raise MessageCodecError(f'unsupported envelope version {fields.get("v")!r}')
    type_name = fields.get('type')
    cls = _BY_NAME.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MessageCodecError(
            f'unknown message type {type_name!r}; register it with register_message_type in this process'
        )
    origin = fields.get('origin')
    reply_to = fields.get('reply_to')
    if not isinstance(origin, str) or not (reply_to is None or isinstance(reply_to, str)):
        raise MessageCodecError('envelope has a malformed origin or reply_to')
    load = _BY_CLASS[cls][2]
    try:
        message = load(fields.get('data'))
    except (ValidationError, ValueError, TypeError, AttributeError) as exc:
        raise MessageCodecError(f'fields do not fit {type_name}: {exc}') from exc
    assert isinstance(message, Message)
    return Envelope(message=message, origin=origin, reply_to=reply_to)
