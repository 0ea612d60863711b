"""What a [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus] counts.

Each counter is owned by the collaborator that does the counted thing (the outbox, the receiver, the participants
set); the bus only gathers them into one immutable snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._bus import BusStats

__all__ = ('RedisBusStats',)


@dataclass(frozen=True, kw_only=True)
class RedisBusStats(BusStats):
    """The counters of a [`RedisMessageBus`][pydantic_ai_subagents.redis.RedisMessageBus].

    The inherited counters are about this process: `delivered` counts messages put into its own mailboxes and
    subscriptions (whether they came from this process or through Redis), `mailboxes` and `subscriptions` are
    the ones open here.
    """

    written: int = 0
    """Messages written to Redis (mailbox appends, publishes and replies)."""
    received: int = 0
    """Messages read from Redis and decoded."""
    undecodable: int = 0
    """Messages read from Redis and dropped because they could not be decoded (unknown type, bad fields)."""
    local_only: int = 0
    """Published messages of an unregistered class: delivered in this process only."""
    unpublished: int = 0
    """Published messages that reached this process only: the outbox was full (Redis slow or gone)."""
    refused: int = 0
    """Messages from Redis refused by a full local inbox with the `'error'` policy (nobody to raise to)."""
    outbox: int = 0
    """Operations waiting in the local outbox to be written to Redis."""
    write_errors: int = 0
    """Failed attempts to write a batch to Redis (the batch is retried)."""
    known_participants: int = 0
    """Participants with an open mailbox somewhere, as last seen by this process."""
