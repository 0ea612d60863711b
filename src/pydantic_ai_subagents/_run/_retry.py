"""Retries of a task's run after a transient model failure: a rate limit, a server error, a lost connection.

Rules it keeps:

- Only failures that a later try can cure are retried: HTTP 408, 425, 429 and 5xx from the model's provider
  ([`ModelHTTPError`][pydantic_ai.exceptions.ModelHTTPError]), and errors reaching it (another
  [`ModelAPIError`][pydantic_ai.exceptions.ModelAPIError], `ConnectionError`, `TimeoutError`). Anything else fails
  the task at once.
- A retry goes on from the conversation the failed run got to, when Pydantic AI kept it: tools that already ran are
  not run again, and the usage of every try counts against the task's budget.
- The wait between tries doubles from the config's `retry_backoff` up to `max_retry_backoff`, half of it random, so
  tasks limited at the same moment do not come back together. A stop asked for during the wait ends it at once.
"""

from __future__ import annotations

import random
import time

import anyio
from pydantic_ai.exceptions import AgentRunError, ModelAPIError, ModelHTTPError
from pydantic_ai.messages import ModelMessage

from ._protocol import TaskJob
from ._support import safe_error

__all__ = ('Retry', 'is_transient')

RETRY_STATUS = frozenset({408, 425, 429})
"""HTTP statuses below 500 that a later try can cure (request timeout, too early, too many requests)."""

_STOP_CHECK = 0.05
"""Seconds between checks for a stop while waiting to retry."""


def is_transient(error: BaseException) -> bool:
    """Whether a later try of the run could succeed where this one failed."""
    if isinstance(error, ModelHTTPError):
        return error.status_code in RETRY_STATUS or error.status_code >= 500
    return isinstance(error, ModelAPIError | ConnectionError | TimeoutError)


class Retry:
    """The tries of one task's run: what the next one starts from, and whether there is one."""

    __slots__ = ('attempt', 'history', 'job', 'prompt')

    def __init__(self, job: TaskJob) -> None:
        self.job = job
        self.attempt = 1
        self.prompt: str | None = job.prompt
        self.history: list[ModelMessage] | None = job.message_history

    def delay(self) -> float:
        """Seconds to wait before the next try: doubling, capped, half of it random."""
        config = self.job.config
        step = min(config.max_retry_backoff, config.retry_backoff * 2 ** (self.attempt - 1))
        return step / 2 + random.uniform(0, step / 2)

    async def again(self, error: Exception) -> bool:
        """After a failed try: wait and return `True` if the run should be tried again, else `False`."""
        job = self.job
        if self.attempt > job.config.model_retries or not is_transient(error) or job.stop_requested:
            return False
        delay = self.delay()
        self.attempt += 1
        if job.observer is not None:
            job.observer.retrying(self.attempt, safe_error(error), delay)
        deadline = time.monotonic() + delay
        # A stop is a flag on the job, set by whichever executor runs it: checked often, not awaited.
        while not job.stop_requested and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
            await anyio.sleep(min(left, _STOP_CHECK))
        if job.stop_requested:
            return False
        if isinstance(error, AgentRunError) and error.conversation is not None and error.conversation.messages:
            self.prompt, self.history = None, list(error.conversation.messages)
        return True
