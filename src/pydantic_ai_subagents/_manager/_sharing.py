"""Several processes, one task space: what a manager does for tasks owned by other processes sharing its store.

Only a task's owner writes its record. A cancel or an answer for another process's task is sent to its owner's
mailbox; task events carry their record, so this process's copy is current before its own listeners hear of the
change. A survivor fails the live tasks of an owner whose lease ran out, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc

from .._bus import CancelRequest, Message, MessageBus
from .._errors import SubagentsError, UnknownRecipientError
from .._events import TaskEventMessage
from .._state import SharedTaskStore, TaskRecord
from ._settle import Settler

__all__ = ('Sharing',)

logger = logging.getLogger('pydantic_ai_subagents')

REFRESH_EVERY_BEATS = 5
"""How often (in heartbeats of a shared store) a manager reads the other processes' live tasks again."""


class Sharing:
    """This manager's side of a shared store."""

    def __init__(
        self,
        *,
        shared: SharedTaskStore | None,
        settler: Settler,
        bus: Callable[[], MessageBus],
        participant: str,
        on_remote_change: Callable[[TaskRecord], None],
    ) -> None:
        self.shared = shared
        self.settler = settler
        self._bus = bus
        self.participant = participant
        self._on_remote_change = on_remote_change
        self.requests: dict[str, str] = {}
        """Cancel requests sent to other owners, by task id, until their event says the request was recorded."""
        self.tg: anyio.abc.TaskGroup | None = None

    def forget(self, task_id: str) -> None:
        """The task's record is gone (retention)."""
        self.requests.pop(task_id, None)

    def owner_of(self, record: TaskRecord | None) -> str | None:
        """The manager in another process that runs this live task, if it is one of those."""
        if self.shared is None or record is None or record.is_terminal or record.owner is None:
            return None
        if record.owner == self.participant or record.id in self.settler.runtimes:
            return None
        return record.owner

    def send(self, message: Message) -> bool:
        """Send to a manager or worker in another process; `False` when it is known to be gone."""
        bus = self._bus()
        try:
            bus.send(message)
        except UnknownRecipientError:
            # Maybe only not yet in this process's copy of the participants (it started a moment ago): wait for it.
            if self.tg is None:
                return False
            self.tg.start_soon(self._send_when_known, bus, message)
        except SubagentsError:
            return False
        return True

    def send_to_owner(self, message: Message) -> bool:
        """Send a cancel request or an answer to the owner of another process's task."""
        if not self.send(message):
            return False
        if isinstance(message, CancelRequest):
            # Until the owner's event says so, this process remembers the request, so a repeat is refused here too.
            self.requests[message.task_id] = message.kind
        return True

    async def _send_when_known(self, bus: MessageBus, message: Message) -> None:
        try:
            await bus.wait_for_participant(message.recipient or '', timeout=5.0)
            bus.send(message)
        except (TimeoutError, SubagentsError) as exc:
            # Its process is gone: the lease watch (orphan sweep, worker watch) settles the task.
            task_id: Any = getattr(message, 'task_id', '?')
            logger.warning('could not deliver a %s for task %s: %s', type(message).__name__, task_id, exc)

    def apply(self, record: TaskRecord) -> None:
        """Another process changed one of its tasks: update this process's copy and wake its waiters."""
        assert self.shared is not None
        self.shared.apply(record)
        self.changed(record)

    def changed(self, record: TaskRecord) -> None:
        """A record of another process changed in this process's copy."""
        if record.is_terminal:
            self.requests.pop(record.id, None)
        self._on_remote_change(record)

    async def serve_events(self, subscription: Any) -> None:
        """Keep this process's copy of the shared store current with the tasks of other processes."""
        async for message in subscription:
            if (
                isinstance(message, TaskEventMessage)
                and message.record is not None
                and message.sender != self.participant
            ):
                self.apply(message.record)

    async def sweep_orphans(self, shared: SharedTaskStore) -> None:
        """Fail the live tasks of managers whose process died (their lease ran out).

        Every few beats, also read the other processes' live tasks again, in case an event was lost on the way.
        """
        beats = 0
        while True:
            beats += 1
            if beats % REFRESH_EVERY_BEATS == 0:
                try:
                    for record in await shared.refresh():
                        self.changed(record)
                except Exception:
                    logger.exception('reading the tasks of other processes again failed')
            try:
                orphans = await shared.orphans()
            except Exception:
                logger.exception('looking for orphaned tasks failed')
                orphans = []
            for record in orphans:
                self.settler.fail_orphan(
                    record, f'the process running it stopped (the lease of {record.owner} ran out)'
                )
            await anyio.sleep(shared.heartbeat_interval)
