"""Steering: a message from the parent (its model or the application) into a task's live run.

Rules it keeps:

- A message goes into the run itself (Pydantic AI's `enqueue`): the subagent reads it with its next model request,
  or, if it was about to finish, gets one more turn for it. A message sent before the run exists is held and goes in
  as the run starts.
- A message is taken or refused, never lost in between: a finished task, a task being cancelled and a run that has
  just ended refuse it. Each message taken is recorded on the task (`messages`).
- With a shared store, a message for a live task of another process goes to its owner (`SteerMessage`), which
  sends it into the run (or refuses it) and records it; without one, another process's task refuses it.
"""

from __future__ import annotations

from .._remote import SteerMessage
from .._state import TaskRecord
from ._settle import Settler
from ._sharing import Sharing

__all__ = ('STEER_PREFIX', 'Steering')

STEER_PREFIX = 'Message from the agent that gave you this task: '
"""How a steering message is introduced to the subagent, so it can tell it from its own task's text."""


class Steering:
    """Sends the parent's messages into this manager's running tasks."""

    def __init__(self, *, settler: Settler, sharing: Sharing) -> None:
        self.settler = settler
        self.sharing = sharing

    def refusal(self, record: TaskRecord) -> str | None:
        """Why a message to this task would be refused, in a few words; `None` when it can be sent."""
        if record.is_terminal:
            return f'it has already finished ({record.status.value})'
        if record.cancel is not None:
            return f'it is being cancelled ({record.cancel.kind})'
        if record.id not in self.settler.runtimes and self.sharing.owner_of(record) is None:
            return 'it runs in another process, which only its own manager can reach'
        return None

    def send(self, task_id: str, text: str, *, forward: bool = True) -> bool:
        """Put `text` into the task's run (or hold it until the run starts); whether it was taken.

        A task of another process gets it through its owner (`forward`): taken here once sent, the owner may still
        refuse it (the task ended meanwhile).
        """
        store = self.settler.store
        record = store.get(task_id)
        if record is None or self.refusal(record) is not None:
            return False
        owner = self.sharing.owner_of(record)
        if owner is not None:
            participant = self.sharing.participant
            steer = SteerMessage(sender=participant, recipient=owner, task_id=task_id, text=text)
            return forward and self.sharing.send_to_owner(steer)
        runtime = self.settler.runtimes[task_id]
        if not runtime.job.request_message(STEER_PREFIX + text):
            return False
        store.update(task_id, messages=(*record.messages, text))
        return True
