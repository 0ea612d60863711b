"""Cancel a subagent's task from another thread while the parent's run is streaming.

One thread runs the parent agent, which hands a long sync task to a slow "storyteller" subagent. A second thread
finds the task with `TaskManager.list()`, waits a moment, and calls `TaskManager.hard_cancel()` (or `soft_cancel()`
with `--soft`); both are safe to call from any thread. Then it prints how the task ended and what it had written.

    uv run python examples/cancel_from_another_thread.py           # hard cancel
    uv run python examples/cancel_from_another_thread.py --soft    # soft cancel: the storyteller wraps up

Set `SUBAGENTS_DEMO_MODEL` to run it on a real model.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.toolsets import FunctionToolset

from _scripted import History, call, child, demo_model, parent, print_events, say, scripted_model, section, short
from pydantic_ai_subagents import SubAgentConfig, TaskStatus, create_subagent_toolset

CHAPTERS = (
    'The keeper of the north light had not spoken to anyone in a year when the boat appeared.',
    'It carried a girl, a crate of oranges and a letter addressed to a man who had died long ago.',
    'The keeper read the letter by lamplight and learned that the dead man had been his own father.',
    'All winter the girl climbed the stairs with him and learned to trim the wick and wind the clock.',
    'In spring the oranges were gone and the letter had been answered, page by page, in the log book.',
    'When the boat came back, the keeper went with it, and the girl stayed to keep the light.',
)


async def save_chapter(number: int, text: str) -> str:
    """Save one chapter of the story.

    Args:
        number: The chapter number, from 1.
        text: The chapter.
    """
    return f'Saved chapter {number}.'


def storyteller_script(h: History) -> ModelResponse:
    written = len(h.returns('save_chapter'))
    if h.cancellation_requested:
        return say(f'Stopped after {written} of {len(CHAPTERS)} chapters. So far: ' + ' '.join(CHAPTERS[:written]))
    if written < len(CHAPTERS):
        return call('save_chapter', number=written + 1, text=CHAPTERS[written])
    return say(' '.join(CHAPTERS))


storyteller = SubAgentConfig(
    name='storyteller',
    description='Writes long stories, one chapter at a time.',
    instructions='Write the story in six chapters, saving each one with save_chapter before writing the next.',
    toolsets=[FunctionToolset([save_chapter])],
    model=child(scripted_model('scripted-storyteller', storyteller_script, delay=0.3)),
)
toolset = create_subagent_toolset([storyteller], general_purpose=False, soft_cancel_grace=5)
manager = toolset.manager
agent = Agent(demo_model(), toolsets=[toolset])

PROMPT = 'Have the storyteller write a six-chapter story about a lighthouse keeper (sync mode), then sum it up.'


def run_parent(outcome: dict[str, Any], controls_done: threading.Event) -> None:
    """The parent's thread: its own event loop, one streamed run, then the manager is closed on that loop.

    Calls like `manager.hard_cancel()` from other threads are carried out on this loop, so it stays up (and the
    manager open) until the other thread says it is done with them.
    """

    async def main() -> None:
        async with toolset:
            result = await agent.run(
                PROMPT,
                model=parent(
                    lambda h: call(
                        'task', description='A six-chapter story about a lighthouse keeper', subagent_type='storyteller'
                    ),
                    lambda h: say(f'The storyteller did not finish. Its task said: {h.last_return("task")}'),
                ),
                event_stream_handler=print_events,
            )
            outcome['run_id'] = result.run_id
            outcome['output'] = result.output
            await asyncio.to_thread(controls_done.wait)

    asyncio.run(main())


def find_running_task(timeout: float = 30) -> str:
    """Poll the manager (reading is safe from any thread) until a task is running; return its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in manager.list(active_only=True) if r.status is TaskStatus.RUNNING]
        if running:
            return running[0].id
        time.sleep(0.02)
    raise TimeoutError('no task started')


def transcript_preview(messages: list[ModelMessage]) -> str:
    """What a hard-cancelled run had written: its text and the chapters it saved, from its transcript."""
    pieces: list[str] = []
    for message in messages:
        if isinstance(message, ModelResponse):
            for part in message.parts:
                if isinstance(part, TextPart):
                    pieces.append(part.content)
                elif isinstance(part, ToolCallPart) and part.tool_name == 'save_chapter':
                    pieces.append(str(part.args_as_dict().get('text', '')))
    return ' '.join(pieces)


def main() -> None:
    soft = '--soft' in sys.argv[1:]
    outcome: dict[str, Any] = {}
    section(f'Parent run in thread "parent"; {"soft" if soft else "hard"} cancel from thread "main"')
    print(f'user: {PROMPT}')
    controls_done = threading.Event()
    thread = threading.Thread(target=run_parent, args=(outcome, controls_done), name='parent')
    thread.start()
    try:
        task_id = find_running_task()
        time.sleep(5.0 if demo_model() else 1.0)  # let the storyteller write a few chapters
        record = manager.get(task_id)
        assert record is not None
        print(
            f'  [main thread] task {task_id[:8]}... is {record.status.value}, {record.usage.requests} requests so far'
        )
        cancel = manager.soft_cancel if soft else manager.hard_cancel
        accepted = cancel(task_id)
        print(f'  [main thread] {cancel.__name__}({task_id[:8]}...) accepted: {accepted}')
        print(f'  [main thread] asking a second time is refused: {cancel(task_id)}')
    finally:
        controls_done.set()
        thread.join(timeout=60)

    record = manager.get(task_id)
    assert record is not None
    # A soft cancel leaves the subagent's wrap-up answer; a hard one only the stopped run's messages.
    preview = (record.partial_result or '') if soft else transcript_preview(manager.transcript(task_id) or [])
    section('How it ended')
    print(f'parent: {short(outcome.get("output", ""), 200)}')
    print(f'Status: {record.status.value}')
    print(f'Task id: {record.id}')
    print(f'Parent run id: {outcome.get("run_id")}')
    print(f'Was cancelled: {record.status is TaskStatus.CANCELLED}')
    if record.cancel is not None:
        print(f'Cancel: {record.cancel.kind}, requested by {record.cancel.requested_by}')
    print(f'Partial content ({len(preview)} chars): {preview[:200]}')


if __name__ == '__main__':
    main()
