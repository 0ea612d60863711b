"""The server-sent events stream of task events.

One `data:` line of JSON per [`TaskEvent`][pydantic_ai_subagents.TaskEvent], separated by blank lines, as
`EventSource` expects; a comment line every few seconds keeps proxies from closing an idle stream. The stream ends
when the client goes away (it always listens for the disconnect, whatever ASGI version the server speaks) or when
the task manager is closed.

The events come from [`TaskManager.events`][pydantic_ai_subagents.TaskManager.events] when the app runs on the
manager's event loop, and from comparing task snapshots when it runs on another one or before the manager has
started (see `_poll`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic_core import to_json
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._errors import ManagerClosedError, SubagentsError
from .._events import TaskEvent
from .._manager import TaskManager
from ._models import event_to_json
from ._poll import poll_events, runs_here

__all__ = ('EventStreamResponse', 'format_event')

RETRY_MILLISECONDS = 2000
"""How long a browser waits before reconnecting a dropped stream."""


def format_event(event: TaskEvent) -> bytes:
    """One task event as a server-sent event: a single `data:` line of JSON and a blank line."""
    return b'data: ' + to_json(event_to_json(event), fallback=str) + b'\n\n'


class EventStreamResponse(Response):
    """A `text/event-stream` response that relays `manager.events(scope)` until the client or the manager leaves."""

    media_type = 'text/event-stream'

    def __init__(
        self,
        manager: TaskManager,
        scope: str | None,
        *,
        heartbeat: float = 15.0,
        poll_interval: float = 0.25,
        background: BackgroundTask | None = None,
    ) -> None:
        """Prepare the stream.

        Args:
            manager: The task manager whose events are relayed.
            scope: Only this scope's tasks; `None` for all.
            heartbeat: Seconds between keep-alive comments while no event comes.
            poll_interval: When the app does not run on the manager's event loop, the events are found by reading
                the tasks this often (seconds).
            background: A task to run after the response, as for any Starlette response.
        """
        self.manager = manager
        self.scope = scope
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.status_code = 200
        self.background = background
        self.init_headers({'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no'})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream events until the client disconnects or the manager is closed."""
        await send({'type': 'http.response.start', 'status': self.status_code, 'headers': self.raw_headers})
        # No buffer here: a slow client makes the manager's subscription buffer (bounded, dropping the oldest).
        outbox, inbox = anyio.create_memory_object_stream[bytes](0)
        with outbox, inbox:
            await self._stream(receive, send, outbox, inbox)
        if self.background is not None:
            await self.background()

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        outbox: MemoryObjectSendStream[bytes],
        inbox: MemoryObjectReceiveStream[bytes],
    ) -> None:
        disconnected = False
        async with anyio.create_task_group() as tg:

            async def relay() -> None:
                # Only this task reads the manager's events; the writer below is the only one that sends.
                async with outbox:
                    await self._relay_events(outbox)

            async def write() -> None:
                async with inbox:
                    await self._send_body(send, f'retry: {RETRY_MILLISECONDS}\n\n'.encode())
                    while True:
                        chunk = b''
                        with anyio.move_on_after(self.heartbeat):
                            try:
                                chunk = await inbox.receive()
                            except anyio.EndOfStream:
                                break
                        await self._send_body(send, chunk or b': keep-alive\n\n')
                tg.cancel_scope.cancel()

            async def watch() -> None:
                nonlocal disconnected
                while (await receive())['type'] != 'http.disconnect':
                    pass
                disconnected = True
                tg.cancel_scope.cancel()

            tg.start_soon(relay)
            tg.start_soon(write)
            tg.start_soon(watch)
        if not disconnected:
            await self._send_body(send, b'', more=False)

    async def _relay_events(self, outbox: MemoryObjectSendStream[bytes]) -> None:
        if runs_here(self.manager):
            try:
                await self._relay(self.manager.events(self.scope), outbox)
                return  # the manager was closed
            except ManagerClosedError:
                return
            except SubagentsError:
                pass  # it has just moved to another loop
        # Served from another thread, or the manager has not started yet (reading its events would start it
        # here): follow snapshots for as long as this stream lasts.
        await self._relay(poll_events(self.manager, self.scope, interval=self.poll_interval), outbox)

    @staticmethod
    async def _relay(events: AsyncIterator[TaskEvent], outbox: MemoryObjectSendStream[bytes]) -> None:
        try:
            async for event in events:
                await outbox.send(format_event(event))
        finally:
            # An async generator: close it now, so that its bus subscription goes at once.
            aclose: Callable[[], Awaitable[object]] | None = getattr(events, 'aclose', None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    @staticmethod
    async def _send_body(send: Send, body: bytes, *, more: bool = True) -> None:
        await send({'type': 'http.response.body', 'body': body, 'more_body': more})
