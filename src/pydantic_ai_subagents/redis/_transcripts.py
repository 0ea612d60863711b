"""Conversations of finished tasks kept in Redis: what a follow-up task, in any process of the namespace, starts from.

The rules it keeps:

* **Kept with the record, gone with it.** A transcript is a field (`transcript`) of its task's hash
  (`{namespace}:task:{id}`), so it expires with the record (`retention_seconds`) and is deleted with it when the
  oldest finished tasks are trimmed (`max_retained`): it never outlives the record, and nothing else needs cleaning.
  It is never written to a hash Redis no longer holds: a transcript for a task already dropped is dropped too.
* **Pydantic AI's own format.** Messages are stored as the JSON of `ModelMessagesTypeAdapter`, and read back with it.
* **Bounded.** A transcript larger than the store's `max_transcript_bytes` is not kept; its size is
  (`transcript_over`), so a follow-up is refused with the reason rather than started without its history.
* **Never half.** Only a task's owner writes its transcript (a worker sends it to the owner with the task's end),
  in the same script as the terminal record. A reader that finds the record still live in Redis (the owner's write
  is on its way) waits for it, for a bounded time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final, cast

import anyio
from pydantic import ValidationError
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from .._errors import TaskNotContinuableError

__all__ = ('KEEP_SCRIPT', 'EncodedTranscript', 'encode', 'load')

_POLL: Final = 0.005
"""Seconds between looks while the owner's write of a finished record is on its way."""

# KEYS: record hash. ARGV: the transcript's JSON ('' when over the cap), its size in bytes.
KEEP_SCRIPT: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'transcript')
  redis.call('HSET', KEYS[1], 'transcript_over', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'transcript_over')
  redis.call('HSET', KEYS[1], 'transcript', ARGV[1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class EncodedTranscript:
    """A transcript ready for Redis."""

    data: bytes
    """Its JSON; empty when it is over the cap (and is not kept)."""
    size: int
    """Its size in bytes, kept or not."""

    @property
    def args(self) -> list[bytes | int]:
        """The two script arguments: the JSON (or nothing) and the size."""
        return [self.data, self.size]


def encode(messages: list[ModelMessage], max_bytes: int) -> EncodedTranscript:
    """`messages` as Pydantic AI's JSON, or only their size when it exceeds `max_bytes`."""
    data = ModelMessagesTypeAdapter.dump_json(messages)
    if len(data) > max_bytes:
        return EncodedTranscript(data=b'', size=len(data))
    return EncodedTranscript(data=data, size=len(data))


async def load(client: aioredis.Redis, key: str, task_id: str, *, wait: float) -> list[ModelMessage] | None:
    """The kept transcript of the task whose hash is `key`; `None` when Redis holds none for it.

    A record that Redis still holds as live is being written as finished by its owner: looked at again for up to
    `wait` seconds.

    Raises:
        TaskNotContinuableError: the transcript was over the cap, or does not load.
    """
    deadline = time.monotonic() + wait
    while True:
        found = cast(
            'list[bytes | None]',
            await client.hmget(key, ['transcript', 'transcript_over', 'terminal']),  # pyright: ignore[reportUnknownMemberType]
        )
        raw, over, terminal = found
        if raw is not None:
            try:
                return ModelMessagesTypeAdapter.validate_json(raw)
            except ValidationError:
                raise TaskNotContinuableError(task_id, 'its kept conversation does not load') from None
        if over is not None:
            raise TaskNotContinuableError(
                task_id, f'its conversation ({int(over)} bytes) was larger than the store keeps, and was not kept'
            )
        if terminal is None or terminal == b'1' or time.monotonic() >= deadline:
            return None
        await anyio.sleep(_POLL)
