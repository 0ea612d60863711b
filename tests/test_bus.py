"""Tests of the in-memory message bus, on asyncio and on trio."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pydantic_ai_subagents._bus import (
    DEFAULT_MAX_BUFFER,
    Answer,
    BusStats,
    CancelRequest,
    InMemoryMessageBus,
    Mailbox,
    Message,
    MessageBus,
    Progress,
    Question,
    StatusChanged,
    Subscription,
    TaskAssigned,
    TaskResult,
)
from pydantic_ai_subagents._errors import (
    BusClosedError,
    BusError,
    MailboxFullError,
    ReplyTimeoutError,
    SubagentsError,
    UnknownRecipientError,
)


@pytest.fixture(params=['asyncio', 'trio'])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def progress(text: str, *, to: str | None = 'worker', topic: str | None = None) -> Progress:
    return Progress(sender='parent', recipient=to, topic=topic, task_id='t1', text=text)


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any], list[BaseException]]:
    """Start `fn` in a real OS thread; its result or exception lands in the returned lists."""
    results: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results, errors


# --- messages -------------------------------------------------------------------------------------------------


def test_messages_are_frozen_and_have_unique_ids() -> None:
    a = progress('one')
    b = progress('one')
    assert a.id != b.id
    assert len(a.id) == 32
    assert a.created_at > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.text = 'changed'  # type: ignore[misc]
    with pytest.raises(TypeError):
        Progress('parent', 'worker')  # type: ignore[misc]  # keyword-only


def test_every_message_type_is_a_message() -> None:
    messages: list[Message] = [
        TaskAssigned(sender='p', task_id='t', subagent='s', description='d'),
        CancelRequest(sender='p', task_id='t', kind='soft', requested_by='user'),
        Question(sender='s', task_id='t', question='why?'),
        Answer(sender='p', task_id='t', answer='because'),
        Progress(sender='s', task_id='t', text='half way'),
        TaskResult(sender='s', task_id='t', status='succeeded', output='done'),
        StatusChanged(sender='m', task_id='t', old=None, new='running'),
    ]
    for message in messages:
        assert isinstance(message, Message)
        assert message.recipient is None
        assert message.topic is None
        assert message.correlation_id is None
    result = messages[5]
    assert isinstance(result, TaskResult)
    assert result.error is None


def test_in_memory_bus_satisfies_protocol() -> None:
    bus: MessageBus = InMemoryMessageBus()
    assert not bus.closed


# --- point to point -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_delivers_in_order() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        for i in range(5):
            bus.send(progress(str(i)))
        assert box.queued == 5
        received = [await box.receive() for _ in range(5)]
        assert [m.text for m in received if isinstance(m, Progress)] == ['0', '1', '2', '3', '4']
        assert box.receive_nowait() is None
        assert bus.stats().delivered == 5


@pytest.mark.anyio
async def test_typed_message_round_trip_keeps_identity() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('sub-1')
        sent = TaskAssigned(sender='manager', recipient='sub-1', task_id='t9', subagent='sub-1', description='go')
        bus.send(sent)
        got = await box.receive()
        assert got is sent
        assert isinstance(got, TaskAssigned)
        assert (got.task_id, got.subagent, got.description) == ('t9', 'sub-1', 'go')


@pytest.mark.anyio
async def test_receive_waits_for_a_later_send() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        got: list[Message] = []

        async def reader() -> None:
            got.append(await box.receive())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                assert got == []
                bus.send(progress('late'))
        assert [m.text for m in got if isinstance(m, Progress)] == ['late']


@pytest.mark.anyio
async def test_two_readers_share_one_mailbox() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        got: list[str] = []

        async def reader() -> None:
            message = await box.receive()
            assert isinstance(message, Progress)
            got.append(message.text)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                bus.send(progress('a'))
                bus.send(progress('b'))
        assert sorted(got) == ['a', 'b']
        assert box.queued == 0


@pytest.mark.anyio
async def test_cancelled_receive_loses_no_message() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        with anyio.move_on_after(0.05) as scope:
            await box.receive()
        assert scope.cancelled_caught
        bus.send(progress('kept'))
        with anyio.fail_after(5):
            got = await box.receive()
        assert isinstance(got, Progress)
        assert got.text == 'kept'


@pytest.mark.anyio
async def test_unknown_and_closed_recipient() -> None:
    async with InMemoryMessageBus() as bus:
        with pytest.raises(UnknownRecipientError) as info:
            bus.send(progress('x', to='nobody'))
        assert info.value.recipient == 'nobody'
        assert isinstance(info.value, LookupError)

        box = bus.open_mailbox('worker')
        box.close()
        assert box.closed
        with pytest.raises(UnknownRecipientError):
            bus.send(progress('x'))


@pytest.mark.anyio
async def test_send_without_recipient_is_refused() -> None:
    async with InMemoryMessageBus() as bus:
        with pytest.raises(ValueError, match='no recipient'):
            bus.send(progress('x', to=None))


@pytest.mark.anyio
async def test_duplicate_mailbox_name() -> None:
    async with InMemoryMessageBus() as bus:
        first = bus.open_mailbox('worker')
        with pytest.raises(BusError, match="'worker' already has an open mailbox"):
            bus.open_mailbox('worker')
        first.close()
        first.close()  # idempotent
        second = bus.open_mailbox('worker')
        bus.send(progress('to the new one'))
        assert second.receive_nowait() is not None
        # closing the old, already closed box must not unregister the new one
        first.close()
        assert bus.stats().mailboxes == 1


@pytest.mark.anyio
async def test_mailbox_context_managers_close_and_free_the_name() -> None:
    async with InMemoryMessageBus() as bus:
        with bus.open_mailbox('worker') as box:
            assert isinstance(box, Mailbox)
            assert box.name == 'worker'
            assert 'worker' in repr(box)
        assert box.closed
        async with bus.open_mailbox('worker') as box2:
            bus.send(progress('x'))
        assert box2.closed
        with pytest.raises(UnknownRecipientError):
            bus.send(progress('y'))
        # what was queued before closing can still be read, then the box reports closed
        assert box2.receive_nowait() is not None
        with pytest.raises(BusClosedError):
            box2.receive_nowait()
        with pytest.raises(BusClosedError):
            await box2.receive()


@pytest.mark.anyio
async def test_wait_for_participant_returns_at_once_for_an_open_mailbox() -> None:
    async with InMemoryMessageBus() as in_memory:
        bus: MessageBus = in_memory
        with bus.open_mailbox('worker'):
            await bus.wait_for_participant('worker', timeout=0)
        with pytest.raises(TimeoutError, match="participant 'worker' did not open a mailbox"):
            await bus.wait_for_participant('worker', timeout=0)
        assert in_memory._arrivals == {}


@pytest.mark.anyio
async def test_wait_for_participant_waits_until_the_mailbox_opens() -> None:
    arrived: list[str] = []
    async with InMemoryMessageBus() as bus:

        async def wait(name: str) -> None:
            await bus.wait_for_participant('late', timeout=60)
            arrived.append(name)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, 'first')
                tg.start_soon(wait, 'second')
                await anyio.wait_all_tasks_blocked()
                assert arrived == []
                # A mailbox that opens and closes again before the waiters run does not count.
                bus.open_mailbox('late').close()
                await anyio.wait_all_tasks_blocked()
                assert arrived == []
                box = bus.open_mailbox('late')
        assert sorted(arrived) == ['first', 'second']
        bus.send(progress('now it is known', to='late'))
        assert box.queued == 1
        with pytest.raises(TimeoutError, match="'other'"):
            await bus.wait_for_participant('other', timeout=0.01)
        assert bus._arrivals == {}


@pytest.mark.anyio
async def test_closing_the_bus_wakes_participant_waiters() -> None:
    bus = InMemoryMessageBus()
    outcomes: list[str] = []

    async def wait() -> None:
        try:
            await bus.wait_for_participant('never', timeout=60)
        except BusClosedError:
            outcomes.append('closed')

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await bus.aclose()
    assert outcomes == ['closed']
    assert bus._arrivals == {}
    with pytest.raises(BusClosedError):
        await bus.wait_for_participant('never', timeout=60)


@pytest.mark.anyio
async def test_queue_options_are_validated() -> None:
    async with InMemoryMessageBus() as bus:
        with pytest.raises(ValueError, match='max_buffer'):
            bus.open_mailbox('a', max_buffer=0)
        with pytest.raises(ValueError, match='overflow'):
            bus.subscribe('t', overflow='block')  # type: ignore[arg-type]
        box = bus.open_mailbox('a')
        assert box.max_buffer == DEFAULT_MAX_BUFFER == 1024
        assert box.overflow == 'drop_oldest'
        assert bus.stats().mailboxes == 1


# --- publish / subscribe --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_publish_fans_out_to_every_subscriber() -> None:
    async with InMemoryMessageBus() as bus:
        subs = [bus.subscribe('progress') for _ in range(3)]
        other = bus.subscribe('status')
        message = progress('hi', to=None, topic='progress')
        assert bus.publish(message) == 3
        for sub in subs:
            assert await sub.receive() is message
        assert other.receive_nowait() is None
        assert bus.stats() == BusStats(delivered=3, dropped=0, mailboxes=0, subscriptions=4, pending_replies=0)


@pytest.mark.anyio
async def test_wildcard_subscription_sees_every_topic() -> None:
    async with InMemoryMessageBus() as bus:
        everything = bus.subscribe('*')
        only_a = bus.subscribe('a')
        assert bus.publish(progress('1', to=None, topic='a')) == 2
        assert bus.publish(progress('2', to=None, topic='b')) == 1
        texts = [m.text for m in (everything.receive_nowait(), everything.receive_nowait()) if isinstance(m, Progress)]
        assert texts == ['1', '2']
        assert everything.receive_nowait() is None
        got = only_a.receive_nowait()
        assert isinstance(got, Progress)
        assert got.text == '1'
        assert only_a.receive_nowait() is None


@pytest.mark.anyio
async def test_publish_without_subscribers_and_bad_topics() -> None:
    async with InMemoryMessageBus() as bus:
        assert bus.publish(progress('lost', to=None, topic='nobody-listens')) == 0
        with pytest.raises(ValueError, match='no topic'):
            bus.publish(progress('x'))
        with pytest.raises(ValueError, match='only works for subscribing'):
            bus.publish(progress('x', topic='*'))


@pytest.mark.anyio
async def test_closed_subscription_stops_receiving() -> None:
    async with InMemoryMessageBus() as bus:
        with bus.subscribe('a') as sub:
            assert isinstance(sub, Subscription)
            assert sub.topic == 'a'
            assert 'a' in repr(sub)
            keep = bus.subscribe('a')
        assert bus.publish(progress('x', topic='a')) == 1
        assert keep.receive_nowait() is not None
        keep.close()
        assert bus.publish(progress('y', topic='a')) == 0
        assert bus.stats().subscriptions == 0


# --- overflow -------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_drop_oldest_keeps_the_newest_messages() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker', max_buffer=3)
        for i in range(5):
            bus.send(progress(str(i)))
        assert box.dropped == 2
        assert box.queued == 3
        texts = [m.text for m in [await box.receive() for _ in range(3)] if isinstance(m, Progress)]
        assert texts == ['2', '3', '4']
        assert bus.stats().dropped == 2
        box.close()
        # the count survives the mailbox
        assert bus.stats().dropped == 2


@pytest.mark.anyio
async def test_error_policy_refuses_new_messages() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker', max_buffer=2, overflow='error')
        bus.send(progress('0'))
        bus.send(progress('1'))
        with pytest.raises(MailboxFullError) as info:
            bus.send(progress('2'))
        assert (info.value.recipient, info.value.capacity) == ('worker', 2)
        assert box.dropped == 0
        assert bus.stats().delivered == 2
        first = await box.receive()
        assert isinstance(first, Progress)
        assert first.text == '0'
        bus.send(progress('3'))  # room again
        assert box.queued == 2


@pytest.mark.anyio
async def test_publish_to_a_full_error_subscription_still_reaches_the_others() -> None:
    async with InMemoryMessageBus() as bus:
        strict = bus.subscribe('a', max_buffer=1, overflow='error')
        relaxed = bus.subscribe('a', max_buffer=1)
        assert bus.publish(progress('0', topic='a')) == 2
        with pytest.raises(MailboxFullError) as info:
            bus.publish(progress('1', topic='a'))
        assert info.value.recipient == 'a'
        latest = relaxed.receive_nowait()
        assert isinstance(latest, Progress)
        assert latest.text == '1'
        kept = strict.receive_nowait()
        assert isinstance(kept, Progress)
        assert kept.text == '0'


@pytest.mark.anyio
async def test_slow_subscriber_memory_is_bounded() -> None:
    async with InMemoryMessageBus() as bus:
        slow = bus.subscribe('firehose', max_buffer=8)
        for i in range(10_000):
            bus.publish(progress(str(i), topic='firehose'))
            assert slow.queued <= 8
        assert slow.queued == 8
        assert slow.dropped == 10_000 - 8
        texts: list[str] = []
        while (m := slow.receive_nowait()) is not None:
            assert isinstance(m, Progress)
            texts.append(m.text)
        assert texts == [str(i) for i in range(10_000 - 8, 10_000)]


_ops = st.lists(st.one_of(st.just('recv'), st.integers(min_value=0, max_value=10_000)), max_size=200)


@given(ops=_ops, capacity=st.integers(min_value=1, max_value=8))
def test_property_fifo_and_capacity_with_drop_oldest(ops: list[int | str], capacity: int) -> None:
    # send and receive_nowait need no running event loop, so the model check runs synchronously
    bus = InMemoryMessageBus()
    box = bus.open_mailbox('worker', max_buffer=capacity)
    model: deque[int] = deque()
    dropped = 0
    for op in ops:
        if op == 'recv':
            got = box.receive_nowait()
            if model:
                assert isinstance(got, Progress)
                assert got.text == str(model.popleft())
            else:
                assert got is None
        else:
            if len(model) == capacity:
                model.popleft()
                dropped += 1
            model.append(int(op))
            bus.send(progress(str(op)))
        assert box.queued == len(model) <= capacity
        assert box.dropped == dropped
    assert bus.stats().dropped == dropped


@given(sends=st.integers(min_value=0, max_value=30), capacity=st.integers(min_value=1, max_value=8))
def test_property_error_policy_never_exceeds_capacity(sends: int, capacity: int) -> None:
    bus = InMemoryMessageBus()
    box = bus.open_mailbox('worker', max_buffer=capacity, overflow='error')
    refused = 0
    for i in range(sends):
        try:
            bus.send(progress(str(i)))
        except MailboxFullError:
            refused += 1
    assert box.queued == min(sends, capacity)
    assert refused == max(0, sends - capacity)
    got = [m.text for m in iter(box.receive_nowait, None) if isinstance(m, Progress)]
    assert got == [str(i) for i in range(min(sends, capacity))]


# --- request / reply ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ask_and_reply() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('parent')
        replied: list[bool] = []

        async def responder() -> None:
            request = await box.receive()
            assert isinstance(request, Question)
            assert request.correlation_id is not None
            replied.append(bus.reply(request, Answer(sender='parent', task_id=request.task_id, answer='42')))
            # answering a second time is harmless and reports that nobody waits any more
            replied.append(bus.reply(request, Answer(sender='parent', task_id=request.task_id, answer='43')))

        question = Question(sender='sub-1', recipient='parent', task_id='t1', question='meaning?')
        answers: list[Message] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(responder)
                answers.append(await bus.ask(question, timeout=5))
        [answer] = answers
        assert isinstance(answer, Answer)
        assert answer.answer == '42'
        assert answer.recipient == 'sub-1'
        assert answer.correlation_id is not None
        assert replied == [True, False]
        assert bus.stats().pending_replies == 0
        assert bus._pending == {}


@pytest.mark.anyio
async def test_ask_keeps_a_given_correlation_id_and_refuses_a_duplicate() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('parent')
        question = Question(sender='s', recipient='parent', task_id='t', question='?', correlation_id='c-1')
        errors: list[BaseException] = []

        async def second_asker() -> None:
            try:
                await bus.ask(question, timeout=5)
            except BusError as exc:
                errors.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def first_asker() -> None:
                    reply = await bus.ask(question, timeout=5)
                    assert reply.correlation_id == 'c-1'

                tg.start_soon(first_asker)
                request = await box.receive()
                assert request.correlation_id == 'c-1'
                await second_asker()
                assert bus.reply(request, Answer(sender='parent', task_id='t', answer='!'))
        assert len(errors) == 1
        assert 'already waiting' in str(errors[0])
        assert bus._pending == {}


@pytest.mark.anyio
async def test_reply_to_a_message_not_sent_with_ask() -> None:
    async with InMemoryMessageBus() as bus:
        assert not bus.reply(progress('x'), Answer(sender='w', task_id='t', answer='a'))
        with_id = dataclasses.replace(progress('x'), correlation_id='unknown')
        assert not bus.reply(with_id, Answer(sender='w', task_id='t', answer='a'))


@pytest.mark.anyio
async def test_ask_timeout_leaves_no_waiter() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('parent')
        with anyio.fail_after(5), pytest.raises(ReplyTimeoutError) as info:
            await bus.ask(Question(sender='s', recipient='parent', task_id='t', question='?'), timeout=0.05)
        assert isinstance(info.value, TimeoutError)
        assert info.value.timeout == 0.05
        assert bus._pending == {}
        assert bus.stats().pending_replies == 0
        # the request was delivered; answering it late is harmless
        request = box.receive_nowait()
        assert request is not None
        assert request.correlation_id == info.value.correlation_id
        assert not bus.reply(request, Answer(sender='parent', task_id='t', answer='too late'))


@pytest.mark.anyio
async def test_cancelled_ask_leaves_no_waiter() -> None:
    async with InMemoryMessageBus() as bus:
        bus.open_mailbox('parent')
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def asker() -> None:
                    await bus.ask(Question(sender='s', recipient='parent', task_id='t', question='?'), timeout=60)

                tg.start_soon(asker)
                await anyio.wait_all_tasks_blocked()
                assert len(bus._pending) == 1
                tg.cancel_scope.cancel()
        assert bus._pending == {}


@pytest.mark.anyio
async def test_ask_unknown_recipient_leaves_no_waiter() -> None:
    async with InMemoryMessageBus() as bus:
        with pytest.raises(UnknownRecipientError):
            await bus.ask(Question(sender='s', recipient='nobody', task_id='t', question='?'), timeout=1)
        assert bus._pending == {}


# --- closing --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_close_wakes_receivers_and_askers() -> None:
    bus = InMemoryMessageBus()
    box = bus.open_mailbox('reader')
    bus.open_mailbox('parent')  # gets the question; nobody answers
    sub = bus.subscribe('*')
    outcomes: list[str] = []

    async def wait_on(name: str, fn: Callable[[], Any]) -> None:
        try:
            await fn()
        except BusClosedError:
            outcomes.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_on, 'mailbox', box.receive)
            tg.start_soon(wait_on, 'subscription', sub.receive)
            tg.start_soon(
                wait_on,
                'ask',
                lambda: bus.ask(Question(sender='s', recipient='parent', task_id='t', question='?'), timeout=60),
            )
            await anyio.wait_all_tasks_blocked()
            assert outcomes == []
            await bus.aclose()
    assert sorted(outcomes) == ['ask', 'mailbox', 'subscription']
    assert bus.closed
    assert box.closed
    assert sub.closed
    assert bus._pending == {}


@pytest.mark.anyio
async def test_close_lets_readers_drain_first() -> None:
    bus = InMemoryMessageBus()
    box = bus.open_mailbox('worker')
    bus.send(progress('queued'))
    bus.close()
    got = await box.receive()
    assert isinstance(got, Progress)
    assert got.text == 'queued'
    with pytest.raises(BusClosedError):
        await box.receive()


@pytest.mark.anyio
async def test_everything_fails_after_close_and_close_is_idempotent() -> None:
    async with InMemoryMessageBus() as bus:
        bus.open_mailbox('worker')
    assert bus.closed
    bus.close()
    await bus.aclose()
    with pytest.raises(BusClosedError):
        bus.send(progress('x'))
    with pytest.raises(BusClosedError):
        bus.publish(progress('x', topic='a'))
    with pytest.raises(BusClosedError):
        bus.open_mailbox('other')
    with pytest.raises(BusClosedError):
        bus.subscribe('a')
    with pytest.raises(BusClosedError):
        await bus.ask(Question(sender='s', recipient='worker', task_id='t', question='?'), timeout=1)
    with pytest.raises(BusClosedError):
        bus.reply(progress('x'), progress('y'))
    with pytest.raises(BusClosedError):
        async with bus:
            pass
    assert issubclass(BusClosedError, SubagentsError)


@pytest.mark.anyio
async def test_async_iteration_ends_on_close() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        texts: list[str] = []

        async def reader() -> None:
            async for message in box:
                assert isinstance(message, Progress)
                texts.append(message.text)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                for i in range(3):
                    bus.send(progress(str(i)))
                await anyio.wait_all_tasks_blocked()
                bus.send(progress('last'))
                box.close()
        assert texts == ['0', '1', '2', 'last']


@pytest.mark.anyio
async def test_async_iteration_ends_when_the_bus_closes() -> None:
    bus = InMemoryMessageBus()
    sub = bus.subscribe('a')
    seen: list[Message] = []

    async def reader() -> None:
        seen.extend([m async for m in sub])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            bus.publish(progress('x', topic='a'))
            await anyio.wait_all_tasks_blocked()
            bus.close()
    assert len(seen) == 1


# --- other threads --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_threadsafe_from_a_real_thread() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        thread, _, errors = run_in_thread(lambda: bus.send_threadsafe(progress('from a thread')))
        with anyio.fail_after(5):
            got = await box.receive()
            await anyio.to_thread.run_sync(thread.join)
        assert errors == []
        assert isinstance(got, Progress)
        assert got.text == 'from a thread'


@pytest.mark.anyio
async def test_threadsafe_calls_report_errors_and_results() -> None:
    async with InMemoryMessageBus() as bus:
        sub = bus.subscribe('a')

        def work() -> int:
            with pytest.raises(UnknownRecipientError):
                bus.send_threadsafe(progress('x', to='nobody'))
            return bus.publish_threadsafe(progress('y', topic='a'))

        thread, results, errors = run_in_thread(work)
        with anyio.fail_after(5):
            got = await sub.receive()
            await anyio.to_thread.run_sync(thread.join)
        assert errors == []
        assert results == [1]
        assert isinstance(got, Progress)


@pytest.mark.anyio
async def test_reply_threadsafe_answers_an_ask() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('parent')
        answers: list[Message] = []
        threads: list[tuple[threading.Thread, list[Any], list[BaseException]]] = []

        async def asker() -> None:
            question = Question(sender='sub', recipient='parent', task_id='t', question='?')
            answers.append(await bus.ask(question, timeout=5))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(asker)
                request = await box.receive()
                # a web handler thread answers while the loop keeps waiting
                threads.append(
                    run_in_thread(
                        lambda: bus.reply_threadsafe(request, Answer(sender='parent', task_id='t', answer='yes'))
                    )
                )
            [(thread, results, errors)] = threads
            await anyio.to_thread.run_sync(thread.join)
        assert errors == []
        assert results == [True]
        [answer] = answers
        assert isinstance(answer, Answer)
        assert answer.answer == 'yes'


@pytest.mark.anyio
async def test_threadsafe_calls_on_the_loop_thread_run_directly() -> None:
    async with InMemoryMessageBus() as bus:
        box = bus.open_mailbox('worker')
        sub = bus.subscribe('a')
        bus.send_threadsafe(progress('direct'))
        assert box.queued == 1
        assert bus.publish_threadsafe(progress('direct', topic='a')) == 1
        assert sub.queued == 1
        assert not bus.reply_threadsafe(progress('x'), progress('y'))


def test_threadsafe_before_the_bus_knows_its_loop() -> None:
    bus = InMemoryMessageBus()
    with pytest.raises(BusError, match='not been used inside an event loop'):
        bus.send_threadsafe(progress('x'))
    with pytest.raises(BusError, match='not been used inside an event loop'):
        bus.publish_threadsafe(progress('x', topic='a'))
    with pytest.raises(BusError, match='not been used inside an event loop'):
        bus.reply_threadsafe(progress('x'), progress('y'))


def test_waiting_receive_binds_the_loop(anyio_backend: str) -> None:
    # the mailbox is opened outside any loop; only the waiting receive runs in it
    bus = InMemoryMessageBus()
    box = bus.open_mailbox('worker')
    bus.send(progress('sent before any loop'))
    assert bus._token is None
    with pytest.raises(BusError):
        bus.send_threadsafe(progress('x'))

    async def sender_thread() -> None:
        await anyio.wait_all_tasks_blocked()
        thread, _, errors = run_in_thread(lambda: bus.send_threadsafe(progress('hi')))
        await anyio.to_thread.run_sync(thread.join)
        assert errors == []

    async def main() -> list[Message]:
        got = [await box.receive()]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender_thread)
                got.append(await box.receive())
        return got

    got = anyio.run(main, backend=anyio_backend)
    assert [m.text for m in got if isinstance(m, Progress)] == ['sent before any loop', 'hi']


def test_publishing_in_the_loop_binds_it(anyio_backend: str) -> None:
    bus = InMemoryMessageBus()
    sub = bus.subscribe('a')  # outside any loop: nothing to bind yet

    async def main() -> int:
        assert bus.publish(progress('in the loop', topic='a')) == 1
        thread, results, errors = run_in_thread(lambda: bus.publish_threadsafe(progress('thread', topic='a')))
        await anyio.to_thread.run_sync(thread.join)
        assert errors == []
        return results[0]

    assert anyio.run(main, backend=anyio_backend) == 1
    assert sub.queued == 2


def test_threadsafe_after_the_loop_finished(anyio_backend: str) -> None:
    bus = InMemoryMessageBus()

    async def use() -> None:
        bus.open_mailbox('worker')

    anyio.run(use, backend=anyio_backend)
    thread, _, errors = run_in_thread(lambda: bus.send_threadsafe(progress('x')))
    thread.join(5)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], BusClosedError)
