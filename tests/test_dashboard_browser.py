"""The dashboard end to end, in a real headless Chromium driven by Playwright.

The app runs under uvicorn on the test's event loop, next to the task manager and its scripted subagents. The test
watches tasks appear live, answers a question and hard-cancels a task with the page's own controls, and checks
that markup written by a model is shown as text and never runs.

Needs Debian's `chromium` at /usr/bin/chromium (`apt-get install -y chromium`); without it the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from playwright.async_api import Page, async_playwright, expect

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents.web import create_app

from .conftest import Gate, Script, call, child_text, task_id_from, text
from .remembering import prompts_of, remembering

pytestmark = pytest.mark.anyio

CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_FOUND = CHROMIUM.exists()
CHROMIUM_ARGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
]
XSS_DESCRIPTION = 'Summarise <script>window.__xss=1</script> the notes'
XSS_RESULT = '<img src="x" onerror="window.__xss=2">Done <b>bold</b>'
WIDE = {'width': 1400, 'height': 950}


class Server(uvicorn.Server):
    """uvicorn on the test's own loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(manager: TaskManager, **app_options: Any) -> AsyncIterator[str]:
    app = create_app(manager, allow_unauthenticated=True, **app_options)
    config = uvicorn.Config(
        app, host='127.0.0.1', port=0, log_level='warning', lifespan='off', timeout_graceful_shutdown=1
    )
    server = Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(5):
            while not server.started:
                await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f'http://127.0.0.1:{port}/'
        finally:
            server.should_exit = True


def worker(model: Any, name: str = 'worker') -> SubAgentConfig:
    return SubAgentConfig(name=name, instructions='You work.', model=model)


def row(page: Page, task_id: str) -> Any:
    return page.locator(f'li.task[data-task-id="{task_id}"]')


async def expect_state(page: Page, task_id: str, state: str) -> None:
    """Wait until the page shows the task in `state` (as Playwright's `expect` waits)."""
    await expect(row(page, task_id)).to_have_attribute('data-state', state)


async def launch(pw: Any) -> Any:
    if not CHROMIUM_FOUND:
        pytest.fail(
            f'{CHROMIUM} is missing: install Debian\'s chromium ("apt-get install -y chromium") to run this test'
        )
    return await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@contextlib.asynccontextmanager
async def dashboard(
    url: str, problems: list[str], *, viewport: Any = WIDE, permissions: Sequence[str] = ()
) -> AsyncIterator[Page]:
    """The dashboard at `url` in a new headless Chromium, once its event stream is live; the console's errors and
    warnings, and the page's errors, are added to `problems`. The browser is closed on the way out."""
    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            context = await browser.new_context(viewport=viewport, permissions=list(permissions))
            page = await context.new_page()
            page.on('console', lambda m: problems.append(m.text) if m.type in ('error', 'warning') else None)
            page.on('pageerror', lambda error: problems.append(f'page error: {error}'))
            await page.goto(url)
            await expect(page.locator('#connection')).to_have_attribute('data-state', 'live')
            yield page
        finally:
            await browser.close()


async def test_dashboard_shows_controls_and_escapes_tasks_in_chromium(tmp_path: Path) -> None:
    started = time.monotonic()
    slow, nested = Gate(), Gate()
    problems: list[str] = []
    async with (
        TaskManager(max_nesting_depth=2) as manager,
        serving(manager) as url,
        dashboard(url, problems, viewport={'width': 1280, 'height': 900}) as page,
    ):
        try:
            await expect(page.locator('#empty')).to_be_visible()

            # Tasks started after the page loaded appear through the event stream.
            slow_id = (await manager.start(worker(slow.model(), 'researcher'), 'Survey every tide pool', scope='c1')).id
            await expect_state(page, slow_id, 'running')
            await expect(row(page, slow_id).locator('.description').first).to_have_text('Survey every tide pool')
            await expect(page.locator('#counts')).to_have_text('1 task, 1 live')
            await expect(row(page, slow_id).locator('.usage')).to_have_text('0 requests · 0 tool calls · 0 tokens')

            xss_id = (await manager.start(worker(child_text(XSS_RESULT), 'writer'), XSS_DESCRIPTION, scope='c1')).id
            await expect_state(page, xss_id, 'completed')

            asking = Script([[call('ask_parent', question='Which <i>pool</i> first?')], lambda s: [text(s.reply())]])
            ask_id = (await manager.start(worker(asking.model(), 'planner'), 'Plan the visit', scope='c1')).id
            await expect_state(page, ask_id, 'waiting_for_answer')

            lead_tools = create_subagent_toolset([worker(nested.model())], manager=manager, general_purpose=False)
            lead_script = Script(
                [
                    [call('task', description='Nested count of crabs', subagent_type='worker', mode='async')],
                    lambda s: [call('wait_tasks', task_ids=[task_id_from(s.reply())], timeout=30)],
                ]
            )
            lead = SubAgentConfig(
                name='lead', instructions='You lead.', toolsets=[lead_tools], model=lead_script.model()
            )
            lead_id = (await manager.start(lead, 'Lead the crab count', scope='c1')).id
            child_row = row(page, lead_id).locator('ul.children > li.task')
            await expect(child_row).to_have_attribute('data-state', 'running')
            [child] = [r for r in manager.list() if r.parent_task_id == lead_id]
            assert await child_row.get_attribute('data-task-id') == child.id

            # Model text is shown as text: the markup is visible literally and no injected script ran.
            xss = row(page, xss_id)
            await expect(xss.locator('.description')).to_have_text(XSS_DESCRIPTION)
            await expect(xss.locator('.output-text')).to_have_text(XSS_RESULT)
            await expect(row(page, ask_id).locator('.question')).to_have_text('Which <i>pool</i> first?')
            assert await page.evaluate('typeof window.__xss') == 'undefined'
            assert await page.locator('li.task script, li.task img, li.task b, li.task i').count() == 0
            await page.screenshot(path=tmp_path / 'dashboard.png', full_page=True)

            # Answer the question from the page.
            await row(page, ask_id).locator('.answer-input').fill('The <b>north</b> pool')
            await row(page, ask_id).locator('.answer-button').click()
            await expect_state(page, ask_id, 'completed')
            await expect(row(page, ask_id).locator('.output-text')).to_have_text('The <b>north</b> pool')

            # Hard-cancel the slow task with its button, and confirm.
            await row(page, slow_id).locator('.cancel-hard').first.click()
            await page.locator('#confirm .confirm-stop').click()
            await expect_state(page, slow_id, 'cancelled')
            await expect(row(page, slow_id).locator('.badge')).to_have_text('cancelled')
            await expect(row(page, slow_id).locator('.cancel-hard')).to_be_hidden()
            record = manager.get(slow_id)
            assert record is not None and record.status is TaskStatus.CANCELLED
            assert record.cancel is not None and record.cancel.kind == 'hard' and record.cancel.requested_by == 'web'
            assert slow.finished == 0

            assert await page.evaluate('typeof window.__xss') == 'undefined'
            await page.screenshot(path=tmp_path / 'dashboard-after.png', full_page=True)
            assert problems == []
        finally:
            nested.release.set()
    assert (tmp_path / 'dashboard.png').stat().st_size > 10_000
    assert time.monotonic() - started < 30


def card(page: Page, task_id: str) -> Any:
    """The task's own card (not those of the tasks below it)."""
    return row(page, task_id).locator(':scope > .card')


def plural(count: int, word: str) -> str:
    return f'{count:,} {word}' + ('' if count == 1 else 's')


def usage_text(usage: dict[str, int]) -> str:
    return ' · '.join(
        (
            plural(usage['requests'], 'request'),
            plural(usage['tool_calls'], 'tool call'),
            plural(usage['total_tokens'], 'token'),
        )
    )


def minus(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] - b[k] for k in a}


def priced_reader() -> tuple[SubAgentConfig, list[int]]:
    """A subagent on a model Pydantic AI has prices for, reading page after page until it is stopped."""
    from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.toolsets import FunctionToolset
    from pydantic_ai.usage import RequestUsage

    turns = [0]

    def look(page: int) -> str:
        """Read a page."""
        return f'page {page} read'

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        turns[0] += 1
        if turns[0] > 4:
            await anyio.sleep_forever()  # until the test stops it
        return ModelResponse(
            parts=[ToolCallPart('look', {'page': turns[0]})], usage=RequestUsage(input_tokens=1000, output_tokens=100)
        )

    config = SubAgentConfig(
        name='reader',
        instructions='You read.',
        toolsets=[FunctionToolset([look])],
        model=FunctionModel(model, model_name='gpt-4o'),
    )
    return config, turns


async def start_noter(manager: TaskManager) -> tuple[str, anyio.Event]:
    """A subagent in a tool call until `go` is set; asked to wrap up, it answers with a partial result."""
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.toolsets import FunctionToolset

    entered, go = anyio.Event(), anyio.Event()

    async def take_notes() -> str:
        """Take notes."""
        entered.set()
        await go.wait()
        return '2 notes taken'

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if any('CANCELLATION REQUEST' in p for p in prompts_of(messages)):
            return ModelResponse(parts=[TextPart('Partial: 2 of 5 notes taken.')])
        return ModelResponse(parts=[ToolCallPart('take_notes', {})])

    config = SubAgentConfig(
        name='noter',
        instructions='You take notes.',
        toolsets=[FunctionToolset([take_notes])],
        model=FunctionModel(model),
    )
    task_id = (await manager.start(config, 'Take five notes', scope='dunes')).id
    with anyio.fail_after(10):
        await entered.wait()
    return task_id, go


async def test_dashboard_explains_a_task_in_chromium(tmp_path: Path) -> None:
    problems: list[str] = []
    slow = Gate()
    async with (
        TaskManager(max_nesting_depth=2) as manager,
        serving(manager) as url,
        dashboard(url, problems, permissions=['clipboard-read', 'clipboard-write']) as page,
    ):
        try:
            # A lead with two subtasks: a quick one that finishes, a slow one still running.
            team = create_subagent_toolset(
                [worker(child_text('Counted 14 crabs'), 'counter'), worker(slow.model(), 'surveyor')],
                manager=manager,
                general_purpose=False,
            )
            lead_script = Script(
                [
                    [
                        call('task', description='Count the crabs', subagent_type='counter', mode='async'),
                        call('task', description='Survey the tide pools', subagent_type='surveyor', mode='async'),
                    ],
                    lambda s: [call('wait_tasks', task_ids=[task_id_from(r) for r in s.last], timeout=60)],
                ]
            )
            lead = SubAgentConfig(name='lead', instructions='You lead.', toolsets=[team], model=lead_script.model())
            lead_id = (await manager.start(lead, 'Lead the tide-pool count', scope='beach')).id
            writer_id = (
                await manager.start(
                    worker(child_text('Shells, <b>sand</b>'), 'writer'), 'Write a tagline', scope='dunes'
                )
            ).id
            asking = Script([[call('ask_parent', question='Which dune first?')], lambda s: [text(s.reply())]])
            asker_id = (await manager.start(worker(asking.model(), 'planner'), 'Plan the dune walk', scope='dunes')).id
            reader, turns = priced_reader()
            reader_id = (await manager.start(reader, 'Read the field guide', scope='dunes')).id
            with anyio.fail_after(10):
                await slow.entered.wait()
                while turns[0] < 5 or not any(r.subagent == 'counter' and r.is_terminal for r in manager.list()):
                    await anyio.sleep(0.01)
            [counter] = [r for r in manager.list() if r.subagent == 'counter']
            [surveyor] = [r for r in manager.list() if r.subagent == 'surveyor']
            await expect_state(page, writer_id, 'completed')
            await expect_state(page, asker_id, 'waiting_for_answer')
            await expect(row(page, lead_id).locator(f'li.task[data-task-id="{surveyor.id}"]')).to_be_visible()

            # Usage: words agree with their numbers, and a parent shows its own usage apart from its subtasks'.
            # Usage changes send no event: the page re-reads live tasks every few seconds, and catches up.
            views = {t['id']: t for t in json.loads(await page.evaluate("fetch('tasks').then(r => r.text())"))['tasks']}
            reader_usage = card(page, reader_id).locator('.usage')
            await expect(reader_usage).to_have_text(usage_text(views[reader_id]['usage']), timeout=15_000)
            await expect(card(page, writer_id).locator('.usage')).to_have_text(usage_text(views[writer_id]['usage']))
            assert views[writer_id]['usage']['requests'] == 1
            await expect(card(page, writer_id).locator('.usage')).to_contain_text('1 request · 0 tool calls')
            await expect(card(page, writer_id).locator('.usage-total')).to_be_hidden()
            await expect(card(page, reader_id).locator('.usage')).to_contain_text('4 requests · 4 tool calls')
            lead_view = views[lead_id]
            assert lead_view['subtask_usage']['requests'] == 1 and lead_view['live_subtasks'] == 1
            own = minus(lead_view['usage'], lead_view['subtask_usage'])
            await expect(card(page, lead_id).locator('.usage')).to_have_text('own: ' + usage_text(own))
            tree_total = {k: lead_view['usage'][k] + views[surveyor.id]['usage'][k] for k in own}
            await expect(card(page, lead_id).locator('.usage-total')).to_have_text(
                'with subtasks: ' + usage_text(tree_total)
            )
            body = await page.locator('body').inner_text()
            assert not re.search(r'(?<![\d,])1 (tasks|requests|tool calls|tokens|tools)\b', body), body
            await page.screenshot(path=tmp_path / 'usage.png', full_page=True)

            # Filters: by state, by conversation, and a search; the count of matches follows.
            await page.locator('#state-filter').select_option('completed')
            await expect(row(page, writer_id)).to_be_visible()
            await expect(row(page, asker_id)).to_be_hidden()
            await expect(row(page, lead_id)).to_have_class(re.compile(r'\bcontext\b'))  # above the completed counter
            await expect(row(page, counter.id)).to_be_visible()
            await expect(page.locator('#shown')).to_have_text('2 of 6 tasks match')
            await page.screenshot(path=tmp_path / 'filter-state.png', full_page=True)
            await page.locator('#state-filter').select_option('')
            await page.locator('#scope-filter').select_option('dunes')
            for task_id in (writer_id, asker_id, reader_id):
                await expect(row(page, task_id)).to_be_visible()
            await expect(row(page, lead_id)).to_be_hidden()
            await page.locator('#scope-filter').select_option('beach')
            await expect(row(page, lead_id)).to_be_visible()
            await expect(row(page, counter.id)).to_be_visible()  # a subtask belongs to its parent's conversation
            await expect(row(page, writer_id)).to_be_hidden()
            await page.locator('#scope-filter').select_option('')
            await page.locator('#search').fill('tide survey')
            await expect(row(page, surveyor.id)).to_be_visible()
            await expect(row(page, counter.id)).to_be_hidden()
            await expect(row(page, writer_id)).to_be_hidden()
            await page.locator('#search').fill('nothing like this')
            await expect(page.locator('#no-match')).to_be_visible()
            await page.locator('#search').fill(reader_id[:10])
            await expect(row(page, reader_id)).to_be_visible()
            await expect(page.locator('#shown')).to_have_text('1 of 6 tasks match')
            await page.screenshot(path=tmp_path / 'filter-search.png', full_page=True)
            await page.locator('#search').fill('')

            # The drawer of a finished task: description, result, timeline, usage; and its id copied.
            await card(page, writer_id).locator('.details').click()
            drawer = page.locator('#drawer')
            await expect(drawer).to_be_visible()
            await expect(drawer.locator('.description')).to_have_text('Write a tagline')
            await expect(drawer.locator('.output-label')).to_have_text('Result')
            await expect(drawer.locator('.output-text')).to_have_text('Shells, <b>sand</b>')
            steps = drawer.locator('.timeline .step')
            await expect(steps).to_have_count(3)
            assert [await s.get_attribute('data-state') for s in await steps.all()] == [
                'pending',
                'running',
                'completed',
            ]
            await expect(drawer.locator('.usage-table tbody tr')).to_have_count(1)
            # A completed task keeps its transcript: the writer answered without a tool, on an unpriced model.
            await expect(drawer.locator('.tools-note')).to_have_text('No tool calls.')
            await expect(drawer.locator('.cost')).to_contain_text('no price known')
            await drawer.locator('.copy-id').click()
            await expect(page.locator('#toast')).to_contain_text('Copied the task id')
            assert await page.evaluate('navigator.clipboard.readText()') == writer_id
            await page.screenshot(path=tmp_path / 'drawer-completed.png', full_page=True)

            # A waiting task's drawer shows its question; the timeline follows it live once answered.
            await card(page, asker_id).locator('.details').click()
            await expect(drawer.locator('.question')).to_have_text('Which dune first?')
            await card(page, asker_id).locator('.answer-input').fill('The tall one')
            await card(page, asker_id).locator('.answer-button').click()
            await expect(drawer.locator('.timeline .step.current')).to_have_attribute('data-state', 'completed')
            assert [await s.get_attribute('data-state') for s in await steps.all()] == [
                'pending',
                'running',
                'waiting_for_answer',
                'running',
                'completed',
            ]
            await expect(drawer.locator('.question-section')).to_be_hidden()

            # The parent's drawer: own, rolled-up and whole-tree usage in rows.
            await card(page, lead_id).locator('.details').click()
            rows = drawer.locator('.usage-table tbody tr')
            await expect(rows).to_have_count(3)
            await expect(rows.nth(0)).to_contain_text('own')
            await expect(rows.nth(1)).to_contain_text('finished subtasks (in usage)')
            await expect(drawer.locator('.usage-note')).to_contain_text('1 subtask still running')

            # A hard cancel asks first, saying how many tasks it stops; "Keep running" stops nothing.
            await card(page, lead_id).locator('.cancel-hard').click()
            dialog = page.locator('#confirm')
            await expect(dialog).to_be_visible()
            await expect(dialog.locator('.confirm-text')).to_contain_text('This stops 2 tasks now')
            await expect(dialog.locator('.confirm-text')).to_contain_text('1 live subtask below it')
            await expect(dialog.locator('.confirm-stop')).to_have_text('Stop 2 tasks')
            await page.screenshot(path=tmp_path / 'confirm-hard-cancel.png', full_page=True)
            await dialog.locator('.confirm-keep').click()
            await expect(dialog).to_be_hidden()
            await page.evaluate('() => new Promise((done) => setTimeout(done, 300))')
            lead_record = manager.get(lead_id)
            assert lead_record is not None and lead_record.cancel is None
            await card(page, lead_id).locator('.cancel-hard').click()
            await dialog.locator('.confirm-stop').click()
            await expect_state(page, lead_id, 'cancelled')
            await expect_state(page, surveyor.id, 'cancelled')
            # The stopped lead's drawer: its tool calls, the one it was stopped in without a result; no price known.
            lead_calls = drawer.locator('.tool-calls .tool-call')
            await expect(lead_calls).to_have_count(3)
            await expect(lead_calls.locator('.tool-name')).to_have_text(['task', 'task', 'wait_tasks'])
            await expect(lead_calls.nth(0).locator('.tool-result')).to_contain_text('Task started with ID: ')
            await expect(lead_calls.nth(2).locator('.tool-result')).to_have_text('(no result recorded)')
            await expect(drawer.locator('.cost')).to_have_text('Cost: no price known for its model.')

            # A single task: the confirmation says so. Then its drawer shows its last tool calls and their cost.
            await card(page, reader_id).locator('.cancel-hard').click()
            await expect(dialog.locator('.confirm-text')).to_contain_text('This stops the reader task now')
            await expect(dialog.locator('.confirm-stop')).to_have_text('Stop 1 task')
            await dialog.locator('.confirm-stop').click()
            await expect_state(page, reader_id, 'cancelled')
            await card(page, reader_id).locator('.details').click()
            calls = drawer.locator('.tool-calls .tool-call')
            await expect(calls).to_have_count(4)
            await expect(calls.nth(3).locator('.tool-name')).to_have_text('look')
            await expect(calls.nth(3).locator('.tool-args')).to_have_text('{"page":4}')
            await expect(calls.nth(3).locator('.tool-result')).to_have_text('page 4 read')
            await expect(drawer.locator('.tools-note')).to_have_text('The last 4 tool calls of 4, oldest first.')
            await expect(
                drawer.locator('.cost')
            ).to_have_text(
                "Cost of its own requests: $0.0140 for 4 priced requests (Pydantic AI's price data)."  # the 5th was stopped
            )
            await expect(drawer.locator('.timeline .step.current')).to_have_attribute('data-state', 'cancelled')
            await page.screenshot(path=tmp_path / 'drawer-cancelled.png', full_page=True)

            # A soft cancel: the subagent wraps up, and the drawer shows its partial result.
            noter_id, go = await start_noter(manager)
            await card(page, noter_id).locator('.cancel-soft').click()
            await expect(card(page, noter_id).locator('.cancel-info')).to_have_text('soft cancel requested by web')
            go.set()
            await expect_state(page, noter_id, 'cancelled')
            await card(page, noter_id).locator('.details').click()
            await expect(drawer.locator('.output-label')).to_have_text('Partial result')
            await expect(drawer.locator('.output-text')).to_have_text('Partial: 2 of 5 notes taken.')
            await drawer.locator('.close').click()
            await expect(drawer).to_be_hidden()
            assert await page.evaluate('typeof window.__xss') == 'undefined'
            assert problems == []
        finally:
            slow.release.set()
    for name in (
        'usage',
        'filter-state',
        'filter-search',
        'drawer-completed',
        'confirm-hard-cancel',
        'drawer-cancelled',
    ):
        assert (tmp_path / f'{name}.png').stat().st_size > 10_000


async def test_the_demo_keeps_producing_work_for_a_late_visitor(tmp_path: Path) -> None:
    # The real demo, bounded: three rounds one second apart, then it serves until it is stopped (Ctrl+C).
    root = Path(__file__).parent.parent
    env = {k: v for k, v in os.environ.items() if k != 'SUBAGENTS_DEMO_MODEL'}
    env.update(PORT='0', SUBAGENTS_DEMO_ROUNDS='3', SUBAGENTS_DEMO_EVERY='1', PYTHONUNBUFFERED='1')
    process = subprocess.Popen(  # noqa: ASYNC220 (read from a thread below)
        [sys.executable, str(root / 'examples' / 'web_dashboard.py')],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    async def line_with(text: str) -> str:
        assert process.stdout is not None
        with anyio.fail_after(30):
            while True:
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                if not line:
                    raise AssertionError('the demo ended early:\n' + ''.join(output))
                output.append(line)
                if text in line:
                    return line

    try:
        url = (await line_with('Dashboard: ')).split('Dashboard: ', 1)[1].strip()
        await line_with('parent (round 2)')
        # A visitor who comes late still finds work going on, and more arriving.
        async with dashboard(url, []) as page:
            await expect(page.locator('li.task[data-state="running"]').first).to_be_visible()
            conversations = page.locator('#scope-filter option')
            await expect(conversations.nth(2)).to_be_attached()  # "any" and a conversation per round so far
            await line_with('parent (round 3)')
            await expect(conversations).to_have_count(4)
            await expect(page.locator('#counts')).to_contain_text(' live')
            await page.screenshot(path=tmp_path / 'demo.png', full_page=True)
        await line_with('3 rounds started')
        process.send_signal(signal.SIGINT)
        rest, _ = await anyio.to_thread.run_sync(partial(process.communicate, timeout=30))
        output.append(rest)
        assert process.returncode == 0, ''.join(output)
        assert ''.join(output).rstrip().endswith('Stopped.')
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / 'demo.png').stat().st_size > 10_000


class FlakyOnce:
    """A child model that fails with a rate limit once `go` is set, then answers: one retry, two attempts."""

    def __init__(self) -> None:
        self.go = anyio.Event()
        self.failed = False

    async def fn(self, messages: list[Any], info: Any) -> Any:
        from pydantic_ai.exceptions import ModelHTTPError
        from pydantic_ai.messages import ModelResponse, TextPart

        await self.go.wait()
        if not self.failed:
            self.failed = True
            raise ModelHTTPError(429, 'flaky-model', body='rate limited')
        return ModelResponse(parts=[TextPart('Found it on the second try')])

    def config(self) -> SubAgentConfig:
        from pydantic_ai.models.function import FunctionModel

        return SubAgentConfig(
            name='flaky',
            instructions='You look things up.',
            model=FunctionModel(self.fn),
            model_retries=2,
            retry_backoff=0.05,
        )


async def test_dashboard_steers_retries_and_follow_ups_in_chromium(tmp_path: Path) -> None:
    problems: list[str] = []
    slow = Gate(answer='Surveyed, skipping the north pool')
    async with TaskManager() as manager, serving(manager) as url, dashboard(url, problems) as page:
        try:
            drawer = page.locator('#drawer')

            # Steering a live task from its drawer: the message is sent, listed, and reaches the subagent's run.
            slow_id = (await manager.start(worker(slow.model(), 'surveyor'), 'Survey the rock pools', scope='bay')).id
            with anyio.fail_after(10):
                await slow.entered.wait()
            await card(page, slow_id).locator('.details').click()
            steer = drawer.locator('.steer-section')
            await expect(steer).to_be_visible()
            await expect(steer.locator('.sent-message')).to_have_count(0)
            await steer.locator('.steer-input').fill('Skip the <b>north</b> pool')
            await steer.locator('.steer-button').click()
            await expect(steer.locator('.steer-reply')).to_have_text('Sent: the subagent reads it at its next turn.')
            await expect(steer.locator('.sent-message')).to_have_text(['Skip the <b>north</b> pool'])
            await expect(steer.locator('.steer-input')).to_have_value('')
            await steer.locator('.steer-input').fill('And count the crabs')
            await steer.locator('.steer-input').press('Enter')
            await expect(steer.locator('.sent-message')).to_have_text(
                ['Skip the <b>north</b> pool', 'And count the crabs']
            )
            record = manager.get(slow_id)
            assert record is not None and record.messages == ('Skip the <b>north</b> pool', 'And count the crabs')
            assert await page.locator('#drawer b').count() == 0
            await page.screenshot(path=tmp_path / 'drawer-steer.png', full_page=True)

            # A message sent as the task finishes: the server's 409 is shown, and the box goes.
            async def finish_first(route: Any) -> None:
                slow.release.set()
                with anyio.fail_after(10):
                    while not (r := manager.get(slow_id)) or not r.is_terminal:
                        await anyio.sleep(0.01)
                await route.continue_()

            await page.route('**/message*', finish_first)
            await steer.locator('.steer-input').fill('Too late')
            await steer.locator('.steer-button').click()
            await expect(steer.locator('.steer-reply')).to_have_text(
                f"Not sent: task '{slow_id}' is already completed (HTTP 409)"
            )
            await expect(steer.locator('.steer-reply')).to_have_class(re.compile(r'\brefused\b'))
            await expect_state(page, slow_id, 'completed')
            assert any('Skip the <b>north</b> pool' in p for p in slow.seen_prompts)
            # Finished: no box to send from any more, the messages it took are still listed.
            await expect(steer.locator('.steer-form')).to_be_hidden()
            await expect(steer.locator('.sent-message')).to_have_count(2)
            await page.unroute('**/message*')

            # A task being cancelled takes no more messages: its drawer says so instead of offering the box.
            noter_id, go = await start_noter(manager)
            await card(page, noter_id).locator('.details').click()
            await expect(steer.locator('.steer-form')).to_be_visible()
            await card(page, noter_id).locator('.cancel-soft').click()
            await expect(steer.locator('.steer-closed')).to_have_text(
                'It is being cancelled (soft): it takes no more messages.'
            )
            await expect(steer.locator('.steer-form')).to_be_hidden()
            await expect(steer.locator('.steer-reply')).to_be_hidden()  # the last reply was for another task
            go.set()
            await expect_state(page, noter_id, 'cancelled')
            await expect(steer).to_be_hidden()

            # A finished task that was never steered shows no steering section; a completed one says how to continue.
            writer = worker(child_text('Tide tables, <i>twice</i> a day'), 'writer')
            first_id = (await manager.start(writer, 'Write about the tides', scope='bay')).id
            await expect_state(page, first_id, 'completed')
            await card(page, first_id).locator('.details').click()
            await expect(drawer.locator('.drawer-id .task-id')).to_have_text(first_id)
            await expect(steer).to_be_hidden()
            await expect(drawer.locator('.follow-up')).to_be_hidden()
            await expect(drawer.locator('.continue-section')).to_be_visible()
            await expect(drawer.locator('.continue-code')).to_have_text(
                f'task(..., subagent_type="writer", continue_task_id="{first_id}")'
            )
            await expect(drawer.locator('.continue-gone')).to_be_hidden()  # its conversation is kept
            # This app was not given the subagents: no box to start a follow-up from the page.
            await expect(drawer.locator('.continue-form')).to_be_hidden()
            await expect(drawer.locator('.continue-help')).to_be_hidden()

            # A follow-up: its card says so, its drawer links to the task it continues.
            follow_id = (await manager.start(writer, 'And at night?', scope='bay', continue_task_id=first_id)).id
            await expect_state(page, follow_id, 'completed')
            await expect(card(page, follow_id).locator('.follow-up-badge')).to_be_visible()
            await expect(card(page, first_id).locator('.follow-up-badge')).to_be_hidden()
            await card(page, follow_id).locator('.details').click()
            await expect(drawer.locator('.follow-up')).to_be_visible()
            await expect(drawer.locator('.follow-link')).to_have_text(first_id[:8])
            await page.screenshot(path=tmp_path / 'drawer-follow-up.png', full_page=True)
            await drawer.locator('.follow-link').click()
            await expect(drawer.locator('.drawer-id .task-id')).to_have_text(first_id)
            await expect(drawer.locator('.description')).to_have_text('Write about the tides')

            # A task retried after a rate limit: a badge on its card, the attempt and the retry in its drawer.
            flaky = FlakyOnce()
            flaky_id = (await manager.start(flaky.config(), 'Look up the tide times', scope='bay')).id
            await expect_state(page, flaky_id, 'running')
            await expect(card(page, flaky_id).locator('.attempts-badge')).to_be_hidden()
            await card(page, flaky_id).locator('.details').click()
            await expect(drawer.locator('.attempt')).to_be_hidden()
            flaky.go.set()  # the page knows the task: the retry event finds it
            await expect_state(page, flaky_id, 'completed')
            await expect(card(page, flaky_id).locator('.attempts-badge')).to_be_visible()
            await expect(card(page, flaky_id).locator('.attempts-badge')).to_have_text('2 attempts')
            await expect(drawer.locator('.attempt')).to_be_visible()
            await expect(drawer.locator('.attempt')).to_have_text(
                'Attempt 2: the run was tried again after 1 transient model failure.'
            )
            retry = drawer.locator('.timeline .step.retry')
            await expect(retry).to_have_count(1)
            await expect(retry.locator('.step-state')).to_have_text('retry: attempt 2')
            await expect(retry.locator('.step-error')).to_contain_text('429')
            steps = drawer.locator('.timeline .step')
            assert [await s.get_attribute('class') for s in await steps.all()][1:] == [
                'step state-running',
                'step retry',
                'step state-completed current',
            ]
            record = manager.get(flaky_id)
            assert record is not None and record.attempts == 2
            await page.screenshot(path=tmp_path / 'drawer-retried.png', full_page=True)
            # The only complaint is the browser's own note of the refused message.
            assert problems == ['Failed to load resource: the server responded with a status of 409 (Conflict)']
        finally:
            slow.release.set()
    for name in ('drawer-steer', 'drawer-follow-up', 'drawer-retried'):
        assert (tmp_path / f'{name}.png').stat().st_size > 10_000


async def test_dashboard_continues_a_finished_task_in_chromium(tmp_path: Path) -> None:
    from pydantic_ai.models.function import FunctionModel

    from pydantic_ai_subagents import RefuseTask, TaskRequest

    problems: list[str] = []
    writer = worker(FunctionModel(remembering), 'writer')
    gate = Gate()
    slow = worker(gate.model(), 'surveyor')

    def no_buoys(request: TaskRequest) -> RefuseTask | None:
        return RefuseTask(reason='no follow-ups about buoys') if 'buoy' in request.description else None

    async with (
        TaskManager(before_task=no_buoys, max_retained=3) as manager,
        serving(manager, subagents=[writer, slow]) as url,
        dashboard(url, problems) as page,
    ):
        try:
            drawer = page.locator('#drawer')
            section = drawer.locator('.continue-section')

            # A live task offers no follow-up; once completed, its drawer has the box.
            live_id = (await manager.start(slow, 'Survey the rock pools', scope='bay')).id
            with anyio.fail_after(10):
                await gate.entered.wait()
            await card(page, live_id).locator('.details').click()
            await expect(drawer.locator('.steer-form')).to_be_visible()
            await expect(section).to_be_hidden()
            gate.release.set()
            await expect_state(page, live_id, 'completed')
            await expect(section).to_be_visible()
            await expect(section.locator('.continue-form')).to_be_visible()
            await expect(section.locator('.continue-note')).to_be_hidden()

            first_id = (await manager.start(writer, 'Write about the tides', scope='bay')).id
            await expect_state(page, first_id, 'completed')
            await card(page, first_id).locator('.details').click()
            await expect(drawer.locator('.drawer-id .task-id')).to_have_text(first_id)
            await expect(section.locator('.continue-help')).to_be_visible()
            await expect(section.locator('.continue-reply')).to_be_hidden()

            # A refused follow-up: the server's reason is shown in the drawer of the task it would have continued.
            await section.locator('.continue-input').fill('And the buoys?')
            await section.locator('.continue-button').click()
            await expect(section.locator('.continue-reply')).to_have_text(
                'Not started: the follow-up was refused: no follow-ups about buoys (HTTP 409)'
            )
            await expect(drawer.locator('.drawer-id .task-id')).to_have_text(first_id)
            await expect(section.locator('.continue-input')).to_have_value('And the buoys?')
            assert [r.id for r in manager.list()] == [live_id, first_id]

            # Started: the follow-up appears in the tree, its drawer opens, and it ends with the earlier conversation.
            await section.locator('.continue-input').fill('And at <b>night</b>?')
            await section.locator('.continue-input').press('Enter')
            await expect(drawer.locator('.drawer-id .task-id')).not_to_have_text(first_id)
            follow_id = await drawer.locator('.drawer-id .task-id').inner_text()
            await expect(drawer.locator('.follow-up')).to_be_visible()
            await expect(drawer.locator('.follow-link')).to_have_text(first_id[:8])
            await expect(drawer.locator('.description')).to_have_text('And at <b>night</b>?')
            await expect_state(page, follow_id, 'completed')
            await expect(card(page, follow_id).locator('.follow-up-badge')).to_be_visible()
            await expect(drawer.locator('.output-text')).to_have_text('Write about the tides | And at <b>night</b>?')
            assert await page.locator('#drawer b, #tree b').count() == 0
            record = manager.get(follow_id)
            assert record is not None and record.continued_from == first_id and record.scope == 'bay'
            # The follow-up, completed, can be continued in turn; the box of the task it continued is empty again.
            await expect(section.locator('.continue-form')).to_be_visible()
            await page.screenshot(path=tmp_path / 'drawer-continued.png', full_page=True)
            await drawer.locator('.follow-link').click()
            await expect(drawer.locator('.drawer-id .task-id')).to_have_text(first_id)
            await expect(section.locator('.continue-input')).to_have_value('')
            await expect(section.locator('.continue-reply')).to_be_hidden()

            # Pruned after the page read it: the click is refused (404), and the task leaves the page.
            filler = worker(child_text('filler'), 'filler')

            async def prune_first(route: Any) -> None:
                for _ in range(2):  # two more finished tasks push the two oldest out (max_retained=3)
                    await manager.wait_for((await manager.start(filler, 'fill', scope='other')).id)
                assert manager.get(first_id) is None
                await route.continue_()

            await page.route('**/continue*', prune_first)
            await section.locator('.continue-input').fill('And in winter?')
            await section.locator('.continue-button').click()
            await expect(page.locator('#toast')).to_have_text(f"Could not continue: task '{first_id}' not found")
            await expect(row(page, first_id)).to_have_count(0)
            await expect(drawer).to_be_hidden()
            assert [r.continued_from for r in manager.list()] == [first_id, None, None]
            await page.unroute('**/continue*')
            # The only complaints are the browser's own notes of the refused follow-ups.
            assert problems == [
                'Failed to load resource: the server responded with a status of 409 (Conflict)',
                'Failed to load resource: the server responded with a status of 404 (Not Found)',
            ]
        finally:
            gate.release.set()
    assert (tmp_path / 'drawer-continued.png').stat().st_size > 10_000
