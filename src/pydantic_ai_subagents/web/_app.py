"""A ready FastAPI app around the router, for demos and small deployments."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic_ai.models import Model
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from .._config import SubAgentConfig
from .._manager import TaskManager
from ._body import MAX_BODY_BYTES
from ._router import create_router
from ._sse import EVENT_HISTORY

__all__ = ('create_app',)


def create_app(
    manager: TaskManager,
    *,
    auth: Callable[..., Any] | None = None,
    allow_unauthenticated: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    title: str = 'Subagent tasks',
    max_body_bytes: int = MAX_BODY_BYTES,
    event_history: int = EVENT_HISTORY,
    subagents: Iterable[SubAgentConfig] | None = None,
    model: Model | str | None = None,
    deps: Any = None,
) -> FastAPI:
    """A FastAPI app serving [`create_router`][pydantic_ai_subagents.web.create_router]'s routes at the root.

    The dashboard is at `/`, the API under `/tasks`, and FastAPI's OpenAPI schema at `/openapi.json` (with its
    documentation pages at `/docs` and `/redoc`, which show the schema only, not any task).

    The app does not own `manager`: start and close the manager (or its toolset) around the server yourself.

    Args:
        manager: The task manager to expose.
        auth: The dependency that authenticates every request; see `create_router`.
        allow_unauthenticated: Serve without `auth`, for local use only.
        allowed_hosts: If given, requests whose `Host` header names another host are refused (Starlette's
            `TrustedHostMiddleware`). For a local server, `['127.0.0.1', 'localhost']` keeps a web page from
            reaching it through a DNS rebinding attack.
        title: The app's title in the OpenAPI schema.
        max_body_bytes: Largest body a control route accepts (`413` beyond it); see `create_router`.
        event_history: How many recent events the event stream keeps for clients that reconnect; see
            `create_router`.
        subagents: The subagents whose finished tasks the app may continue (`POST /tasks/{task_id}/continue` and
            the dashboard's follow-up box), e.g. `toolset.subagents.values()`; see `create_router`.
        model: The model of a follow-up whose subagent has none of its own; see `create_router`.
        deps: The deps of a follow-up's subagent; see `create_router`.

    Raises:
        ValueError: neither `auth` nor `allow_unauthenticated=True` was given, a limit is below 1, or two
            `subagents` have the same name.
        TypeError: `subagents` is not a list of `SubAgentConfig`.
    """
    router = create_router(
        manager,
        auth=auth,
        allow_unauthenticated=allow_unauthenticated,
        max_body_bytes=max_body_bytes,
        event_history=event_history,
        subagents=subagents,
        model=model,
        deps=deps,
    )
    app = FastAPI(
        title=title,
        version=__version__,
        description='Watch and control the tasks a Pydantic AI agent delegated to its subagents.',
    )
    app.include_router(router)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app
