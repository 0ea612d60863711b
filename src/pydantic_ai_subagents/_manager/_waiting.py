"""Waiting for tasks: until all (or any) of them finished or ask a question, or a timeout.

Rules it keeps:

- A wait looks again only at the tasks that report a change, so a wait on many tasks costs O(changes). The wait is
  itself the one watcher of all its tasks (no object per task), each task holds it at most once at a time, and a
  watch not used is taken back when the wait ends.
- A task that finishes while waited on gives back its runtime and leaves its final snapshot with the wait, so
  retention dropping the record meanwhile changes nothing for the waiter. The wait keeps it packed
  (`pack_record`) when it waits on many, and keeps no snapshot from its start: a wait on many tasks holds no record
  objects of its own. A wait on a few (a sync task's, on its one task) keeps them as they are: a record packed only to
  be unpacked at once is work for nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

import anyio

from .._errors import TaskNotFoundError
from .._state import TERMINAL, PackedRecord, TaskRecord, TaskStatus, pack_record, unpack_record
from ._runtime import TaskRuntime, Watcher
from ._settle import Settler

__all__ = ('WaitMode', 'Waiting')

WaitMode = Literal['all', 'any']
"""Wait until all the given tasks, or any one of them, finished or asked a question."""

PACKED_FROM = 16
"""A wait on more tasks than this keeps their final records packed; a smaller one keeps them as they are."""


class Waiting:
    """The waits on this manager's tasks, and on other processes' tasks in a shared store."""

    def __init__(self, *, settler: Settler, shared: bool) -> None:
        self.settler = settler
        self.shared = shared
        self.remote: dict[str, list[Watcher]] = {}
        """Watches of other processes' tasks, woken when this process's copy of them changes."""

    def remote_changed(self, record: TaskRecord) -> None:
        """A task of another process changed: tell its watchers."""
        for watcher in self.remote.pop(record.id, ()):
            watcher.changed(record.id)

    async def wait(
        self,
        task_ids: Sequence[str],
        *,
        mode: WaitMode = 'all',
        until_question: bool = True,
        timeout: float | None = None,
        direct: bool = False,
    ) -> list[TaskRecord]:
        """Wait until all (or any) of the tasks are finished or asking a question; return their snapshots.

        Raises:
            TaskNotFoundError: an id is unknown.
        """
        store = self.settler.store

        def settled(record: TaskRecord) -> bool:
            return record.status in TERMINAL or (until_question and record.status is TaskStatus.WAITING_FOR_ANSWER)

        runtimes = self.settler.runtimes
        held: dict[str, TaskRuntime] = {task_id: runtimes[task_id] for task_id in task_ids if task_id in runtimes}
        finals: dict[str, TaskRecord | PackedRecord] = {}
        pack = len(task_ids) > PACKED_FROM

        def final(task_id: str) -> TaskRecord | None:
            if (kept := finals.get(task_id)) is not None:
                return unpack_record(kept) if type(kept) is tuple else kept  # pyright: ignore[reportReturnType]
            runtime = held.get(task_id)
            return None if runtime is None else runtime.final

        def snapshot() -> list[TaskRecord]:
            records: list[TaskRecord] = []
            for task_id in task_ids:
                record = store.get(task_id) or final(task_id)
                if record is None:
                    raise TaskNotFoundError(task_id)
                records.append(record)
            return records

        records = snapshot()
        direct_runtimes = list(held.values()) if direct else []
        unsettled = {record.id for record in records if not settled(record)}
        if mode == 'all':
            wanted = len(unsettled)
        else:
            wanted = 1 if records and len(unsettled) == len({record.id for record in records}) else 0
        del records  # the answer is a snapshot taken at the end
        waiter = _Waiter()

        def watch(task_id: str) -> None:
            if (runtime := held.get(task_id)) is not None:
                runtime.watch(waiter)
            elif self.shared:
                self.remote.setdefault(task_id, []).append(waiter)

        for runtime in direct_runtimes:
            runtime.direct_waiters += 1
        try:
            for task_id in unsettled:
                watch(task_id)

            async def until_wanted() -> None:
                nonlocal wanted
                while wanted > 0:
                    await waiter.event.wait()
                    changed, waiter.changes = waiter.changes, []
                    for task_id in changed:
                        if task_id not in unsettled:
                            continue
                        record = store.get(task_id) or final(task_id)
                        if record is None or settled(record):
                            unsettled.discard(task_id)
                            wanted -= 1
                            if record is not None and record.status in TERMINAL:
                                finals[task_id] = pack_record(record) if pack else record
                                held.pop(task_id, None)
                        else:
                            watch(task_id)
                    if wanted > 0:
                        waiter.event = anyio.Event()

            if wanted > 0:
                if timeout is None:
                    await until_wanted()  # no cancel scope to make, enter and leave
                else:
                    with anyio.move_on_after(timeout):
                        await until_wanted()
        finally:
            for runtime in direct_runtimes:
                runtime.direct_waiters -= 1
            for task_id in unsettled:
                if (runtime := held.get(task_id)) is not None:
                    runtime.unwatch(waiter)
                else:
                    self._forget_remote(task_id, waiter)
        return snapshot()

    def _forget_remote(self, task_id: str, watcher: Watcher) -> None:
        watchers = self.remote.get(task_id)
        if watchers is not None:
            with contextlib.suppress(ValueError):
                watchers.remove(watcher)
            if not watchers:
                del self.remote[task_id]


class _Waiter:
    """One `wait` call, the watcher of every task it waits on: each change adds the task's id and wakes it."""

    __slots__ = ('changes', 'event')

    def __init__(self) -> None:
        self.changes: list[str] = []
        self.event = anyio.Event()

    def changed(self, task_id: str) -> None:
        self.changes.append(task_id)
        self.event.set()
