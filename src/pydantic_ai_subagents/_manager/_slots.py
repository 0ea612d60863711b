"""Slots and queue: at most `max_concurrent_tasks` tasks run at each nesting level; the rest wait in order."""

from __future__ import annotations

from collections import OrderedDict

from ._runtime import TaskRuntime

__all__ = ('Slots',)


class Slots:
    """The running count and the queue of each nesting level.

    Per level, so a task waiting on its own nested tasks can never starve them.
    """

    __slots__ = ('_queued', '_running', 'limit')

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._running: dict[int, int] = {}
        self._queued: dict[int, OrderedDict[str, TaskRuntime]] = {}

    def take(self, depth: int) -> bool:
        """Take a slot of the level if one is free and nobody queues before; `False`: queue the task."""
        if self.limit is None:
            return True
        running = self._running.get(depth, 0)
        if running >= self.limit or self._queued.get(depth):
            return False
        self._running[depth] = running + 1
        return True

    def queue(self, runtime: TaskRuntime) -> None:
        """Queue a task until a slot of its level frees."""
        self._queued.setdefault(runtime.depth, OrderedDict())[runtime.id] = runtime

    def release(self, depth: int) -> TaskRuntime | None:
        """A task of the level ended: its slot goes to the level's oldest queued task (returned), else it is freed."""
        if self.limit is None:
            return None
        queue = self._queued.get(depth)
        if queue:
            _, runtime = queue.popitem(last=False)
            if not queue:
                del self._queued[depth]
            return runtime
        left = self._running.get(depth, 1) - 1
        if left > 0:
            self._running[depth] = left
        else:
            self._running.pop(depth, None)
        return None

    def unqueue(self, runtime: TaskRuntime) -> bool:
        """Take a queued task out of its queue; `False` if it is not queued (it runs, or never was queued)."""
        queue = self._queued.get(runtime.depth)
        if queue is None or queue.pop(runtime.id, None) is None:
            return False
        if not queue:
            del self._queued[runtime.depth]
        return True

    def clear(self) -> None:
        """Forget everything (the event loop the tasks ran on is gone)."""
        self._running.clear()
        self._queued.clear()
