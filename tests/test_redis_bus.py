"""Tests of the Redis message bus against a real Redis server: two bus instances stand for two processes, and
one test runs a real second OS process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis.asyncio as aioredis

from pydantic_ai_subagents._bus import (
    Answer,
    CancelRequest,
    Message,
    MessageBus,
    Progress,
    Question,
    StatusChanged,
    TaskAssigned,
    TaskResult,
)
from pydantic_ai_subagents._errors import BusClosedError, BusError, ReplyTimeoutError, UnknownRecipientError
from pydantic_ai_subagents.redis import MessageCodecError, RedisMessageBus, register_message_type
from pydantic_ai_subagents.redis._codec import decode, encode

from . import redis_helpers, redis_server
from .conftest import leftover_tasks

pytestmark = pytest.mark.anyio

redis_url = redis_server.redis_url
namespace = redis_helpers.namespace

FAST = {'refresh_interval': 0.05, 'lease_seconds': 2.0, 'read_block': 0.2}


@pytest.fixture
async def pair(redis_url: str, namespace: str) -> AsyncIterator[tuple[RedisMessageBus, RedisMessageBus]]:
    """Two buses on one namespace, each with its own connections: two processes as far as Redis can tell."""
    async with (
        RedisMessageBus(redis_url, namespace=namespace, **FAST) as a,
        RedisMessageBus(redis_url, namespace=namespace, **FAST) as b,
    ):
        yield a, b


def progress(text: str, *, to: str | None = 'worker', topic: str | None = None) -> Progress:
    return Progress(sender='parent', recipient=to, topic=topic, task_id='t1', text=text)


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.01)


async def test_is_a_message_bus(pair: tuple[RedisMessageBus, RedisMessageBus]) -> None:
    bus: MessageBus = pair[0]
    assert not bus.closed


async def test_every_builtin_kind_round_trips_through_json() -> None:
    messages: list[Message] = [
        TaskAssigned(sender='m', recipient='w', task_id='t', subagent='s', description='d'),
        CancelRequest(sender='m', recipient='w', task_id='t', kind='hard', requested_by='user'),
        Question(sender='w', recipient='m', task_id='t', question='why?', correlation_id='c1'),
        Answer(sender='m', task_id='t', answer='because'),
        Progress(sender='w', topic='news', task_id='t', text='half way'),
        TaskResult(sender='w', task_id='t', status='completed', output='ok'),
        StatusChanged(sender='m', task_id='t', old=None, new='running'),
    ]
    for message in messages:
        envelope = decode(encode(message, origin='me', reply_to='you'))
        assert envelope.message == message
        assert type(envelope.message) is type(message)
        assert (envelope.origin, envelope.reply_to) == ('me', 'you')


async def test_point_to_point_between_two_buses(pair: tuple[RedisMessageBus, RedisMessageBus]) -> None:
    a, b = pair
    with b.open_mailbox('worker') as inbox:
        await a.wait_for_participant('worker')
        sent = [progress(f'note {i}') for i in range(20)]
        for message in sent:
            a.send(message)
        with anyio.fail_after(5):
            received = [await inbox.receive() for _ in sent]
    assert received == sent  # same ids, same timestamps, same order
    assert all(type(m) is Progress for m in received)
    assert a.stats().written == 20
    assert b.stats().received == 20
    assert b.stats().delivered == 20


async def test_local_recipient_is_delivered_directly(pair: tuple[RedisMessageBus, RedisMessageBus]) -> None:
    a, _ = pair
    with a.open_mailbox('worker') as inbox:
        message = progress('here')
        a.send(message)  # no round trip needed: the mailbox is in this process
        assert inbox.receive_nowait() is message
    assert a.stats().written == 0


async def test_publish_reaches_subscribers_in_every_process_once(
    pair: tuple[RedisMessageBus, RedisMessageBus],
) -> None:
    a, b = pair
    with a.subscribe('news') as a_news, b.subscribe('news') as b_news, b.subscribe('*') as b_all:
        with b.subscribe('other') as b_other:
            message = progress('published', to=None, topic='news')
            assert a.publish(message) == 1  # the local subscriber; the others are reached through Redis
            with anyio.fail_after(5):
                assert await b_news.receive() == message
                assert await b_all.receive() == message
            await a.flush()
            await anyio.sleep(0.2)
            # No echo of its own publish back to the publisher, nothing on unrelated topics.
            assert a_news.receive_nowait() == message
            assert a_news.receive_nowait() is None
            assert b_news.receive_nowait() is None
            assert b_other.receive_nowait() is None


async def test_ask_in_one_bus_reply_in_the_other(pair: tuple[RedisMessageBus, RedisMessageBus]) -> None:
    a, b = pair
    replies: list[bool] = []
    with b.open_mailbox('answerer') as inbox:

        async def answer_one() -> None:
            request = await inbox.receive()
            assert isinstance(request, Question)
            replies.append(b.reply(request, Answer(sender='answerer', task_id=request.task_id, answer='42')))
            replies.append(b.reply(request, Answer(sender='answerer', task_id=request.task_id, answer='again')))

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_one)
            await a.wait_for_participant('answerer')
            question = Question(sender='task:t1', recipient='answerer', task_id='t1', question='meaning?')
            reply = await a.ask(question, timeout=5)
    assert isinstance(reply, Answer)
    assert reply.answer == '42'
    assert reply.recipient == 'task:t1'
    assert reply.correlation_id is not None
    assert replies == [True, False]  # a second reply to the same request finds nobody waiting
    assert a.stats().pending_replies == 0


async def test_ask_times_out_when_the_other_side_stays_silent(
    pair: tuple[RedisMessageBus, RedisMessageBus],
) -> None:
    a, b = pair
    with b.open_mailbox('silent') as inbox:
        await a.wait_for_participant('silent')
        with pytest.raises(ReplyTimeoutError):
            await a.ask(Question(sender='x', recipient='silent', task_id='t', question='?'), timeout=0.3)
        late = await inbox.receive()
        b.reply(late, Answer(sender='silent', task_id='t', answer='too late'))  # nobody waits: dropped quietly
        await b.flush()
    assert a.stats().pending_replies == 0


async def test_unknown_recipient_rules(
    pair: tuple[RedisMessageBus, RedisMessageBus], redis_url: str, namespace: str
) -> None:
    a, b = pair
    with pytest.raises(UnknownRecipientError) as excinfo:
        a.send(progress('lost', to='nobody'))
    assert excinfo.value.recipient == 'nobody'

    box = b.open_mailbox('worker')
    await a.wait_for_participant('worker')
    a.send(progress('reaches it'))
    box.close()
    await b.flush()
    # Within one refresh interval the other bus learns that the mailbox closed.
    await wait_until(lambda: 'worker' not in a._participants.known)  # pyright: ignore[reportPrivateUsage]
    with pytest.raises(UnknownRecipientError):
        a.send(progress('too late'))

    # A mailbox listed by a process that died (its lease ran out) does not count as open.
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.zadd(f'{namespace}:participants', {'ghost': 1.0})
    finally:
        await client.aclose()
    await anyio.sleep(0.2)
    with pytest.raises(UnknownRecipientError):
        a.send(progress('boo', to='ghost'))
    with pytest.raises(TimeoutError):
        await a.wait_for_participant('ghost', timeout=0.2)


async def test_close_wakes_every_waiter_and_leaves_nothing_running(redis_url: str, namespace: str) -> None:
    outcomes: list[str] = []
    async with RedisMessageBus(redis_url, namespace=namespace, **FAST) as other:
        other_box = other.open_mailbox('elsewhere')
        bus = RedisMessageBus(redis_url, namespace=namespace, **FAST)
        async with bus:
            inbox = bus.open_mailbox('me')
            sub = bus.subscribe('news')
            await bus.wait_for_participant('elsewhere')

            async def expect_closed(name: str, coro: object) -> None:
                try:
                    await coro  # type: ignore[misc]
                except BusClosedError:
                    outcomes.append(name)

            async with anyio.create_task_group() as tg:
                tg.start_soon(expect_closed, 'mailbox', inbox.receive())
                tg.start_soon(expect_closed, 'subscription', sub.receive())
                tg.start_soon(
                    expect_closed,
                    'ask',
                    bus.ask(Question(sender='me', recipient='elsewhere', task_id='t', question='?'), timeout=30),
                )
                await anyio.sleep(0.1)
                await bus.aclose()
            assert bus.closed
            with pytest.raises(BusClosedError):
                bus.send(progress('after close', to='elsewhere'))
        # Its mailbox was unlisted on the way out, so the other bus stops knowing it.
        await wait_until(lambda: 'me' not in other._participants.known)  # pyright: ignore[reportPrivateUsage]
        other_box.close()
    assert sorted(outcomes) == ['ask', 'mailbox', 'subscription']
    assert leftover_tasks() == []


async def test_closing_the_bus_wakes_a_participant_waiter(redis_url: str, namespace: str) -> None:
    outcomes: list[str] = []
    async with RedisMessageBus(redis_url, namespace=namespace, **FAST) as bus:

        async def wait() -> None:
            try:
                await bus.wait_for_participant('never', timeout=30)
            except BusClosedError:
                outcomes.append('closed')

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.1)
                assert outcomes == []
                bus.close()
    assert outcomes == ['closed']


async def test_undecodable_messages_are_dropped_and_counted(
    pair: tuple[RedisMessageBus, RedisMessageBus], redis_url: str, namespace: str
) -> None:
    a, b = pair
    with b.open_mailbox('worker') as inbox:
        await a.wait_for_participant('worker')
        client = aioredis.Redis.from_url(redis_url)
        try:
            key = f'{namespace}:mbox:worker'
            await client.xadd(key, {'m': 'not json'})
            await client.xadd(key, {'m': '{"v": 1, "type": "Mystery", "origin": "x", "reply_to": null, "data": {}}'})
            await client.xadd(key, {'other': 'field'})
        finally:
            await client.aclose()
        good = progress('still works')
        a.send(good)
        with anyio.fail_after(5):
            assert await inbox.receive() == good
    assert b.stats().undecodable == 3
    assert b.stats().delivered == 1


async def test_unregistered_kinds_stay_local_and_registered_ones_cross(
    pair: tuple[RedisMessageBus, RedisMessageBus],
) -> None:
    a, b = pair

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Private(Message):
        payload: object

    @register_message_type
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Ping(Message):
        count: int
        tags: list[str]

    with a.subscribe('x') as a_sub, b.subscribe('x') as b_sub, b.open_mailbox('worker') as inbox:
        assert a.publish(Private(sender='a', topic='x', payload=object())) == 1
        assert a.stats().local_only == 1
        assert isinstance(a_sub.receive_nowait(), Private)

        await a.wait_for_participant('worker')
        with pytest.raises(MessageCodecError):
            a.send(Private(sender='a', recipient='worker', payload=1))

        ping = Ping(sender='a', recipient='worker', topic='x', count=3, tags=['p', 'q'])
        a.send(ping)
        a.publish(ping)
        with anyio.fail_after(5):
            assert await inbox.receive() == ping
            assert await b_sub.receive() == ping
        assert b_sub.receive_nowait() is None  # the unregistered publish never left process a


async def test_threadsafe_send_from_another_thread(pair: tuple[RedisMessageBus, RedisMessageBus]) -> None:
    a, b = pair
    with b.open_mailbox('worker') as inbox:
        await a.wait_for_participant('worker')
        errors: list[BaseException] = []

        def target() -> None:
            try:
                a.send_threadsafe(progress('from a thread'))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
        assert errors == []
        with anyio.fail_after(5):
            received = await inbox.receive()
        assert isinstance(received, Progress)
        assert received.text == 'from a thread'


async def test_must_be_started_and_validates_options(redis_url: str) -> None:
    bus = RedisMessageBus(redis_url)
    with pytest.raises(BusError, match='not started'):
        bus.open_mailbox('x')
    with pytest.raises(BusError, match='not started'):
        bus.send_threadsafe(progress('x'))
    await bus.aclose()
    with pytest.raises(ValueError, match='namespace'):
        RedisMessageBus(redis_url, namespace='a*b')
    with pytest.raises(ValueError, match='lease_seconds'):
        RedisMessageBus(redis_url, refresh_interval=1, lease_seconds=1)


CHILD = """
import os
import sys

import anyio

from pydantic_ai_subagents import Answer, Progress, Question
from pydantic_ai_subagents.redis import RedisMessageBus


async def main(url: str, namespace: str) -> None:
    async with RedisMessageBus(url, namespace=namespace, refresh_interval=0.05, read_block=0.2) as bus:
        with bus.open_mailbox('remote') as inbox:
            with anyio.fail_after(20):
                question = await inbox.receive()
            assert isinstance(question, Question), question
            await bus.wait_for_participant('parent')
            bus.send(Progress(sender='remote', recipient='parent', task_id=question.task_id, text=str(os.getpid())))
            assert bus.reply(question, Answer(sender='remote', task_id=question.task_id, answer=question.question.upper()))
            await bus.flush()


anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_delivery_to_a_real_second_process(redis_url: str, namespace: str, tmp_path: Path) -> None:
    log = tmp_path / 'child.log'
    with log.open('wb') as out:
        child = await anyio.open_process(
            [sys.executable, '-c', CHILD, redis_url, namespace], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        async with RedisMessageBus(redis_url, namespace=namespace, **FAST) as bus:
            with bus.open_mailbox('parent') as inbox:
                await bus.wait_for_participant('remote', timeout=15)
                question = Question(sender='parent', recipient='remote', task_id='t9', question='shout this')
                reply = await bus.ask(question, timeout=10)
                assert isinstance(reply, Answer)
                assert reply.answer == 'SHOUT THIS'
                with anyio.fail_after(10):
                    note = await inbox.receive()
                assert isinstance(note, Progress)
                assert note.task_id == 't9'
                assert int(note.text) == child.pid != os.getpid()
        with anyio.fail_after(15):
            code = await child.wait()
        assert code == 0, log.read_text()
    finally:
        if child.returncode is None:
            child.kill()
        with anyio.CancelScope(shield=True):
            await child.aclose()


async def test_task_manager_runs_on_a_redis_bus(redis_url: str, namespace: str) -> None:
    """In one process the manager works unchanged on this bus: a question goes out through `ask` and is answered."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from pydantic_ai_subagents import SubAgentConfig, TaskManager, TaskStatus, create_subagent_toolset

    from .conftest import Script, call, task_id_from

    async def child(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [p for m in messages for p in getattr(m, 'parts', []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart('ask_parent', {'question': 'Which year?'})])
        return ModelResponse(parts=[TextPart(f'Report for {returns[-1].content}')])

    def answer(s: Script) -> list[Any]:
        tid = s.reply().split('Task ', 1)[1].split(' ', 1)[0]
        return [call('answer_subagent', task_id=tid, answer='1999')]

    script = Script(
        [
            [call('task', description='report', subagent_type='researcher', mode='async')],
            lambda s: [call('wait_tasks', task_ids=[task_id_from(s.reply())])],
            answer,
            lambda s: [call('wait_tasks', task_ids=[manager.list()[0].id])],
        ]
    )
    async with RedisMessageBus(redis_url, namespace=namespace, **FAST) as bus:
        manager = TaskManager(bus=bus)
        config = SubAgentConfig(name='researcher', instructions='You research.', model=FunctionModel(child))
        toolset = create_subagent_toolset([config], manager=manager)
        async with toolset:
            await Agent(script.model(), toolsets=[toolset]).run('go')
            (record,) = manager.list()
        assert record.status is TaskStatus.COMPLETED
        assert record.result == 'Report for 1999'
        stats = bus.stats()
        assert stats.local_only == 0  # task events, with their records, go through Redis to every process
        assert stats.written >= 5  # created, started, question asked, answered, completed
    assert bus.closed
