"""The dashboard page: one HTML document with its style and script inline, and no build step.

The page is static: it loads the tasks from the JSON API and follows the event stream. It never puts data into
HTML; on top of that, its Content-Security-Policy only lets the page's own script (by hash) run, so even a
rendering mistake could not run a script that came in with a task's text.
"""

from __future__ import annotations

import base64
import hashlib
from functools import cache
from importlib.resources import files

from fastapi.responses import HTMLResponse

__all__ = ('dashboard_html', 'dashboard_response')


def _read(name: str) -> str:
    return (files('pydantic_ai_subagents.web') / 'static' / name).read_text(encoding='utf-8')


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def _page() -> tuple[str, str]:
    style = _read('dashboard.css')
    script = _read('dashboard.js')
    html = _read('dashboard.html').replace('{{style}}', style).replace('{{script}}', script)
    policy = '; '.join(
        (
            "default-src 'none'",
            f'script-src {_sha256(script)}',
            f'style-src {_sha256(style)}',
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return html, policy


def dashboard_html() -> str:
    """The dashboard page's HTML (the same for every request)."""
    return _page()[0]


def dashboard_response() -> HTMLResponse:
    """The dashboard page, with a strict Content-Security-Policy and no caching."""
    html, policy = _page()
    return HTMLResponse(
        html,
        headers={
            'Content-Security-Policy': policy,
            'X-Content-Type-Options': 'nosniff',
            'Referrer-Policy': 'no-referrer',
            'X-Frame-Options': 'DENY',
            'Cache-Control': 'no-store',
        },
    )
