"""Finished tasks' conversations: kept in this process (`Transcripts`), and by a store for other processes.

`TranscriptStore` is a store that keeps completed tasks' conversations for follow-ups in other processes (the
Redis store does).

Rules it keeps:

- The settle point hands a completed task's conversation to the store in the same step as its terminal record, so a
  store can write both together; the store bounds what it keeps and drops it with the record.
- Reading it back may wait on I/O: a follow-up reads it first, then checks the record again and creates the task
  with no await between (see `_continuing`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

__all__ = ('HOT_TRANSCRIPTS', 'TranscriptStore', 'Transcripts')

HOT_TRANSCRIPTS = 256
"""How many of the newest kept conversations stay as message objects."""


class Transcripts:
    """The conversations of finished tasks kept in this process, by task id, in the order they were kept.

    The newest `hot` stay as Pydantic AI's message objects; older ones are kept as their JSON, in Pydantic AI's own
    format (what a Redis store keeps), which the garbage collector does not walk. Kept as objects, 100,000 of them
    made every full pass of the collector walk nearly a million objects more, and a fan-out of that size 1.2 times
    slower; a run of a few dozen tasks never pays for the JSON. A conversation that does not serialise stays as
    objects. One read from JSON gives new objects each time, equal to what was kept.
    """

    __slots__ = ('_cold', '_hot', 'hot')

    def __init__(self, hot: int = HOT_TRANSCRIPTS) -> None:
        self.hot = hot
        self._hot: dict[str, list[ModelMessage]] = {}
        self._cold: dict[str, bytes | list[ModelMessage]] = {}

    def __len__(self) -> int:
        return len(self._hot) + len(self._cold)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._hot or task_id in self._cold

    def keep(self, task_id: str, messages: list[ModelMessage]) -> None:
        """Keep the conversation of `task_id` (a task's conversation is kept once, as its run ends)."""
        self._cold.pop(task_id, None)
        self._hot[task_id] = messages
        if len(self._hot) > self.hot:
            oldest = next(iter(self._hot))
            kept = self._hot.pop(oldest)
            try:
                self._cold[oldest] = ModelMessagesTypeAdapter.dump_json(kept)
            except Exception:  # content that Pydantic AI's format cannot hold
                self._cold[oldest] = kept

    def get(self, task_id: str) -> list[ModelMessage] | None:
        """The kept conversation of `task_id`, or `None`."""
        found = self._hot.get(task_id)
        if found is not None:
            return found
        cold = self._cold.get(task_id)
        if isinstance(cold, bytes):
            return ModelMessagesTypeAdapter.validate_json(cold)
        return cold

    def pop(self, task_id: str) -> None:
        """Forget the conversation of `task_id`, if one is kept."""
        if self._hot.pop(task_id, None) is None:
            self._cold.pop(task_id, None)


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
