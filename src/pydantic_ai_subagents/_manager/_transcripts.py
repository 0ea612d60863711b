"""A store that keeps completed tasks' conversations for follow-ups in other processes (the Redis store does).

Rules it keeps:

- The settle point hands a completed task's conversation to the store in the same step as its terminal record, so a
  store can write both together; the store bounds what it keeps and drops it with the record.
- Reading it back may wait on I/O: a follow-up reads it first, then checks the record again and creates the task
  with no await between (see `_continuing`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic_ai.messages import ModelMessage

__all__ = ('TranscriptStore',)


@runtime_checkable
class TranscriptStore(Protocol):
    """A task store that also keeps the conversations of completed tasks, shared with other processes."""

    def keep_transcript(self, task_id: str, messages: list[ModelMessage]) -> None:
        """Keep the conversation of the completed task `task_id` (for as long as its record is kept)."""
        ...

    async def load_transcript(self, task_id: str) -> list[ModelMessage] | None:
        """The kept conversation of `task_id`, or `None` when none is kept.

        Raises:
            TaskNotContinuableError: the store knows why it has none (it was too large to keep, it does not load).
        """
        ...
