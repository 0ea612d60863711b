"""A web API and a live dashboard for a [`TaskManager`][pydantic_ai_subagents.TaskManager]'s tasks.

Needs the `web` extra (`pip install 'pydantic-ai-subagents[web]'`): FastAPI, and uvicorn to serve the demo app.

```python
from fastapi import FastAPI, HTTPException, Request

from pydantic_ai_subagents import create_subagent_toolset
from pydantic_ai_subagents.web import create_router

toolset = create_subagent_toolset([...])  # the toolset your agent uses


def require_operator(request: Request) -> None:
    if not is_operator(request.cookies.get('session')):  # your own check
        raise HTTPException(401, 'not authenticated')


app = FastAPI()
app.include_router(create_router(toolset.manager, auth=require_operator, prefix='/subagents'))
```

The dashboard is then at `/subagents/`.

The routes follow the task methods of the A2A protocol: `GET /tasks` (list), `GET /tasks/{task_id}` (get),
`GET /tasks/{task_id}/activity` (its last tool calls and cost, once it has ended),
`POST /tasks/{task_id}/cancel` (cancel, `{"kind": "soft" | "hard"}`), `POST /tasks/{task_id}/answer` (answer a
subagent's question), `POST /tasks/{task_id}/message` (steer a running task),
`POST /tasks/{task_id}/continue` (follow up a completed task, for an app given `subagents=`), `GET /tasks/events`
(server-sent events, resumable with `Last-Event-ID`) and `GET /` (the dashboard page). Authentication is required
by default: pass an `auth` dependency, or `allow_unauthenticated=True` for local use only.
"""

from __future__ import annotations

from importlib.util import find_spec

if find_spec('fastapi') is None:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.web needs FastAPI: install the web extra, pip install "pydantic-ai-subagents[web]"'
    )

from ._activity import CostView, TaskActivity, ToolCallView
from ._app import create_app
from ._models import (
    AnswerTaskBody,
    AnswerTaskResult,
    CancelTaskBody,
    CancelTaskResult,
    CancelView,
    ContinueTaskBody,
    ContinueTaskResult,
    ErrorDetail,
    MessageTaskBody,
    MessageTaskResult,
    StatusView,
    TaskList,
    TaskView,
    UsageView,
    event_to_json,
    render_text,
)
from ._router import REQUESTED_BY, create_router

__all__ = (
    'REQUESTED_BY',
    'AnswerTaskBody',
    'AnswerTaskResult',
    'CancelTaskBody',
    'CancelTaskResult',
    'CancelView',
    'ContinueTaskBody',
    'ContinueTaskResult',
    'CostView',
    'ErrorDetail',
    'MessageTaskBody',
    'MessageTaskResult',
    'StatusView',
    'TaskActivity',
    'TaskList',
    'TaskView',
    'ToolCallView',
    'UsageView',
    'create_app',
    'create_router',
    'event_to_json',
    'render_text',
)
