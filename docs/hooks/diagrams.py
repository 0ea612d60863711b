"""Diagrams without a CDN: each Mermaid block of the docs is shown as an SVG rendered ahead of time.

A ```` ```mermaid ```` block is replaced, at build time, by the SVG in `docs/img/diagrams/` named after the hash of
its source; the site then loads no diagram renderer at all and works offline. A block whose SVG is missing fails the
build: render it with `python docs/hooks/render_diagrams.py` (needs `npm` and `chromium`), and commit the SVG.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

DIAGRAMS = Path(__file__).parent.parent / 'img' / 'diagrams'
BLOCK = re.compile(r'<pre class="mermaid"><code>(?P<source>.*?)</code></pre>', re.DOTALL)


def diagram_id(source: str) -> str:
    """The name of a diagram's SVG: a hash of its source, so that an edited diagram needs a new rendering."""
    return 'diagram-' + hashlib.sha256(source.strip().encode()).hexdigest()[:16]


def on_page_content(html_text: str, page: Any, **kwargs: Any) -> str:
    """Replace each Mermaid block of a page with its SVG, inline (so it follows the page's colours and scales)."""

    def inline(match: re.Match[str]) -> str:
        source = html.unescape(match['source'])
        svg = DIAGRAMS / f'{diagram_id(source)}.svg'
        if not svg.is_file():
            raise PluginError(
                f'{page.file.src_uri}: no rendering of a diagram ({svg.name}); run '
                '`python docs/hooks/render_diagrams.py` and commit docs/img/diagrams/'
            )
        return f'<figure class="diagram">{svg.read_text()}</figure>'

    return BLOCK.sub(inline, html_text)
