"""One budget ledger for a tree of runs: the parent's `request_limit` bounds its children, parallel ones included.

Pydantic AI checks a run's limits against that run's own usage. A child gets its own
[`RunUsage`][pydantic_ai.usage.RunUsage] (so its budget is its own) and is rolled up into its parent's usage when it
ends, so on their own several children running at once would each see the whole of what the parent had left. A
[`Ledger`][pydantic_ai_subagents._budget.Ledger] per run closes that gap.

Rules it keeps:

- Before each model request of a task, the task *acquires* one request from every ledger above it. A ledger counts
  its run's own usage (its committed requests, and those of its finished children, rolled up) plus every request
  acquired below it by tasks still running. An acquire that would take a ledger past its limit, less the requests
  it keeps for its own run, fails with [`UsageLimitExceeded`][pydantic_ai.exceptions.UsageLimitExceeded]: the child
  ends `FAILED`, and the total of the tree never goes past the parent's limit.
- The root run (the parent the model talks to) keeps `reserve` requests for itself, so that children cannot use up
  the turns it needs to read their results and answer.
- Only requests are counted ahead; token limits are known only after a response, so a child's token limits are
  lowered to what the parent had left when it started (`bounded_limits`).
- Everything happens on one event loop: no locks, and O(depth) work per request.
"""

from __future__ import annotations

from dataclasses import fields

from pydantic_ai.exceptions import UsageLimitExceeded
from pydantic_ai.usage import RunUsage, UsageLimits

__all__ = ('PARENT_RESERVE', 'Ledger', 'bounded_limits', 'exhausted_limit')

PARENT_RESERVE = 2
"""Requests of its `request_limit` a parent run keeps from its children: one to read their results, one to answer."""


class Ledger:
    """The request budget of one run and of every task below it."""

    __slots__ = ('acquired', 'bounded', 'limit', 'live', 'parent', 'reserve', 'usage')

    def __init__(
        self, usage: RunUsage, limits: UsageLimits | None, *, parent: Ledger | None = None, reserve: int = 0
    ) -> None:
        self.usage = usage
        """The run's usage (its own requests, and those of its finished children)."""
        self.limit: int | None = None if limits is None else limits.request_limit
        self.parent = parent
        self.reserve = reserve
        self.live = 0
        """Requests acquired below this ledger by tasks that are still running."""
        self.acquired = 0
        """Requests acquired by this run's own task and every task below it (given back to the parent at the end)."""
        self.bounded: bool = parent is not None and (parent.limit is not None or parent.bounded)
        """Whether a ledger above has a limit, so this run's requests must be acquired."""

    def child(self, usage: RunUsage, limits: UsageLimits | None) -> Ledger:
        """The ledger of a task started by this run."""
        return Ledger(usage, limits, parent=self)

    def acquire(self) -> None:
        """Take one request for this ledger's run from every ledger above it.

        Raises:
            UsageLimitExceeded: a ledger above has no request left for it.
        """
        node = self.parent
        while node is not None:
            if node.limit is not None and node.usage.requests + node.live + 1 > node.limit - node.reserve:
                who = 'the parent run' if node.parent is None else 'its parent task'
                raise UsageLimitExceeded(
                    f'the request_limit of {node.limit} of {who} is used up by the tasks running under it'
                )
            node = node.parent
        node = self.parent
        while node is not None:
            node.live += 1
            node = node.parent
        self.acquired += 1

    def settle(self) -> None:
        """The run ended and its usage was rolled up into its parent's: its acquired requests are no longer live."""
        parent = self.parent
        if parent is not None:
            parent.live -= self.acquired
            parent.acquired += self.acquired
            self.acquired = 0


def bounded_limits(own: UsageLimits | None, parent: UsageLimits | None, parent_usage: RunUsage | None) -> UsageLimits:
    """The child's limits: its own (or the defaults), lowered to what the parent's limits have left."""
    limits = UsageLimits() if own is None else UsageLimits(**{f.name: getattr(own, f.name) for f in fields(own)})
    if parent is None or parent_usage is None:
        return limits
    pairs = (
        ('request_limit', 'requests'),
        ('tool_calls_limit', 'tool_calls'),
        ('input_tokens_limit', 'input_tokens'),
        ('output_tokens_limit', 'output_tokens'),
        ('total_tokens_limit', 'total_tokens'),
    )
    for limit_name, usage_name in pairs:
        parent_limit: int | None = getattr(parent, limit_name)
        if parent_limit is None:
            continue
        left = max(0, parent_limit - getattr(parent_usage, usage_name))
        own_limit: int | None = getattr(limits, limit_name)
        setattr(limits, limit_name, left if own_limit is None else min(own_limit, left))
    return limits


def exhausted_limit(limits: UsageLimits | None) -> str | None:
    """The name of a limit that is used up (0), if any: Pydantic AI reads a limit of 0 as "no limit"."""
    if limits is None:
        return None
    for name in (
        'request_limit',
        'tool_calls_limit',
        'input_tokens_limit',
        'output_tokens_limit',
        'total_tokens_limit',
    ):
        if getattr(limits, name) == 0:
            return name
    return None
