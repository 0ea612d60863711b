"""The FastAPI router: list, read, cancel and answer tasks, stream their events, and serve the dashboard.

Status codes, for every route:

- `401`/`403`: whatever the `auth` dependency raises to refuse a request. Nothing else runs, and the body of a
  refused request is never read.
- `413`: a control route's body is larger than `max_body_bytes`; it is refused while it arrives, never held whole.
- `404`: the task is unknown, was pruned, or (when `?scope=` is given) belongs to another scope; the reply is the
  same in every case, so a scope filter never reveals that an id exists elsewhere.
- `409`: `POST .../cancel` or `POST .../message` on a task that has already finished (A2A's "task not
  cancelable"); `POST .../continue` on a task that cannot be continued (still live, not completed, its conversation
  no longer kept here, its subagent not given to the app) or whose follow-up is refused.
- `422`: a malformed request: a bad body, an unknown `state`, a blank answer, or a body that is not JSON (or not
  sent as `application/json`).
- `501`: `POST .../continue` on an app made without `subagents`.

A cancel that repeats an earlier one (or is weaker than it), an answer to a task that is not waiting for one and a
message to a task that cannot take it now (being cancelled, in another process) are not errors: they reply `200`
with `accepted: false` and the task as it is.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic_ai.models import Model

from .._config import SubAgentConfig
from .._manager import TaskManager
from .._state import TaskRecord, TaskStatus
from ._activity import TaskActivity, task_activity
from ._body import MAX_BODY_BYTES, read_json_body, request_body_openapi
from ._continue import NOT_CONFIGURED, FollowUps, subagents_by_name
from ._dashboard import dashboard_response
from ._models import (
    AnswerTaskBody,
    AnswerTaskResult,
    CancelTaskBody,
    CancelTaskResult,
    ContinueTaskBody,
    ContinueTaskResult,
    ErrorDetail,
    MessageTaskBody,
    MessageTaskResult,
    TaskList,
    TaskView,
    task_views,
)
from ._sse import EVENT_HISTORY, EventJournal, current_loop, stream_events

__all__ = ('REQUESTED_BY', 'create_router')

REQUESTED_BY = 'web'
"""How cancel requests made through the API are recorded on a task (`TaskRecord.cancel.requested_by`)."""

ScopeQuery = Annotated[
    str | None,
    Query(description='Only tasks of this scope (a conversation id). Without it, every scope is visible.'),
]


async def _disconnected(request: Request) -> None:
    while (await request.receive())['type'] != 'http.disconnect':
        pass


def create_router(
    manager: TaskManager,
    *,
    auth: Callable[..., Any] | None = None,
    allow_unauthenticated: bool = False,
    prefix: str = '',
    heartbeat: float = 15.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    event_history: int = EVENT_HISTORY,
    subagents: Iterable[SubAgentConfig] | None = None,
    model: Model | str | None = None,
    deps: Any = None,
) -> APIRouter:
    """Build the router that exposes `manager`'s tasks over HTTP, with a live dashboard at `{prefix}/`.

    Whoever passes `auth` sees and controls the tasks of every scope: `?scope=` is a filter, not a permission.

    Best served on the event loop the manager runs on (for instance `uvicorn.Server(config).serve()` in the same
    task group as the agent), with the manager started first (`async with toolset:`): the event stream then relays
    the manager's own events. The routes also work from a server on another thread, and the app never starts the
    manager itself: the control routes hand their calls to the manager's loop, and an event stream opened on
    another loop, or before the manager has started, follows the tasks by reading snapshots a few times a second.

    The browser dashboard reads the event stream with `EventSource`, which cannot add headers: protect it with an
    `auth` that reads a cookie or HTTP basic credentials. The control routes only accept JSON bodies, so a
    cross-site form cannot post to them.

    `auth` runs before anything else, the reading of a request's body included, and a control route reads its
    body only up to `max_body_bytes`.

    Args:
        manager: The task manager to expose.
        auth: A FastAPI dependency every route depends on (the dashboard and the event stream included). It
            refuses a request by raising `HTTPException(401)` or `HTTPException(403)`. Required unless
            `allow_unauthenticated` is true.
        allow_unauthenticated: Serve without `auth`. Anyone who reaches the server can then read every task and
            cancel it: only for local development.
        prefix: Path prefix of every route, e.g. `'/subagents'`.
        heartbeat: Seconds between keep-alive comments on an idle event stream.
        max_body_bytes: Largest body a control route accepts; a larger one is refused with `413` as soon as it is
            seen to be larger, without being read whole. The default (256 KiB) fits the longest answer.
        event_history: How many recent task events are kept for event-stream clients that reconnect with
            `Last-Event-ID`; one that missed more gets a `Resync` event and reads the tasks again.
        subagents: The subagents whose finished tasks `POST /tasks/{task_id}/continue` may follow up, the same
            configs the toolset has (`toolset.subagents.values()`, which includes `general-purpose`). Without them,
            that route answers `501` and the dashboard offers no follow-up.
        model: The model of a follow-up whose subagent has none of its own, as the parent's model is for the
            agent's tasks. Without it, such a task cannot be continued from here (`409`).
        deps: The deps of a follow-up's subagent, mapped by its config's `deps` as the parent's deps are.

    Raises:
        ValueError: neither `auth` nor `allow_unauthenticated=True` was given, a limit is below 1, or two
            `subagents` have the same name.
        TypeError: `subagents` is not a list of `SubAgentConfig`.
    """
    if auth is None and not allow_unauthenticated:
        raise ValueError(
            'create_router needs an `auth` dependency that refuses unauthorized requests (raise HTTPException(401) '
            'or 403); pass allow_unauthenticated=True only to serve without authentication on a trusted machine'
        )
    responses: dict[int | str, dict[str, Any]] = {}
    if auth is not None:
        responses = {
            401: {'model': ErrorDetail, 'description': 'Not authenticated'},
            403: {'model': ErrorDetail, 'description': 'Not allowed'},
        }
    if max_body_bytes < 1:
        raise ValueError(f'max_body_bytes must be at least 1, not {max_body_bytes}')
    if event_history < 1:
        raise ValueError(f'event_history must be at least 1, not {event_history}')
    suffix = re.sub(r'\W+', '_', prefix).strip('_')
    follow_ups = FollowUps(manager, subagents_by_name(subagents), model=model, deps=deps)

    def operation_id(route: APIRoute) -> str:
        # `subagents_list_tasks`, ...; a router under a prefix adds it, so two routers can share an app.
        return f'{route.name}_{suffix}' if suffix else route.name

    shared: list[EventJournal] = []  # the router's journal, while the app's lifespan runs

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncGenerator[None]:
        journal = EventJournal(manager, size=event_history)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run)
            shared.append(journal)
            try:
                yield
            finally:
                shared.remove(journal)
                tg.cancel_scope.cancel()

    async def open_journal() -> AsyncGenerator[EventJournal]:
        # Runs after `auth` (a router dependency comes first), and lasts as long as the stream.
        if manager.closed:
            raise HTTPException(503, 'the task manager is closed')
        journal = next((j for j in shared if j.loop is current_loop() and not j.closed), None)
        if journal is not None:
            yield journal
            return
        # No lifespan here (or it runs on another loop): this stream has a journal of its own.
        journal = EventJournal(manager, size=event_history)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run)
            try:
                yield journal
            finally:
                tg.cancel_scope.cancel()

    router = APIRouter(
        prefix=prefix,
        lifespan=lifespan,
        tags=['subagent tasks'],
        dependencies=[] if auth is None else [Depends(auth)],
        responses=responses,
        generate_unique_id_function=operation_id,
    )
    not_found: dict[int | str, dict[str, Any]] = {404: {'model': ErrorDetail, 'description': 'Unknown task'}}
    posting: dict[int | str, dict[str, Any]] = {
        **not_found,
        413: {'model': ErrorDetail, 'description': f'The body is larger than {max_body_bytes} bytes'},
    }
    controlling: dict[int | str, dict[str, Any]] = {
        **posting,
        409: {'model': ErrorDetail, 'description': 'The task has already finished'},
    }

    def find(task_id: str, scope: str | None) -> TaskRecord:
        record = manager.get(task_id, scope=scope)
        if record is None:
            raise HTTPException(404, f'task {task_id!r} not found')
        return record

    def current(record: TaskRecord) -> TaskRecord:
        return manager.get(record.id) or record

    def view(record: TaskRecord) -> TaskView:
        return task_views([record], manager.list(), follow_ups.can_continue)[0]

    async def control_live(task_id: str, scope: str | None, control: Callable[[], bool]) -> tuple[bool, TaskView]:
        """Run `control` on a task that has not finished: `409` if it had, or had by the time a refusal came back."""
        record = find(task_id, scope)
        if record.is_terminal:
            raise HTTPException(409, f'task {task_id!r} is already {record.status.value}')
        # The manager's control methods are safe from any thread: from a worker thread they run on its own loop,
        # whether or not this app shares that loop.
        accepted = await anyio.to_thread.run_sync(control)
        record = current(record)
        if not accepted and record.is_terminal:
            raise HTTPException(409, f'task {task_id!r} is already {record.status.value}')
        return accepted, view(record)

    @router.get('/', response_class=HTMLResponse, include_in_schema=False, name='subagents_dashboard')
    async def dashboard() -> HTMLResponse:  # pyright: ignore[reportUnusedFunction]
        """The dashboard page: a live task tree with answer and cancel controls."""
        return dashboard_response()

    @router.get('/tasks', name='subagents_list_tasks', summary='List tasks')
    async def list_tasks(  # pyright: ignore[reportUnusedFunction]
        scope: ScopeQuery = None,
        state: Annotated[
            list[TaskStatus] | None, Query(description='Only tasks in one of these states (repeatable).')
        ] = None,
    ) -> TaskList:
        """List tasks in creation order, optionally of one scope and in some states (A2A: `tasks/list`)."""
        records = manager.list(scope)
        if state:
            wanted = set(state)
            records = [r for r in records if r.status in wanted]
        return TaskList(tasks=task_views(records, manager.list(), follow_ups.can_continue))

    @router.get(
        '/tasks/events',
        name='subagents_task_events',
        summary='Stream task events',
        response_class=EventSourceResponse,
        responses={503: {'model': ErrorDetail, 'description': 'The task manager is closed'}},
    )
    async def task_events(  # pyright: ignore[reportUnusedFunction]
        request: Request,
        scope: ScopeQuery = None,
        last_event_id: Annotated[
            str | None,
            Header(description='The `id` of the last event received, to resume after it (browsers send it).'),
        ] = None,
        # A local dependency cannot be named in an annotation, which is only a string here.
        journal: EventJournal = Depends(open_journal),  # noqa: B008
    ) -> AsyncIterator[ServerSentEvent]:
        """Stream task events as server-sent events (A2A: `tasks/resubscribe`).

        First a `TaskCreated` for each live task (with its current status), then every event as it happens. Each
        event is one `data:` line of JSON (`type` (the event class), `task_id`, `status`, `timestamp` and the
        event's own fields) and an `id:`. A client that reconnects with `Last-Event-ID` gets the events it missed;
        if they are no longer kept, it gets `{"type": "Resync"}` instead, and should read the tasks again. The
        stream ends when the task manager is closed.
        """
        own = journal not in shared
        # Starlette's streaming response listens for the disconnect itself only on servers older than ASGI 2.4;
        # on newer ones this stream listens, so that a client that leaves an idle stream is noticed at once.
        spec = str(request.scope.get('asgi', {}).get('spec_version', '2.0'))
        newer = tuple(int(part) for part in spec.split('.') if part.isdigit()) >= (2, 4)
        events = stream_events(
            journal,
            scope,
            last_event_id=last_event_id,
            heartbeat=heartbeat,
            snapshot=not own,
            client_gone=partial(_disconnected, request) if newer else None,
        )
        async for event in events:
            yield event

    @router.get('/tasks/{task_id}', name='subagents_get_task', summary='Get a task', responses=not_found)
    async def get_task(task_id: str, scope: ScopeQuery = None) -> TaskView:  # pyright: ignore[reportUnusedFunction]
        """Read one task (A2A: `tasks/get`)."""
        return view(find(task_id, scope))

    @router.get(
        '/tasks/{task_id}/activity', name='subagents_task_activity', summary="A task's activity", responses=not_found
    )
    async def task_activity_route(  # pyright: ignore[reportUnusedFunction]
        task_id: str, scope: ScopeQuery = None
    ) -> TaskActivity:
        """A task's last tool calls and the cost of its requests, from its transcript (once it has ended)."""
        record = find(task_id, scope)
        return task_activity(record, manager.transcript(task_id))

    @router.post(
        '/tasks/{task_id}/cancel',
        name='subagents_cancel_task',
        summary='Cancel a task',
        openapi_extra=request_body_openapi(CancelTaskBody),
        responses=controlling,
    )
    async def cancel_task(  # pyright: ignore[reportUnusedFunction]
        task_id: str, request: Request, scope: ScopeQuery = None
    ) -> CancelTaskResult:
        """Cancel a task, softly (it wraps up with partial results) or hard (A2A: `tasks/cancel`).

        Hard-cancelling a task also stops every task it started. The reply comes at once: the state becomes
        `cancelled` when the subagent has really stopped (follow the event stream, or read the task again).
        A task that has already finished answers `409`; a request that repeats an earlier one (or is weaker than
        it) answers `accepted: false`.
        """
        # Read here, not as a parameter, so that `auth` has run before any of it is read.
        body = await read_json_body(request, CancelTaskBody, max_bytes=max_body_bytes)
        control = manager.hard_cancel if body.kind == 'hard' else manager.soft_cancel
        accepted, task = await control_live(task_id, scope, partial(control, task_id, requested_by=REQUESTED_BY))
        return CancelTaskResult(accepted=accepted, task=task)

    @router.post(
        '/tasks/{task_id}/answer',
        name='subagents_answer_task',
        summary="Answer a subagent's question",
        openapi_extra=request_body_openapi(AnswerTaskBody),
        responses=posting,
    )
    async def answer_task(  # pyright: ignore[reportUnusedFunction]
        task_id: str, request: Request, scope: ScopeQuery = None
    ) -> AnswerTaskResult:
        """Answer the question a task's subagent is waiting on.

        `accepted` is false when the task is not waiting for an answer (any more). The state turns back to
        `running` as soon as the subagent has the answer.
        """
        body = await read_json_body(request, AnswerTaskBody, max_bytes=max_body_bytes)
        record = find(task_id, scope)
        accepted = False
        if record.status is TaskStatus.WAITING_FOR_ANSWER:
            accepted = await anyio.to_thread.run_sync(manager.answer, task_id, body.answer)
        return AnswerTaskResult(accepted=accepted, task=view(current(record)))

    @router.post(
        '/tasks/{task_id}/message',
        name='subagents_message_task',
        summary='Send a running task a message',
        openapi_extra=request_body_openapi(MessageTaskBody),
        responses=controlling,
    )
    async def message_task(  # pyright: ignore[reportUnusedFunction]
        task_id: str, request: Request, scope: ScopeQuery = None
    ) -> MessageTaskResult:
        """Send new information or a correction into a task's running subagent (steering), without stopping it.

        The subagent reads it at its next model turn; a queued task reads it as it starts. Each message taken is
        listed in the task's `messages`. A task that has already finished answers `409`.
        """
        body = await read_json_body(request, MessageTaskBody, max_bytes=max_body_bytes)
        accepted, task = await control_live(task_id, scope, partial(manager.message_task, task_id, body.message))
        return MessageTaskResult(accepted=accepted, task=task)

    @router.post(
        '/tasks/{task_id}/continue',
        name='subagents_continue_task',
        summary='Continue a finished task',
        openapi_extra=request_body_openapi(ContinueTaskBody),
        responses={
            **posting,
            409: {'model': ErrorDetail, 'description': 'The task cannot be continued, or its follow-up was refused'},
            501: {'model': ErrorDetail, 'description': 'The app was made without subagents'},
            503: {'model': ErrorDetail, 'description': 'The task manager is closed or not running'},
        },
    )
    async def continue_task(  # pyright: ignore[reportUnusedFunction]
        task_id: str, request: Request, scope: ScopeQuery = None
    ) -> ContinueTaskResult:
        """Start a follow-up of a completed task: a new task on the same subagent, from the earlier conversation.

        The new task's subagent reads `message` after everything the earlier task's run said and did; its
        `continued_from` is the earlier task, which stays as it was (and can be continued again). The reply comes
        as soon as the follow-up is started. A task that is still live, did not complete, whose conversation is no
        longer kept here, or whose subagent the app was not given answers `409`, and so does a follow-up refused
        by the manager's `before_task` hook or its task limits.
        """
        if follow_ups.configs is None:
            raise HTTPException(501, NOT_CONFIGURED)
        body = await read_json_body(request, ContinueTaskBody, max_bytes=max_body_bytes)
        record = find(task_id, scope)
        started = await follow_ups.start(record, body)
        return ContinueTaskResult(task=view(current(started)))

    return router
