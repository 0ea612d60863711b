"""Continuing a finished task: a follow-up on the same subagent that starts from the earlier conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import FunctionModel

from pydantic_ai_subagents import (
    TaskManager,
    TaskNotContinuableError,
    TaskNotFoundError,
    TaskStatus,
    create_subagent_toolset,
)
from pydantic_ai_subagents._manager._transcripts import Transcripts

from .conftest import Gate, Script, call, split_sync_reply, task_id_from
from .remembering import prompts_of, worker

pytestmark = pytest.mark.anyio


async def model_says(toolset: Any, *calls: Any) -> list[str]:
    script = Script([list(calls)])
    await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
    return script.replies[1]


async def test_the_model_continues_a_finished_task_with_its_conversation() -> None:
    toolset = create_subagent_toolset([worker()])
    async with toolset:
        (first,) = await model_says(toolset, call('task', description='list the files', subagent_type='worker'))
        (old,) = toolset.manager.list()
        (follow_up,) = await model_says(
            toolset,
            call('task', description='now count them', subagent_type='worker', continue_task_id=old.id),
        )
        records = toolset.manager.list()
    assert split_sync_reply(first) == ('list the files', old.id)
    new = records[-1]
    assert split_sync_reply(follow_up) == ('list the files | now count them', new.id)
    assert new.continued_from == old.id and new.status is TaskStatus.COMPLETED
    assert old.continued_from is None


async def test_the_model_follows_up_on_a_sync_task_with_the_id_its_reply_named() -> None:
    # In one run, with nothing but what the replies say: the id in the sync reply is the one to continue.
    def follow_up(script: Script) -> list[Any]:
        _, task_id = split_sync_reply(script.reply())
        return [call('task', description='now count them', subagent_type='worker', continue_task_id=task_id)]

    toolset = create_subagent_toolset([worker()])
    async with toolset:
        script = Script([[call('task', description='list the files', subagent_type='worker')], follow_up])
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        first, second = toolset.manager.list()
    assert split_sync_reply(script.replies[2][0]) == ('list the files | now count them', second.id)
    assert second.continued_from == first.id


async def test_a_follow_up_of_a_follow_up_has_the_whole_conversation() -> None:
    async with TaskManager() as manager:
        config = worker()
        first = await manager.wait_for((await manager.start(config, 'one', scope='s')).id)
        second = await manager.start(config, 'two', scope='s', continue_task_id=first.id)
        second = await manager.wait_for(second.id)
        third = await manager.start(config, 'three', scope='s', continue_task_id=second.id)
        third = await manager.wait_for(third.id)
        transcript = manager.transcript(third.id)
    assert third.result == 'one | two | three'
    assert third.continued_from == second.id and second.continued_from == first.id
    assert transcript is not None and prompts_of(transcript) == ['one', 'two', 'three']


async def test_replies_when_a_task_cannot_be_continued() -> None:
    gate = Gate()
    failing = FunctionModel(lambda m, i: (_ for _ in ()).throw(RuntimeError('model down')))
    toolset = create_subagent_toolset([worker(), worker(gate.model(), name='slow'), worker(failing, name='broken')])
    async with toolset:
        manager = toolset.manager
        await model_says(toolset, call('task', description='a', subagent_type='worker'))
        await model_says(toolset, call('task', description='b', subagent_type='broken'))
        (done, failed) = manager.list()
        (started,) = await model_says(toolset, call('task', description='c', subagent_type='slow', mode='async'))
        live = task_id_from(started)
        replies = await model_says(
            toolset,
            call('task', description='x', subagent_type='worker', continue_task_id='nope'),
            call('task', description='x', subagent_type='slow', continue_task_id=live),
            call('task', description='x', subagent_type='slow', continue_task_id=done.id),
            call('task', description='x', subagent_type='broken', continue_task_id=failed.id),
        )
        gate.release.set()
        await manager.wait_for(live)
    assert failed.status is TaskStatus.FAILED
    assert replies == [
        f"No task with ID 'nope' in this conversation. Your active tasks: {live} (slow, running).",
        f'Task not started: task {live!r} cannot be continued: it has not finished (running); send it a message '
        'with message_task instead.',
        f"Task not started: task {done.id!r} cannot be continued: it was a task of 'worker', not of 'slow'.",
        f'Task not started: task {failed.id!r} cannot be continued: it ended failed, not completed; start a new task.',
    ]


async def test_continue_a_task_that_is_being_pruned_gets_a_clear_reply() -> None:
    """Retention drops the old task as the follow-up asks for it: a clear refusal, never a fresh task."""
    toolset = create_subagent_toolset([worker()], max_retained=1)
    async with toolset:
        manager = toolset.manager
        await model_says(toolset, call('task', description='old work', subagent_type='worker'))
        (old,) = manager.list()
        # The next task to finish pushes the old one out of retention, in the same step that settles it.
        script = Script(
            [
                [call('task', description='other work', subagent_type='worker')],
                [call('task', description='follow up', subagent_type='worker', continue_task_id=old.id)],
            ]
        )
        await Agent(script.model(), toolsets=[toolset]).run('go', conversation_id='c1')
        replies = [script.replies[1][0], script.replies[2][0]]
        (other,) = manager.list()
        with pytest.raises(TaskNotContinuableError, match='no longer kept'):
            await manager.start(worker(), 'again', scope='c1', continue_task_id=old.id)
        with pytest.raises(TaskNotFoundError):
            await manager.start(worker(), 'again', scope='another conversation', continue_task_id=old.id)
    assert split_sync_reply(replies[0]) == ('other work', other.id)
    assert replies[1] == (
        f'Task not started: task {old.id!r} cannot be continued: it finished long ago and its conversation is no '
        'longer kept.'
    )
    assert manager.transcript(old.id) is None


async def test_a_task_in_its_own_process_is_continued_in_another(tmp_path: Path) -> None:
    config = worker(isolation='process')
    async with TaskManager() as manager:
        first = await manager.wait_for((await manager.start(config, 'one', scope='s')).id, timeout=30)
        second = await manager.start(config, 'two', scope='s', continue_task_id=first.id)
        second = await manager.wait_for(second.id, timeout=30)
    assert first.status is TaskStatus.COMPLETED, first.error
    assert second.result == 'one | two'


async def test_older_conversations_are_kept_as_json_and_still_continue() -> None:
    async with TaskManager() as manager:
        manager._settler.transcripts.hot = 2  # pyright: ignore[reportPrivateUsage]
        config = worker()
        done = [await manager.wait_for((await manager.start(config, f'job {i}', scope='s')).id) for i in range(4)]
        oldest, newest = done[0].id, done[-1].id
        # The newest are the run's own objects; an older one is read back from JSON, equal each time, never the same.
        assert manager.transcript(newest) is manager.transcript(newest)
        first, again = manager.transcript(oldest), manager.transcript(oldest)
        assert first is not None and first == again and first is not again
        assert prompts_of(first) == ['job 0']
        follow_up = await manager.start(config, 'and more', scope='s', continue_task_id=oldest)
        assert (await manager.wait_for(follow_up.id)).result == 'job 0 | and more'


def test_a_conversation_that_does_not_serialise_is_kept_as_it_is() -> None:
    class Opaque:
        """Not something Pydantic AI's JSON can hold."""

    messages: list[ModelMessage] = [ModelRequest(parts=[ToolReturnPart('look', Opaque(), tool_call_id='1')])]
    plain: list[ModelMessage] = [ModelRequest(parts=[UserPromptPart('hello')])]
    kept = Transcripts(hot=0)
    kept.keep('opaque', messages)
    kept.keep('plain', plain)
    assert kept.get('opaque') is messages
    assert kept.get('plain') == plain and kept.get('plain') is not plain
    assert len(kept) == 2 and 'plain' in kept
    kept.pop('opaque')
    kept.pop('plain')
    kept.pop('never kept')
    assert len(kept) == 0 and kept.get('plain') is None
