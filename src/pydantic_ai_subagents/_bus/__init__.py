"""The message bus: how the parent agent, the task manager and the subagents talk to each other.

The bus carries typed, immutable [`Message`][pydantic_ai_subagents.Message] objects in three ways:

* **point to point**: [`send`][pydantic_ai_subagents.InMemoryMessageBus.send] puts a message into the
  [`Mailbox`][pydantic_ai_subagents.Mailbox] of its `recipient`;
* **publish/subscribe**: [`publish`][pydantic_ai_subagents.InMemoryMessageBus.publish] copies a message into
  every [`Subscription`][pydantic_ai_subagents.Subscription] of its `topic` (and of the wildcard topic `'*'`);
* **request/reply**: [`ask`][pydantic_ai_subagents.InMemoryMessageBus.ask] sends a request and waits for the
  answer that the recipient hands to [`reply`][pydantic_ai_subagents.InMemoryMessageBus.reply].

The rules it follows:

* **Bounded.** Every mailbox and subscription holds at most `max_buffer` messages
  ([`DEFAULT_MAX_BUFFER`][pydantic_ai_subagents.DEFAULT_MAX_BUFFER] unless told otherwise), so a reader that
  stopped reading costs a fixed amount of memory, never an ever-growing queue.
* **Sending never blocks.** When a queue is full, its [`OverflowPolicy`][pydantic_ai_subagents.OverflowPolicy]
  decides: `'drop_oldest'` (the default) throws the oldest queued message away and counts it in `dropped`;
  `'error'` refuses the new message with [`MailboxFullError`][pydantic_ai_subagents.MailboxFullError]. There
  is deliberately no waiting for room: a stuck or dead reader must never stall the component that sends to it.
* **One event loop.** The bus is not locked: every method runs on the thread of the event loop that uses it
  (asyncio or trio, through anyio). Other threads, such as the handler thread of a web framework, go through
  [`send_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.send_threadsafe],
  [`publish_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.publish_threadsafe] and
  [`reply_threadsafe`][pydantic_ai_subagents.InMemoryMessageBus.reply_threadsafe], which run the call on that loop
  and return its result (or raise its error). The bus learns its loop the first time it is used inside it; before
  that, these methods raise [`BusError`][pydantic_ai_subagents.BusError]. Called on the loop thread itself, they
  simply make the call.
* **Closing.** Closing a mailbox or subscription frees its name or topic slot; its reader still gets the
  messages already queued, then [`BusClosedError`][pydantic_ai_subagents.BusClosedError] (and `async for`
  simply ends). Closing the bus closes every mailbox and subscription the same way, wakes every waiting reader
  and asker with `BusClosedError`, and makes every later send fail with it.

Its modules, one job each: `_messages` (what is carried), `_inbox` (bounded queues and their overflow policies),
`_protocol` (what a bus must offer), `_local` (the in-process half every backend shares) and `_memory` (the
in-memory bus).
"""

from __future__ import annotations

from .._errors import BusClosedError
from ._inbox import DEFAULT_MAX_BUFFER, WILDCARD_TOPIC, Inbox, Mailbox, OverflowPolicy, Subscription
from ._memory import InMemoryMessageBus
from ._messages import (
    Answer,
    CancelRequest,
    Message,
    MessageT,
    Progress,
    Question,
    StatusChanged,
    TaskAssigned,
    TaskResult,
)
from ._protocol import BusStats, MessageBus

__all__ = (
    'DEFAULT_MAX_BUFFER',
    'WILDCARD_TOPIC',
    'Answer',
    'BusClosedError',
    'BusStats',
    'CancelRequest',
    'InMemoryMessageBus',
    'Inbox',
    'Mailbox',
    'Message',
    'MessageBus',
    'MessageT',
    'OverflowPolicy',
    'Progress',
    'Question',
    'StatusChanged',
    'Subscription',
    'TaskAssigned',
    'TaskResult',
)
