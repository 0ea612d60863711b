"""A message bus that several processes share through a Redis server.

Needs the `redis` extra: `pip install 'pydantic-ai-subagents[redis]'`.

```python
from pydantic_ai_subagents.redis import RedisMessageBus

async with RedisMessageBus('redis://localhost:6379/0', namespace='myapp') as bus:
    with bus.open_mailbox('worker') as inbox:
        message = await inbox.receive()  # sent from this process or any other on the same namespace
```

See [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] for the keys it uses and the rules that
differ from the in-memory bus.
"""

from __future__ import annotations

from ._bus import RedisBusStats, RedisMessageBus
from ._codec import MessageCodecError, register_message_type
from ._connect import redis_task_manager
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
