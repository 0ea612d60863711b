"""The shape of the package that a maintainer relies on: public Pydantic AI only, modules of one job each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / 'src' / 'pydantic_ai_subagents'
MODULES = sorted(SRC.rglob('*.py'))
MAX_LINES = 500
"""A module past this many lines is doing two jobs."""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize('path', MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_public_pydantic_ai_modules_are_imported(path: Path) -> None:
    private = sorted(
        n for n in _imports(path) if n.startswith('pydantic_ai.') and '._' in n.replace('pydantic_ai.', '.')
    )
    assert not private, f'{path.name} imports private Pydantic AI modules: {private}'


@pytest.mark.parametrize('path', MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_is_over_the_size_of_one_job(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f'{path.relative_to(SRC)} has {lines} lines'


def test_the_manager_front_is_small() -> None:
    front = SRC / '_manager' / '_manager.py'
    code = _code_lines(front)
    assert len(code) <= 300, len(code)


def _code_lines(path: Path) -> list[str]:
    """The lines of a module that are code: no blank lines, comments or docstrings."""
    tree = ast.parse(path.read_text())
    docstring_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstring_lines.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docstring_lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = path.read_text().splitlines()
    return [
        line
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.strip().startswith('#') and number not in docstring_lines
    ]
