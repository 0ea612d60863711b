"""Where a bus and a store keep their data in Redis: every key and channel name, in one place.

The bus's keys and channels:

* `{namespace}:mbox:{participant}`: a Redis Stream per participant. `send` appends (`XADD`, approximately capped,
  with an idle expiry); the process where the mailbox is open reads it (`XREAD BLOCK`) into the local mailbox.
* `{namespace}:participants`: a sorted set of the mailboxes open anywhere, scored by the moment their lease runs
  out. Each process renews the leases of its own open mailboxes and removes them when they close; a process that
  dies without closing loses its entries when the lease expires.
* `{namespace}:topic:{topic}`: the pub/sub channel of a topic (`PUBLISH`). Each bus pattern-subscribes to all
  topics of its namespace once, when it starts, and filters locally, so a subscription made with `subscribe`
  receives everything published after it returns, with no subscribe round trip to wait for.
* `{namespace}:reply:{instance}`: the pub/sub channel where a bus receives the replies to its own `ask` calls.

The store's keys are listed in the docstring of `_store`, next to the script that writes them.

The rule it keeps: every name starts with the `namespace` and a colon, so two namespaces on one server never see
each other's data, and nothing outside this module spells a key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ('BusKeys', 'StoreKeys')


@dataclass(frozen=True, slots=True)
class BusKeys:
    """The keys and channels of a [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus]."""

    namespace: str

    def mailbox(self, participant: str) -> str:
        """The stream that carries the messages sent to `participant`."""
        return f'{self.namespace}:mbox:{participant}'

    def topic(self, topic: str) -> str:
        """The pub/sub channel of `topic` (`'*'` gives the pattern of every topic)."""
        return f'{self.namespace}:topic:{topic}'

    def reply(self, instance: str) -> str:
        """The pub/sub channel where the bus `instance` receives the replies to its `ask` calls."""
        return f'{self.namespace}:reply:{instance}'

    @property
    def participants(self) -> str:
        """The sorted set of the mailboxes open anywhere, scored by the moment their lease runs out."""
        return f'{self.namespace}:participants'


@dataclass(frozen=True, slots=True)
class StoreKeys:
    """The keys of a [`RedisTaskStore`][pydantic_ai_subagents.redis.RedisTaskStore]."""

    namespace: str

    def task(self, task_id: str) -> str:
        """The hash holding one task's record."""
        return f'{self.namespace}:task:{task_id}'

    @property
    def task_prefix(self) -> str:
        """What every task key starts with (the write script builds the keys of the tasks it trims)."""
        return f'{self.namespace}:task:'

    @property
    def tasks(self) -> str:
        """The sorted set of every task id, by creation time."""
        return f'{self.namespace}:tasks'

    @property
    def finished(self) -> str:
        """The sorted set of finished task ids, by finishing time."""
        return f'{self.namespace}:finished'

    def owner(self, owner: str) -> str:
        """The lease of a manager or worker: it exists while its owner lives."""
        return f'{self.namespace}:owner:{owner}'

    def marker(self, store: str) -> str:
        """A key each store keeps set: when it finds its own missing, Redis lost its data (a restart)."""
        return f'{self.namespace}:marker:{store}'

    def orphan(self, task_id: str) -> str:
        """Taken by the one process that marks an orphaned task `FAILED`."""
        return f'{self.namespace}:orphan:{task_id}'

    def queue(self, queue: str) -> str:
        """The stream of jobs for the workers serving `queue`."""
        return f'{self.namespace}:queue:{queue}'
