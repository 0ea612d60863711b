"""The dashboard keeps the later view of a task when replies and events cross, in a real headless Chromium.

A reply (`POST .../answer`, `GET /tasks`) is read on its own connection, the event stream on another: a view read
before a transition can reach the page after the event of that transition. The test forces that order by holding
the replies in the browser until the page has shown the transition, and checks the page keeps what it has shown.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import anyio
import pytest
from playwright.async_api import APIResponse, Route, expect

from pydantic_ai_subagents import TaskManager

from .conftest import Script, call, text
from .test_dashboard_browser import card, dashboard, expect_state, row, serving, worker

pytestmark = pytest.mark.anyio

Held = tuple[Route, APIResponse]


async def timeline(page: Any) -> list[str | None]:
    return [await s.get_attribute('data-state') for s in await page.locator('#drawer .timeline .step').all()]


async def test_a_view_read_before_an_event_does_not_undo_it_in_chromium() -> None:
    problems: list[str] = []
    go = anyio.Event()

    async def finish(s: Script) -> list[Any]:
        await go.wait()
        return [text(f'Starting at {s.reply()}')]

    answers_in, answers = anyio.create_memory_object_stream[Held](10)
    lists_in, lists = anyio.create_memory_object_stream[Held](10)
    holding = True

    async def hold_answer(route: Route) -> None:
        await answers_in.send((route, await route.fetch()))

    async def hold_list(route: Route) -> None:
        if not holding:
            await route.continue_()
            return
        await lists_in.send((route, await route.fetch()))

    def is_list(url: str) -> bool:
        return urlparse(url).path == '/tasks'

    async with (
        answers_in,
        answers,
        lists_in,
        lists,
        TaskManager() as manager,
        serving(manager) as url,
        dashboard(url, problems) as page,
    ):
        script = Script([[call('ask_parent', question='Which dune first?')], finish])
        task_id = (await manager.start(worker(script.model(), 'planner'), 'Plan the dune walk', scope='dunes')).id
        await expect_state(page, task_id, 'waiting_for_answer')
        await card(page, task_id).locator('.details').click()
        drawer = page.locator('#drawer')
        await expect(drawer.locator('.question')).to_have_text('Which dune first?')

        await page.route('**/tasks/*/answer', hold_answer)
        await page.route(is_list, hold_list)
        await card(page, task_id).locator('.answer-input').fill('The tall one')
        await card(page, task_id).locator('.answer-button').click()
        with anyio.fail_after(10):
            # Both read while the subagent, answered, has not finished yet.
            answer_route, answer_reply = await answers.receive()
            list_route, list_reply = await lists.receive()
        assert json.loads(await answer_reply.text())['task']['status']['state'] == 'running'
        [listed] = json.loads(await list_reply.text())['tasks']
        assert listed['status']['state'] == 'running'

        # The subagent finishes: the event stream shows it at once, while both replies are held back.
        go.set()
        current = drawer.locator('.timeline .step.current')
        await expect(current).to_have_attribute('data-state', 'completed')
        shown = ['pending', 'running', 'waiting_for_answer', 'running', 'completed']
        assert await timeline(page) == shown

        # The answer's reply, read before that, arrives now: it must not take the step back.
        await answer_route.fulfill(response=answer_reply)
        await expect(card(page, task_id).locator('.answer-input')).to_have_value('')  # the reply was taken in
        assert await row(page, task_id).get_attribute('data-state') == 'completed'
        assert await timeline(page) == shown

        # Nor the list read before it: the page reads again once it has taken it in, and still shows the end.
        await list_route.fulfill(response=list_reply)
        with anyio.fail_after(10):
            again_route, again_reply = await lists.receive()
        assert await row(page, task_id).get_attribute('data-state') == 'completed'
        assert await timeline(page) == shown
        assert json.loads(await again_reply.text())['tasks'][0]['status']['state'] == 'completed'

        holding = False
        await again_route.fulfill(response=again_reply)
        while True:
            try:
                held_route, held_reply = lists.receive_nowait()
            except anyio.WouldBlock:
                break
            await held_route.fulfill(response=held_reply)
        await page.unroute_all(behavior='ignoreErrors')
        await expect(drawer.locator('.output-text')).to_have_text('Starting at The tall one')
        assert await timeline(page) == shown
        assert problems == []
