"""Workload 6, the message bus: messages per second against a raw anyio memory object stream (the floor).

Three patterns, each point to point (`send` / mailbox `receive`) and pub/sub with one subscriber (`publish` /
subscription `receive`); the floor uses `send_nowait` / `receive` on a memory object stream with the same buffer:

- ping: one task sends a message then receives it (the reader never waits);
- burst: send 500, then receive 500;
- handoff: a reader task waits in `receive`, the writer sends one message and yields (a wake-up per message).

The same pre-built message is sent every time, so message construction is not counted (it is reported apart).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import anyio.lowlevel

from _harness import VARIANTS, Metric, Settings, Variant, WorkloadResult, alternate, noise_note, ratio, spread
from pydantic_ai_subagents import InMemoryMessageBus, Progress

GOAL = 2.0
BURST = 500
BUFFER = 1024

Endpoint = tuple[Callable[[Progress], object], Callable[[], Awaitable[object]], Callable[[], None]]


def _endpoint(variant: Variant, kind: str) -> Endpoint:
    """(send, receive, close) for one channel."""
    if variant == 'floor':
        tx, rx = anyio.create_memory_object_stream[Progress](BUFFER)

        def close() -> None:
            tx.close()
            rx.close()

        return tx.send_nowait, rx.receive, close
    bus = InMemoryMessageBus()
    if kind == 'p2p':
        inbox = bus.open_mailbox('reader', max_buffer=BUFFER)
        return bus.send, inbox.receive, bus.close
    sub = bus.subscribe('progress', max_buffer=BUFFER)
    return bus.publish, sub.receive, bus.close


def _message(kind: str) -> Progress:
    if kind == 'p2p':
        return Progress(sender='writer', recipient='reader', task_id='t1', text='step done')
    return Progress(sender='writer', topic='progress', task_id='t1', text='step done')


async def ping(variant: Variant, kind: str, n: int) -> float:
    send, receive, close = _endpoint(variant, kind)
    message = _message(kind)
    started = time.perf_counter()
    for _ in range(n):
        send(message)
        await receive()
    elapsed = time.perf_counter() - started
    close()
    return n / elapsed


async def burst(variant: Variant, kind: str, n: int) -> float:
    send, receive, close = _endpoint(variant, kind)
    message = _message(kind)
    rounds = max(1, n // BURST)
    started = time.perf_counter()
    for _ in range(rounds):
        for _ in range(BURST):
            send(message)
        for _ in range(BURST):
            await receive()
    elapsed = time.perf_counter() - started
    close()
    return rounds * BURST / elapsed


async def handoff(variant: Variant, kind: str, n: int) -> float:
    send, receive, close = _endpoint(variant, kind)
    message = _message(kind)
    done = anyio.Event()

    async def reader() -> None:
        for _ in range(n):
            await receive()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.lowlevel.checkpoint()
        started = time.perf_counter()
        for _ in range(n):
            send(message)
            await anyio.lowlevel.checkpoint()
        await done.wait()
        elapsed = time.perf_counter() - started
    close()
    return n / elapsed


def _call(
    pattern: Callable[[Variant, str, int], Awaitable[float]], variant: Variant, *, kind: str, n: int
) -> Awaitable[float]:
    return pattern(variant, kind, n)


PATTERNS: dict[str, Callable[[Variant, str, int], Awaitable[float]]] = {
    'ping': ping,
    'burst': burst,
    'handoff': handoff,
}


def run(settings: Settings) -> WorkloadResult:
    n = settings.bus_messages
    reps = settings.reps
    result = WorkloadResult(
        'bus', 'Message bus throughput vs anyio memory object stream', params={'messages': n, 'reps': reps}
    )

    async def main() -> dict[str, dict[Variant, list[float]]]:
        out: dict[str, dict[Variant, list[float]]] = {}
        for kind in ('p2p', 'pubsub'):
            for name, pattern in PATTERNS.items():
                for variant in VARIANTS if settings.warmup else ():
                    await pattern(variant, kind, min(n, 1000))

                out[f'{kind} {name}'] = await alternate(reps, VARIANTS, partial(_call, pattern, kind=kind, n=n))
        return out

    data = anyio.run(main)
    for label, samples in data.items():
        ours = spread([s / 1e3 for s in samples['ours']])
        floor = spread([s / 1e3 for s in samples['floor']])
        slowdown = ratio(floor['median'], ours['median'])
        result.add(
            Metric(
                f'{label}',
                'k msg/s',
                ours,
                floor,
                None if slowdown is None else 1 / slowdown,
                f'>= 1/{GOAL:g} of floor',
                None if slowdown is None else slowdown <= GOAL,
                noise_note(ours, floor, higher_is_better=True),
            )
        )
    started = time.perf_counter()
    for _ in range(10_000):
        Progress(sender='writer', recipient='reader', task_id='t1', text='step done')
    per_message = (time.perf_counter() - started) / 10_000
    result.add(Metric('building one Progress message', 'us', per_message * 1e6, note='uuid4 id + timestamp'))
    result.notes.append('bus ratio column is ours/floor throughput: 0.5x or more meets the "within 2x" goal')
    return result
