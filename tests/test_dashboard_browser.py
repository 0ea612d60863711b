"""The dashboard end to end, in a real headless Chromium driven by Playwright.

The app runs under uvicorn on the test's event loop, next to the task manager and its scripted subagents. The test
watches tasks appear live, answers a question and hard-cancels a task with the page's own controls, and checks
that markup written by a model is shown as text and never runs.

Needs Debian's `chromium` at /usr/bin/chromium (`apt-get install -y chromium`); without it the test fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from playwright.async_api import ConsoleMessage, Page, async_playwright, expect

from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset
from pydantic_ai_subagents.web import create_app

from .conftest import Gate, Script, call, child_text, task_id_from, text

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


class Server(uvicorn.Server):
    """uvicorn on the test's own loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(manager: TaskManager) -> AsyncIterator[str]:
    app = create_app(manager, allow_unauthenticated=True)
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


async def test_dashboard_shows_controls_and_escapes_tasks_in_chromium(tmp_path: Path) -> None:
    if not CHROMIUM_FOUND:
        pytest.fail(
            f'{CHROMIUM} is missing: install Debian\'s chromium ("apt-get install -y chromium") to run this test'
        )
    started = time.monotonic()
    slow, nested = Gate(), Gate()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ('error', 'warning'):
            problems.append(f'console {message.type}: {message.text}')

    async with TaskManager(max_nesting_depth=2) as manager, serving(manager) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={'width': 1280, 'height': 900})
            page.on('console', on_console)
            page.on('pageerror', lambda error: problems.append(f'page error: {error}'))
            await page.goto(url)
            await expect(page.locator('#connection')).to_have_attribute('data-state', 'live')
            await expect(page.locator('#empty')).to_be_visible()

            # Tasks started after the page loaded appear through the event stream.
            slow_id = (await manager.start(worker(slow.model(), 'researcher'), 'Survey every tide pool', scope='c1')).id
            await expect(row(page, slow_id)).to_have_attribute('data-state', 'running')
            await expect(row(page, slow_id).locator('.description').first).to_have_text('Survey every tide pool')

            xss_id = (await manager.start(worker(child_text(XSS_RESULT), 'writer'), XSS_DESCRIPTION, scope='c1')).id
            await expect(row(page, xss_id)).to_have_attribute('data-state', 'completed')

            asking = Script([[call('ask_parent', question='Which <i>pool</i> first?')], lambda s: [text(s.reply())]])
            ask_id = (await manager.start(worker(asking.model(), 'planner'), 'Plan the visit', scope='c1')).id
            await expect(row(page, ask_id)).to_have_attribute('data-state', 'waiting_for_answer')

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
            await expect(row(page, ask_id)).to_have_attribute('data-state', 'completed')
            await expect(row(page, ask_id).locator('.output-text')).to_have_text('The <b>north</b> pool')

            # Hard-cancel the slow task with its button.
            await row(page, slow_id).locator('.cancel-hard').click()
            await expect(row(page, slow_id)).to_have_attribute('data-state', 'cancelled')
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
            await browser.close()
            nested.release.set()
    assert (tmp_path / 'dashboard.png').stat().st_size > 10_000
    assert time.monotonic() - started < 30
