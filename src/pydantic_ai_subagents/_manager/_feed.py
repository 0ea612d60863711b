"""The task events an application reads: the live tasks first, then every event as it happens."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from .._bus import MessageBus
from .._errors import BusClosedError
from .._events import EVENTS_TOPIC, TaskEvent, TaskEventMessage, created_event
from .._state import TaskStore
from ._sharing import Sharing

__all__ = ('task_events',)


async def task_events(
    bus: MessageBus, store: TaskStore, sharing: Sharing, scope: str | None, max_buffer: int
) -> AsyncGenerator[TaskEvent]:
    """A `TaskCreated` for each live task (with its status), then each event of `scope` (or all) as it happens.

    A record that comes with another process's event is applied to this process's copy before the event is
    yielded, so whoever reads the record on the event sees at least what the event says.
    """
    subscription = bus.subscribe(EVENTS_TOPIC, max_buffer=max_buffer, overflow='drop_oldest')
    shared = sharing.shared is not None
    try:
        for record in store.list(scope, active_only=True):
            yield created_event(record)
        async for message in subscription:
            if isinstance(message, TaskEventMessage) and (scope is None or message.event.scope == scope):
                if message.record is not None and shared and message.sender != sharing.participant:
                    sharing.apply(message.record)
                yield message.event
    except BusClosedError:
        return
    finally:
        subscription.close()
