"""How a Redis task store lays its records out in Redis: the write script, batched reads, transcripts beside them.

The rules it keeps (the keys are listed in the docstring of `_store`):

* **Newest wins, the end is final.** The write script writes a record only when its revision is newer than the one
  Redis holds, and never turns a finished task into another state.
* **Retention in Redis too.** A finished record's hash expires after `retention_seconds`; past `max_retained`
  finished tasks, the oldest hashes are deleted, and the transcripts kept in them with them.
* **A completed task's transcript is written with its terminal record**, in the same script (see `_transcripts`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any, Final, cast

from pydantic import TypeAdapter, ValidationError

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'pydantic_ai_subagents.redis needs the redis package: install pydantic-ai-subagents[redis]'
    ) from exc

from .._state import TaskRecord
from ._keys import StoreKeys
from ._transcripts import KEEP_SCRIPT, EncodedTranscript

__all__ = ('RECORD', 'RedisRecords')

logger = logging.getLogger('pydantic_ai_subagents.redis')

RECORD: Final[TypeAdapter[TaskRecord]] = TypeAdapter(TaskRecord)
"""A record as JSON, and back."""
_LOAD_BATCH: Final = 500

# KEYS: record hash, tasks index, finished index.
# ARGV: id, revision, status, terminal (0/1), data, created score, now, retention ms (0: none), max retained
#       (-1: none), record key prefix, transcript JSON ('' : none, or over the cap), transcript size (0: none).
_WRITE_SCRIPT: Final = """
local cur = redis.call('HMGET', KEYS[1], 'rev', 'status', 'terminal')
if cur[1] then
  if tonumber(ARGV[2]) <= tonumber(cur[1]) then return 0 end
  if cur[3] == '1' and cur[2] ~= ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'status', ARGV[3], 'terminal', ARGV[4], 'data', ARGV[5])
redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[1])
if ARGV[4] == '1' then
  if ARGV[11] ~= '' then
    redis.call('HSET', KEYS[1], 'transcript', ARGV[11])
  elseif tonumber(ARGV[12]) > 0 then
    redis.call('HSET', KEYS[1], 'transcript_over', ARGV[12])
  end
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
  if tonumber(ARGV[8]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[8]) end
  local keep = tonumber(ARGV[9])
  if keep >= 0 then
    local extra = redis.call('ZCARD', KEYS[3]) - keep
    if extra > 0 then
      local old = redis.call('ZRANGE', KEYS[3], 0, extra - 1)
      for _, id in ipairs(old) do
        redis.call('DEL', ARGV[10] .. id)
        redis.call('ZREM', KEYS[2], id)
      end
      redis.call('ZREMRANGEBYRANK', KEYS[3], 0, extra - 1)
    end
  end
end
return 1
"""

_NO_TRANSCRIPT: Final = EncodedTranscript(data=b'', size=0)


class RedisRecords:
    """Reads and writes one namespace's records (and the transcripts kept with them) in Redis."""

    def __init__(self, keys: StoreKeys) -> None:
        self._keys = keys
        self._write: Any = None
        self._keep: Any = None

    def register(self, client: aioredis.Redis) -> None:
        """Register the scripts with `client` (done once, when the store connects)."""
        self._write = client.register_script(_WRITE_SCRIPT)  # pyright: ignore[reportUnknownMemberType]
        self._keep = client.register_script(KEEP_SCRIPT)  # pyright: ignore[reportUnknownMemberType]

    async def read(self, client: aioredis.Redis, ids: list[str]) -> AsyncGenerator[tuple[str, TaskRecord | None]]:
        """The stored records of `ids`, read in batches.

        `None` for a record Redis no longer holds; one that does not load is logged and left out.
        """
        for start in range(0, len(ids), _LOAD_BATCH):
            chunk = ids[start : start + _LOAD_BATCH]
            async with client.pipeline(transaction=False) as pipe:  # pyright: ignore[reportUnknownMemberType]
                for task_id in chunk:
                    pipe.hget(self._keys.task(task_id), 'data')  # pyright: ignore[reportUnknownMemberType]
                values = cast('list[bytes | None]', await pipe.execute())  # pyright: ignore[reportUnknownMemberType]
            for task_id, raw in zip(chunk, values, strict=True):
                if raw is None:
                    yield task_id, None
                    continue
                try:
                    record = RECORD.validate_json(raw)
                except ValidationError as exc:
                    logger.error('skipped task %s: its stored record does not load: %s', task_id, exc)
                    continue
                yield task_id, record

    async def write(
        self,
        pipe: Any,
        batch: list[TaskRecord],
        transcripts: dict[str, EncodedTranscript],
        *,
        now: float,
        retention_ms: int,
        max_retained: int,
    ) -> None:
        """Queue on `pipe` the writes of `batch`, each with its transcript; then the transcripts of other records."""
        keys = self._keys
        prefix = keys.task_prefix
        for record in batch:
            transcript = transcripts.pop(record.id, _NO_TRANSCRIPT) if record.is_terminal else _NO_TRANSCRIPT
            await self._write(
                keys=[keys.task(record.id), keys.tasks, keys.finished],
                args=[
                    record.id,
                    record.revision,
                    record.status.value,
                    1 if record.is_terminal else 0,
                    RECORD.dump_json(record),
                    record.created_at.timestamp(),
                    now,
                    retention_ms,
                    max_retained,
                    prefix,
                    *transcript.args,
                ],
                client=pipe,
            )
        for task_id, transcript in transcripts.items():
            # The terminal record left in an earlier batch: the transcript is kept only if Redis still holds the record.
            await self._keep(keys=[keys.task(task_id)], args=transcript.args, client=pipe)
