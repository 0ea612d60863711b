"""The code in the docs stays real: every Python block compiles and imports only names the package exports."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

import pydantic_ai_subagents

DOCS = Path(__file__).parent.parent / 'docs'
BLOCK = re.compile(r'```python\n(.*?)^\s*```', re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in sorted(DOCS.rglob('*.md')):
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            found.append((f'{page.relative_to(DOCS)}#{i}', match.group(1)))
    return found


@pytest.mark.parametrize(('where', 'code'), blocks(), ids=[w for w, _ in blocks()])
def test_python_block_compiles_and_uses_real_names(where: str, code: str) -> None:
    tree = ast.parse(textwrap.dedent(code), filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == 'pydantic_ai_subagents':
            for alias in node.names:
                assert hasattr(pydantic_ai_subagents, alias.name), f'{where}: no {alias.name} in pydantic_ai_subagents'


def test_readme_example_uses_real_names() -> None:
    readme = (Path(__file__).parent.parent / 'README.md').read_text()
    (code, *_) = BLOCK.findall(readme)
    test_python_block_compiles_and_uses_real_names('README.md', code)
