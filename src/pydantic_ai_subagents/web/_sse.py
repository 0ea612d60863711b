"""The server-sent events stream of task events, with event ids so that a client can resume where it left off.

The stream is served by FastAPI's own server-sent events support (`EventSourceResponse`). Events come from an
`EventJournal`, which numbers every task event and keeps the most recent ones: each event goes out with an `id:`,
and a client that reconnects with `Last-Event-ID` (a browser's `EventSource` does so by itself) gets the events it
missed. When they are no longer kept (or the id is not one this server gave), the client gets a `Resync` event
instead: its view may be stale and it should read the tasks again (`GET /tasks`); the events after it are current.

One journal is shared by all the streams of a router while the app's lifespan runs (uvicorn runs it; FastAPI runs a
router's lifespan as part of the app's). A stream served without it (an app whose lifespan is not run) gets a
journal of its own, which lives as long as that stream, so resuming then always gives a `Resync`.

A journal reads [`TaskManager.events`][pydantic_ai_subagents.TaskManager.events] when it runs on the manager's
event loop, and follows snapshots (see `_poll`) when the manager runs on another loop or has not started yet; it
switches to the manager's events once the manager starts on its loop, with a `Resync` at the switch.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import aclosing, contextmanager
from itertools import islice
from typing import Any, Literal

import anyio
from fastapi.sse import ServerSentEvent
from pydantic_core import to_json

from .._errors import ManagerClosedError, SubagentsError
from .._events import TaskCancelRequested, TaskEvent, TaskRunEvent, created_event
from .._manager import TaskManager
from ._models import event_to_json
from ._poll import SnapshotFollower, runs_here

__all__ = ('EVENT_HISTORY', 'RETRY_MILLISECONDS', 'EventJournal', 'current_loop', 'stream_events')

logger = logging.getLogger('pydantic_ai_subagents')

RETRY_MILLISECONDS = 2000
"""How long a browser waits before reconnecting a dropped stream."""

EVENT_HISTORY = 1000
"""How many recent events a journal keeps for clients that reconnect.

A thousand events cover a few minutes of a busy manager (every task makes three to five), which is longer than a
browser takes to reconnect; a client that was away longer reads the tasks again.
"""


def current_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio event loop, or `None`."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not asyncio
        return None


class EventJournal:
    """Numbers a manager's task events and keeps the most recent ones, for every stream of one router.

    Event ids are `<journal>-<number>`: `<journal>` is random per journal, so an id from another server (or from
    before a restart) is recognised as unknown rather than taken for a position here.
    """

    def __init__(self, manager: TaskManager, *, size: int = EVENT_HISTORY, poll_interval: float = 0.25) -> None:
        """Prepare a journal of `manager`'s events; `run` feeds it.

        Args:
            manager: The task manager whose events are recorded.
            size: How many recent events are kept.
            poll_interval: When the manager runs on another loop (or has not started), its tasks are read this
                often (seconds).
        """
        self.manager = manager
        self.poll_interval = poll_interval
        self.name = secrets.token_hex(4)
        self.head = 0
        """The number of the latest event; `0` before the first."""
        self.closed = False
        """Whether the journal stopped: the manager was closed (or the journal's owner went away)."""
        self.loop = current_loop()
        """The event loop the journal was made on; only streams on that loop can share it."""
        self._events: deque[tuple[int, TaskEvent | None]] = deque(maxlen=size)
        self._changed: anyio.Event | None = None
        self._listeners = 0
        self._first_listener: anyio.Event | None = None

    def event_id(self, number: int) -> str:
        """The `id:` of event `number`."""
        return f'{self.name}-{number}'

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The number after which a client that last saw `last_event_id` resumes; `None` if it cannot resume."""
        if last_event_id is None:
            return None
        name, _, number = last_event_id.strip().partition('-')
        if name != self.name or not number.isdigit():
            return None
        seen = int(number)
        return seen if self._oldest() - 1 <= seen <= self.head else None

    def after(self, number: int) -> list[tuple[int, TaskEvent | None]] | None:
        """The events after `number` (`None` standing for a resync), or `None` if some of them are gone."""
        oldest = self._oldest()
        if number < oldest - 1:
            return None
        return list(islice(self._events, number - oldest + 1, None))

    async def wait(self, number: int) -> None:
        """Wait until there is an event after `number`, or the journal is closed."""
        while self.head == number and not self.closed:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def record(self, event: TaskEvent | None) -> None:
        """Append an event (`None`: tell every stream to resync) and wake the streams."""
        self.head += 1
        self._events.append((self.head, event))
        self._wake()

    @contextmanager
    def listening(self) -> Generator[None]:
        """Count a stream as listening while in this block; snapshots are only compared while one is."""
        self._listeners += 1
        if self._first_listener is not None:
            self._first_listener.set()
            self._first_listener = None
        try:
            yield
        finally:
            self._listeners -= 1

    async def _listened(self) -> None:
        while self._listeners == 0 and not self.manager.closed:
            if self._first_listener is None:
                self._first_listener = anyio.Event()
            with anyio.move_on_after(self.poll_interval * 4):  # now and then, to notice a closed manager
                await self._first_listener.wait()

    def close(self) -> None:
        """Mark the journal closed: the streams end once they have sent what it holds."""
        self.closed = True
        self._wake()

    async def run(self) -> None:
        """Record the manager's events until it is closed; the journal is closed when this returns (or is cancelled).

        A failure while reading the events closes the journal (its streams end, and browsers reconnect) and is
        logged; it never reaches whoever runs the journal, which may be the app's lifespan.
        """
        try:
            await self._follow()
        except Exception:
            logger.exception('reading the task events for the event stream failed')
        finally:
            self.close()

    async def _follow(self) -> None:
        manager = self.manager
        follower: SnapshotFollower | None = None
        while not manager.closed:
            if runs_here(manager):
                if follower is not None:
                    self.record(None)  # what happened between the last snapshot and the subscription is not known
                    follower = None
                try:
                    async with aclosing(manager.events()) as events:
                        async for event in events:
                            self.record(event)
                    return  # the manager was closed
                except ManagerClosedError:
                    return
                except SubagentsError:
                    pass  # it has just moved to another loop
            if follower is None:
                follower = SnapshotFollower(manager, None)
                for event in follower.start():
                    self.record(event)
            await anyio.sleep(self.poll_interval)
            # Nobody listening: nothing is lost by waiting, since the next comparison still finds every change.
            await self._listened()
            for event in follower.changes():
                self.record(event)

    def _oldest(self) -> int:
        return self._events[0][0] if self._events else self.head + 1

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def _data(payload: dict[str, Any]) -> str:
    return to_json(payload, fallback=str).decode()


async def stream_events(
    journal: EventJournal,
    scope: str | None,
    *,
    last_event_id: str | None,
    heartbeat: float,
    snapshot: bool,
    client_gone: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The server-sent events of one stream: what the client missed (or a resync), then every event as it comes.

    Args:
        journal: Where the events come from.
        scope: Only this scope's tasks; `None` for all.
        last_event_id: The client's `Last-Event-ID`, when it reconnects.
        heartbeat: Seconds of silence after which a keep-alive comment is sent.
        snapshot: Start a new client with a `TaskCreated` for each live task (with its current status). Not needed
            with a journal of the stream's own, whose first events are just that.
        client_gone: Returns when the client has disconnected, for servers that do not tell the response
            themselves (ASGI 2.4 servers only tell it by failing the next send); `None` when they do.
    """
    with journal.listening():
        # Where this client starts is settled before anything is sent.
        opening = [ServerSentEvent(retry=RETRY_MILLISECONDS)]
        # The snapshot is read from the tasks, which can be a little ahead of the journal: the transitions it
        # already shows (up to this time, by task) are not sent again when the journal catches up.
        covered: dict[str, float] = {}
        position = journal.resume_point(last_event_id)
        if position is None:
            if last_event_id is not None:
                opening.append(_resync(journal, journal.head, 'the events after this id are not kept here'))
            if snapshot:
                position = journal.head
                messages, covered = _snapshot(journal, position, scope)
                opening.extend(messages)
            else:
                position = 0
        for event in opening:
            yield event
        while True:
            entries = journal.after(position)
            if entries is None:
                # This client fell behind by more than the journal keeps: it starts again from now.
                position = journal.head
                yield _resync(journal, position, 'the stream fell behind')
                messages, covered = _snapshot(journal, position, scope)
                for message in messages:
                    yield message
                continue
            for number, event in entries:
                position = number
                if event is None:
                    yield _resync(journal, number, 'the event source changed')
                elif (scope is None or event.scope == scope) and not _shown(event, covered):
                    yield _message(journal, number, event)
            if journal.closed and position == journal.head:
                return
            outcome = await _wait(journal, position, heartbeat, client_gone)
            if outcome == 'gone':
                return
            if outcome == 'quiet':
                yield ServerSentEvent(comment='keep-alive')


async def _wait(
    journal: EventJournal, position: int, heartbeat: float, client_gone: Callable[[], Awaitable[None]] | None
) -> Literal['event', 'quiet', 'gone']:
    """Wait for an event after `position`, for at most `heartbeat` seconds, or until the client goes away."""
    outcome: Literal['event', 'quiet', 'gone'] = 'quiet'
    with anyio.move_on_after(heartbeat):
        if client_gone is None:
            await journal.wait(position)
            outcome = 'event'
        else:
            async with anyio.create_task_group() as tg:

                async def until_event() -> None:
                    nonlocal outcome
                    await journal.wait(position)
                    outcome = 'event'
                    tg.cancel_scope.cancel()

                tg.start_soon(until_event)
                await client_gone()
                outcome = 'gone'
                tg.cancel_scope.cancel()
    return outcome


def _snapshot(
    journal: EventJournal, position: int, scope: str | None
) -> tuple[list[ServerSentEvent], dict[str, float]]:
    """A `TaskCreated` for each live task, with its current status, all with the id of event `position`.

    Also the time of each task's latest transition, which the snapshot shows.
    """
    events = [created_event(r) for r in journal.manager.list(scope) if not r.is_terminal]
    return [_message(journal, position, e) for e in events], {e.task_id: e.at for e in events}


def _shown(event: TaskEvent, covered: dict[str, float]) -> bool:
    """Whether a snapshot already showed `event`'s transition (a status change no later than it)."""
    if isinstance(event, TaskCancelRequested | TaskRunEvent):
        return False  # not a transition: a snapshot's `TaskCreated` does not show it
    at = covered.get(event.task_id)
    return at is not None and event.at <= at


def _message(journal: EventJournal, number: int, event: TaskEvent) -> ServerSentEvent:
    return ServerSentEvent(raw_data=_data(event_to_json(event)), id=journal.event_id(number))


def _resync(journal: EventJournal, number: int, reason: str) -> ServerSentEvent:
    return ServerSentEvent(raw_data=_data({'type': 'Resync', 'reason': reason}), id=journal.event_id(number))
