"""The code in the docs stays real: every Python block runs, and the output a page shows is the output it prints.

Each Python block of `docs/` (and the README's) is run as the complete program it claims to be, with `__name__`
set to `'__main__'`. Model names such as `'openai:gpt-5-mini'` are resolved to a scripted `FunctionModel` (see
`scripted_model`), so no block needs a provider package, a key or the network. A block followed by a
```` ```text title="Output" ```` block must print exactly that text; `...` in it stands for any text (task ids,
timings, a model's wording), as in doctest's `ELLIPSIS`.

A few blocks cannot run inside the test process: one sets the global tracer provider, one starts child processes
that must import the program, one is a pytest module. Those run as their own process (see `OWN_PROCESS`). Blocks
that talk to Redis run against the test suite's throwaway Redis server. Blocks that include an example file
(`--8<-- "examples/x.py"`) are run by `test_examples.py`; here we only check that they are among its cases.
"""

from __future__ import annotations

import ast
import doctest
import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import models
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

import pydantic_ai_subagents
from tests import redis_server
from tests.test_examples import CASES

ROOT = Path(__file__).parent.parent
DOCS = ROOT / 'docs'
FENCE = re.compile(r'^(?P<indent> *)```(?P<lang>[\w-]*)(?P<info>[^\n`]*)$')
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
INCLUDE = re.compile(r'^--8<-- "(?P<path>[^"]+)"$')
MAX_COLUMNS = 100
"""Code lines past this width scroll sideways in the site's content column."""
REDIS_URL_IN_DOCS = 'redis://localhost:6379/0'

OWN_PROCESS = {
    ('concepts/events.md', 'tracing.py'): 'python',  # sets the process's global tracer provider
    ('concepts/isolation.md', 'isolation_cost.py'): 'python',  # child processes import the program by path
    ('concepts/testing.md', 'test_subagents.py'): 'pytest',
    ('README.md', 'test_my_agent.py'): 'pytest',
}
"""Blocks that run as their own process, and with what."""

OTHERS_PAGES = {'README.md', 'concepts/web.md', 'design.md', 'evals.md'}
"""Pages kept with the code they describe; their blocks run here, their layout is checked with them."""

redis_url = redis_server.redis_url


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    title: str | None
    code: str
    output: str | None = None
    """The text of a ```` ```text title="Output" ```` block that directly follows this one."""

    @property
    def id(self) -> str:
        return f'{self.page}:{self.line}'

    @property
    def include(self) -> str | None:
        match = INCLUDE.match(self.code.strip())
        return match['path'] if match else None


def parse(page: str, text: str) -> list[Block]:
    """The fenced blocks of one Markdown page, each Python block with the output block that follows it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    previous_end = -1
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None or not opening['lang']:
            i += 1
            continue
        indent = opening['indent']
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == f'{indent}```')
        code = textwrap.dedent('\n'.join(lines[i + 1 : end])) + '\n'
        title = TITLE.search(opening['info'])
        block = Block(page, i + 1, opening['lang'], title['title'] if title else None, code)
        previous = blocks[-1] if blocks else None
        if (
            previous is not None
            and previous.lang == 'python'
            and block.lang == 'text'
            and block.title == 'Output'
            and all(not line.strip() for line in lines[previous_end + 1 : i])
        ):
            blocks[-1] = Block(previous.page, previous.line, previous.lang, previous.title, previous.code, code)
        else:
            blocks.append(block)
        previous_end = end
        i = end + 1
    return blocks


def all_blocks() -> list[Block]:
    found: list[Block] = []
    for path in sorted(DOCS.rglob('*.md')):
        found.extend(parse(path.relative_to(DOCS).as_posix(), path.read_text()))
    found.extend(parse('README.md', (ROOT / 'README.md').read_text()))
    return found


BLOCKS = all_blocks()
PYTHON = [b for b in BLOCKS if b.lang == 'python' and b.include is None]
INCLUDES = [b for b in BLOCKS if b.include is not None]
EXAMPLE_OUTPUT = re.compile(r'^Output of (?P<script>examples/\w+\.py)$')
EXAMPLE_OUTPUTS = [b for b in BLOCKS if b.lang == 'text' and b.title and EXAMPLE_OUTPUT.match(b.title)]
"""Text blocks that show what an example prints (```` ```text title="Output of examples/x.py" ````)."""
TASK_ID = re.compile(r'\b[0-9a-f]{24}\b')


# --- scripted models standing in for every model name -------------------------------------------------------------


def subagent_names(code: str) -> list[str]:
    """The subagents a block configures, in the order it names them."""
    return re.findall(r"SubAgentConfig\(\s*name='([^']+)'", code)


def this_run(messages: list[ModelMessage]) -> tuple[str, list[ModelMessage]]:
    """The prompt of the current run and the messages since it."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, ModelRequest):
            prompts = [p for p in message.parts if isinstance(p, UserPromptPart) and isinstance(p.content, str)]
            if prompts:
                return str(prompts[-1].content), messages[index + 1 :]
    return '', messages


def scripted_model(name: str, subagents: list[str]) -> FunctionModel:
    """A model that behaves as a cooperative LLM would on the docs' prompts.

    A parent (an agent with the `task` tool) hands the prompt to each subagent of the block, in the background when
    the prompt says so, waits for the background tasks (unless it is to ask about them later), then answers with
    what they returned. A subagent told to ask something asks its parent first; otherwise it answers with a line of
    notes on its task.
    """

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt, since = this_run(messages)
        tools = {tool.name for tool in info.function_tools}
        calls = [p for m in since if isinstance(m, ModelResponse) for p in m.parts if isinstance(p, ToolCallPart)]
        returns = [
            str(p.content)
            for m in since
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart)
        ]
        if 'task' not in tools:
            if 'ask_parent' in tools and ' ask ' in f' {prompt} ':
                if not calls:
                    return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Who is the audience?'})])
                return ModelResponse(parts=[TextPart(f'A story for this audience: {returns[-1]}')])
            return ModelResponse(parts=[TextPart(f'Notes on {prompt[:60]!r}: three short findings, with sources.')])
        if not calls:
            mode = 'async' if 'background' in prompt else 'sync'
            return ModelResponse(
                parts=[
                    ToolCallPart('task', {'description': prompt, 'subagent_type': subagent, 'mode': mode})
                    for subagent in subagents or ['general-purpose']
                ]
            )
        started = [m.group(1) for r in returns if (m := re.match(r'Task started with ID: (\w+)', r))]
        if started and not any(c.tool_name == 'wait_tasks' for c in calls) and 'later' not in prompt:
            return ModelResponse(parts=[ToolCallPart('wait_tasks', {'task_ids': started, 'mode': 'all'})])
        return ModelResponse(parts=[TextPart('Here is what the subagents found. ' + ' '.join(returns))])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
        for index, part in enumerate(respond(messages, info).parts):
            if isinstance(part, TextPart):
                yield part.content
            elif isinstance(part, ToolCallPart):
                yield {index: DeltaToolCall(name=part.tool_name, json_args=part.args_as_json_str())}

    return FunctionModel(respond, stream_function=stream, model_name=name)


@pytest.fixture
def scripted_models(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Resolve every model name to a scripted model; yields the list to fill with the block's subagent names."""
    subagents: list[str] = []
    real = models.infer_model

    def infer(model: Any, *args: Any, **kwargs: Any) -> models.Model:
        if isinstance(model, str):
            return scripted_model(model, subagents)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(models, 'infer_model', infer)
    return subagents


# --- the tests ------------------------------------------------------------------------------------------------------


def check_output(block: Block, printed: str) -> None:
    if block.output is None:
        return
    checker = doctest.OutputChecker()
    if not checker.check_output(block.output, printed, doctest.ELLIPSIS):
        pytest.fail(f'{block.id} prints\n{printed}\nbut the page shows\n{block.output}', pytrace=False)


def with_redis(block: Block, request: pytest.FixtureRequest) -> str:
    if REDIS_URL_IN_DOCS not in block.code:
        return block.code
    url: str = request.getfixturevalue('redis_url')
    return block.code.replace(REDIS_URL_IN_DOCS, url)


@pytest.mark.parametrize('block', [b for b in PYTHON if (b.page, b.title) not in OWN_PROCESS], ids=lambda b: b.id)
def test_python_block_runs(
    block: Block,
    scripted_models: list[str],
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    scripted_models.extend(subagent_names(block.code))
    code = compile(with_redis(block, request), f'{block.page}:{block.title}', 'exec')
    capsys.readouterr()
    # A real `__main__` module while it runs, as when the program is run as a script: what it defines at module
    # level can be pickled by reference (a config with `isolation='process'` is checked for that when built).
    program = types.ModuleType('__main__')
    main = sys.modules['__main__']
    sys.modules['__main__'] = program
    try:
        exec(code, program.__dict__)
    finally:
        sys.modules['__main__'] = main
    check_output(block, capsys.readouterr().out)


@pytest.fixture(scope='module')
def own_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """Start every block that runs as its own process at once, so that their start-up times overlap."""
    env = {**os.environ, 'PYTEST_DISABLE_PLUGIN_AUTOLOAD': '1'}  # the nested pytest needs only anyio
    started: dict[str, subprocess.Popen[str]] = {}
    for block in PYTHON:
        runner = OWN_PROCESS.get((block.page, block.title))
        if runner is None or block.title is None:
            continue
        workdir = tmp_path_factory.mktemp('block')
        program = workdir / block.title
        program.write_text(block.code)
        command = [sys.executable, str(program)]
        if runner == 'pytest':
            command = [sys.executable, '-m', 'pytest', '-q', '-p', 'anyio', '-p', 'no:cacheprovider', str(program)]
        started[block.id] = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for block in EXAMPLE_OUTPUTS:
        script = EXAMPLE_OUTPUT.match(block.title or '')
        assert script is not None
        started[block.id] = subprocess.Popen(
            [sys.executable, str(ROOT / script['script'])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize('block', [b for b in PYTHON if (b.page, b.title) in OWN_PROCESS], ids=lambda b: b.id)
def test_python_block_runs_in_its_own_process(block: Block, own_processes: dict[str, subprocess.Popen[str]]) -> None:
    stdout, stderr = own_processes[block.id].communicate(timeout=60)
    returncode = own_processes[block.id].returncode
    assert returncode == 0, f'{block.id} exited {returncode}:\n{stdout}\n{stderr}'
    if OWN_PROCESS[block.page, block.title] == 'pytest':
        assert re.search(r'\b(\d+) passed\b', stdout), stdout
        assert 'failed' not in stdout, stdout
    check_output(block, stdout)


@pytest.mark.parametrize('block', EXAMPLE_OUTPUTS, ids=lambda b: b.id)
def test_example_output_shown_is_what_it_prints(block: Block, own_processes: dict[str, subprocess.Popen[str]]) -> None:
    """The page's excerpt of an example's output, with its task ids and `...` standing for any text."""
    stdout, stderr = own_processes[block.id].communicate(timeout=60)
    assert own_processes[block.id].returncode == 0, f'{block.title} failed:\n{stdout}\n{stderr}'
    excerpt = TASK_ID.sub('<id>', block.code)
    printed = TASK_ID.sub('<id>', stdout)
    if not doctest.OutputChecker().check_output(f'...\n{excerpt}...\n', printed, doctest.ELLIPSIS):
        pytest.fail(f'{block.id}: {block.title} prints\n{printed}\nwhich does not hold\n{excerpt}', pytrace=False)


@pytest.mark.parametrize('block', INCLUDES, ids=lambda b: b.id)
def test_included_example_is_run_by_the_examples_tests(block: Block) -> None:
    assert block.include is not None
    path = Path(block.include)
    assert (ROOT / path).is_file(), f'{block.id}: no {path}'
    if path.name == '_scripted.py':  # the helpers every example imports
        return
    assert path.name in {case.script for case in CASES}, f'{block.id}: {path} is not run by test_examples.py'


@pytest.mark.parametrize('block', [b for b in BLOCKS if b.lang in ('python', 'bash')], ids=lambda b: b.id)
def test_code_block_is_titled_and_fits_the_column(block: Block) -> None:
    if block.page in OTHERS_PAGES:
        return
    if block.lang == 'python':
        assert block.title, f'{block.id}: a Python block needs a title="..." (its file name)'
    too_wide = [line for line in block.code.splitlines() if len(line) > MAX_COLUMNS]
    assert not too_wide, f'{block.id}: lines over {MAX_COLUMNS} columns: {too_wide}'


@pytest.mark.parametrize(
    'block', [b for b in PYTHON if OWN_PROCESS.get((b.page, b.title)) != 'pytest'], ids=lambda b: b.id
)
def test_python_block_uses_what_it_defines(block: Block) -> None:
    """A function the block defines is called or handed on: code shown on a page is code that runs."""
    tree = ast.parse(block.code)
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
    assert defined <= used, f'{block.id}: defines but never runs {sorted(defined - used)}'


def test_blocks_import_only_exported_names() -> None:
    for block in PYTHON:
        for name in re.findall(r'^from pydantic_ai_subagents import \(?([^)\n]+)', block.code, re.MULTILINE):
            for alias in name.split(','):
                assert hasattr(pydantic_ai_subagents, alias.strip()), f'{block.id}: no {alias} in the package'


def test_every_python_block_is_found() -> None:
    """The parser sees every fence the site renders: a page's count of ```python lines matches the blocks found."""
    for path in [*sorted(DOCS.rglob('*.md')), ROOT / 'README.md']:
        page = 'README.md' if path.name == 'README.md' and path.parent == ROOT else path.relative_to(DOCS).as_posix()
        fences = len(re.findall(r'^ *```python', path.read_text(), re.MULTILINE))
        assert fences == len([b for b in BLOCKS if b.page == page and b.lang == 'python']), page


# --- the pictures ---------------------------------------------------------------------------------------------------

PLOTS = {'benchmarks.svg': 'latest.json', 'benchmarks-larger.svg': 'larger-sizes.json'}
"""The benchmark plots the docs show, and the committed results each is drawn from."""


@pytest.mark.parametrize(('image', 'results'), PLOTS.items())
def test_benchmark_plot_is_drawn_from_the_committed_results(image: str, results: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / 'bench'))
    try:
        import plot
    finally:
        sys.path.remove(str(ROOT / 'bench'))
    drawn = Path(plot.plot(str(ROOT / 'bench' / 'results' / results), str(tmp_path / image))).read_text()
    assert drawn == (DOCS / 'img' / image).read_text(), f'docs/img/{image} is stale: run bench/plot.py'
    for library in ('pydantic-ai-subagents', 'floor: plain Pydantic AI'):
        assert library in drawn
    assert 'time per task (ms)' in drawn
    assert f'img/{image}' in (DOCS / 'benchmarks.md').read_text()


def test_every_diagram_has_its_svg_and_the_site_loads_no_renderer() -> None:
    sys.path.insert(0, str(DOCS / 'hooks'))
    try:
        from diagrams import DIAGRAMS, diagram_id
    finally:
        sys.path.remove(str(DOCS / 'hooks'))
    sources = [b.code for b in BLOCKS if b.lang == 'mermaid']
    assert sources, 'the docs have diagrams; the parser should find them'
    for source in sources:
        svg = DIAGRAMS / f'{diagram_id(source)}.svg'
        assert svg.is_file(), f'no {svg.name}: run python docs/hooks/render_diagrams.py'
        assert '<foreignObject' not in svg.read_text()  # plain SVG text, readable in any viewer
    config = (ROOT / 'mkdocs.yml').read_text()
    assert 'docs/hooks/diagrams.py' in config
    assert 'font: false' in config  # no web fonts from another host either


# --- the navigation -------------------------------------------------------------------------------------------------


def nav() -> list[Any]:
    """The `nav` of mkdocs.yml (its `!!python/name` tags are read as plain strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor('tag:yaml.org,2002:python/', lambda loader, suffix, node: None)
    return yaml.load((ROOT / 'mkdocs.yml').read_text(), Loader=Loader)['nav']


def test_navigation_has_section_index_pages_and_no_title_twice() -> None:
    titles: list[str] = []
    pages: list[str] = []
    for section in nav():
        ((title, children),) = section.items()
        titles.append(title)
        assert isinstance(children, list), f'{title}: a top-level entry is a section (a tab)'
        first, *rest = children
        assert isinstance(first, str) and first.endswith('index.md'), f'{title}: a section opens on its index page'
        pages.append(first)
        for child in rest:
            ((child_title, page),) = child.items()
            titles.append(child_title)
            pages.append(page)
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
    on_disk = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob('*.md') if 'hooks' not in p.parts)
    assert sorted(pages) == on_disk  # every page is in the navigation, once
