"""A ready FastAPI app around the router, for demos and small deployments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from .. import __version__
from .._manager import TaskManager
from ._router import create_router

__all__ = ('create_app',)


def create_app(
    manager: TaskManager,
    *,
    auth: Callable[..., Any] | None = None,
    allow_unauthenticated: bool = False,
    title: str = 'Subagent tasks',
) -> FastAPI:
    """A FastAPI app serving [`create_router`][pydantic_ai_subagents.web.create_router]'s routes at the root.

    The dashboard is at `/`, the API under `/tasks`, and FastAPI's OpenAPI schema at `/openapi.json` (with its
    documentation pages at `/docs` and `/redoc`, which show the schema only, not any task).

    The app does not own `manager`: start and close the manager (or its toolset) around the server yourself.

    Args:
        manager: The task manager to expose.
        auth: The dependency that authenticates every request; see `create_router`.
        allow_unauthenticated: Serve without `auth`, for local use only.
        title: The app's title in the OpenAPI schema.

    Raises:
        ValueError: neither `auth` nor `allow_unauthenticated=True` was given.
    """
    router = create_router(manager, auth=auth, allow_unauthenticated=allow_unauthenticated)
    app = FastAPI(
        title=title,
        version=__version__,
        description='Watch and control the tasks a Pydantic AI agent delegated to its subagents.',
    )
    app.include_router(router)
    return app
