"""Render every Mermaid block of the docs to an SVG in docs/img/diagrams/, with Mermaid run in headless Chromium.

Needs `npm` (to fetch the `mermaid` package) and `chromium`. Only the docs' build uses the SVGs (see diagrams.py);
SVGs no page uses any more are removed.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from diagrams import DIAGRAMS, diagram_id

DOCS = Path(__file__).parent.parent
MERMAID = 'mermaid@11'
FENCE = re.compile(r'^```mermaid\n(.*?)^```', re.DOTALL | re.MULTILINE)
PAGE = """<!doctype html><html><body><pre id="out"></pre>
<script src="mermaid.min.js"></script>
<script>
mermaid.initialize({
  startOnLoad: false, theme: 'neutral', securityLevel: 'strict',
  htmlLabels: false, flowchart: {htmlLabels: false},  // plain SVG text: the SVG stands on its own
});
(async () => {
  const out = {};
  for (const [id, source] of Object.entries(SOURCES)) {
    out[id] = (await mermaid.render(id, source)).svg;
  }
  document.getElementById('out').textContent = JSON.stringify(out);
})();
</script></body></html>"""


def main() -> None:
    """Render every diagram of the docs, and drop the SVGs of diagrams that are gone."""
    sources = {diagram_id(m): m for page in sorted(DOCS.rglob('*.md')) for m in FENCE.findall(page.read_text())}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        packed = subprocess.run(
            ['npm', 'pack', MERMAID, '--silent'], cwd=work, check=True, capture_output=True, text=True
        )
        with tarfile.open(work / packed.stdout.strip()) as archive:
            archive.extract('package/dist/mermaid.min.js', work, filter='data')
        (work / 'mermaid.min.js').write_bytes((work / 'package/dist/mermaid.min.js').read_bytes())
        page = work / 'render.html'
        page.write_text(PAGE.replace('SOURCES', json.dumps(sources)))
        dom = subprocess.run(
            [
                'chromium',
                '--headless',
                '--no-sandbox',
                '--allow-file-access-from-files',
                '--virtual-time-budget=20000',
                '--dump-dom',
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rendered = json.loads(html.unescape(re.search(r'<pre id="out">(.*?)</pre>', dom, re.DOTALL)[1]))
    DIAGRAMS.mkdir(parents=True, exist_ok=True)
    for old in DIAGRAMS.glob('*.svg'):
        if old.stem not in rendered:
            old.unlink()
    for name, svg in rendered.items():
        (DIAGRAMS / f'{name}.svg').write_text(svg + '\n')
        print(f'{name}.svg')


if __name__ == '__main__':
    main()
