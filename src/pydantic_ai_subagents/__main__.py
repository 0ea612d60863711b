"""Command line: `python -m pydantic_ai_subagents worker ...` runs a worker process.

```bash
python -m pydantic_ai_subagents worker --redis redis://localhost:6379/0 --namespace myapp \
    --subagents myapp.agents:SUBAGENTS --queue default --concurrency 4
```

`--subagents` names a `module:attribute` holding a [`SubAgentConfig`][pydantic_ai_subagents.SubAgentConfig], a
sequence of them, or a function without arguments that returns either. SIGTERM or SIGINT stops the worker
gracefully (see [`Worker`][pydantic_ai_subagents.redis.Worker]); a second one stops it at once.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._config import SubAgentConfig

__all__ = ('load_subagents', 'main')


def load_subagents(target: str) -> list[SubAgentConfig]:
    """The subagent configs named by `module:attribute`.

    Raises:
        ValueError: The target is malformed, cannot be imported, or holds no configs.
    """
    module_name, _, attribute = target.partition(':')
    if not module_name or not attribute:
        raise ValueError(f'--subagents takes module:attribute, got {target!r}')
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f'cannot import {module_name!r}: {exc}') from exc
    for part in attribute.split('.'):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValueError(f'{module_name!r} has no attribute {attribute!r}') from None
    if callable(value) and not isinstance(value, SubAgentConfig):
        value = value()
    if isinstance(value, SubAgentConfig):
        configs: list[Any] = [value]
    else:
        try:
            configs = list(value)
        except TypeError:
            configs = []
    if not configs or not all(isinstance(c, SubAgentConfig) for c in configs):
        raise ValueError(
            f'{target} must be a SubAgentConfig, a non-empty sequence of them, or a function returning one'
        )
    return configs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m pydantic_ai_subagents', description='pydantic-ai-subagents')
    commands = parser.add_subparsers(dest='command', required=True)
    worker = commands.add_parser('worker', help='run subagent tasks taken from a Redis queue')
    worker.add_argument('--redis', default='redis://localhost:6379/0', help='Redis URL (default: %(default)s)')
    worker.add_argument('--namespace', default='subagents', help='key namespace shared with the owners')
    worker.add_argument('--subagents', required=True, help='module:attribute holding the subagent configs')
    worker.add_argument('--queue', default='default', help='the worker queue to serve (default: %(default)s)')
    worker.add_argument('--concurrency', type=int, default=4, help='tasks run at once (default: %(default)s)')
    worker.add_argument('--model', default=None, help='model for subagents whose config names none')
    worker.add_argument(
        '--drain', choices=('wait', 'cancel'), default='wait', help='what stopping does to running tasks'
    )
    worker.add_argument('--drain-timeout', type=float, default=30.0, help='seconds running tasks get to finish')
    worker.add_argument('--lease-seconds', type=float, default=10.0, help='how soon owners notice a dead worker')
    worker.add_argument('--heartbeat', type=float, default=1.0, help='seconds between lease renewals')
    worker.add_argument('--log-level', default='INFO', help='logging level (default: %(default)s)')
    return parser


async def _serve(args: argparse.Namespace, configs: Sequence[SubAgentConfig]) -> None:
    from .redis import Worker

    worker = Worker(
        configs,
        url=args.redis,
        namespace=args.namespace,
        queue=args.queue,
        concurrency=args.concurrency,
        model=args.model,
        drain=args.drain,
        drain_timeout=args.drain_timeout,
        lease_seconds=args.lease_seconds,
        heartbeat_interval=args.heartbeat,
    )
    async with anyio.create_task_group() as tg:

        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    if worker.stopping:
                        tg.cancel_scope.cancel()  # a second signal: stop now
                        return
                    logging.getLogger('pydantic_ai_subagents').info('stopping: draining %d task(s)', worker.running)
                    worker.stop()

        tg.start_soon(on_signals)
        await worker.run()
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        configs = load_subagents(args.subagents)
    except ValueError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    anyio.run(_serve, args, configs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
