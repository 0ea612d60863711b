"""Several processes, one task space, on a Redis server: a message bus, a task store, and worker processes.

Needs the `redis` extra: `pip install 'pydantic-ai-subagents[redis]'`.

```python
from pydantic_ai_subagents.redis import redis_task_manager

async with redis_task_manager('redis://localhost:6379/0', namespace='myapp') as manager:
    ...  # tasks of every process on this namespace: listed, checked, answered and cancelled from any of them
```

[`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] and
[`RedisTaskStore`][pydantic_ai_subagents.redis.RedisTaskStore] are the two backends;
[`Worker`][pydantic_ai_subagents.redis.Worker] (or `python -m pydantic_ai_subagents worker`) runs the tasks of
subagents configured with a `worker_queue`.
"""

from __future__ import annotations

from ._bus import RedisMessageBus
from ._codec import MessageCodecError, register_message_type
from ._setup import redis_task_manager
from ._stats import RedisBusStats
from ._store import RedisTaskStore
from ._worker import Worker

__all__ = (
    'MessageCodecError',
    'RedisBusStats',
    'RedisMessageBus',
    'RedisTaskStore',
    'Worker',
    'redis_task_manager',
    'register_message_type',
)
