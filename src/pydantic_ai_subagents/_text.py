"""What the parent's model reads about a task: short, plain, exact, and bounded in size."""

from __future__ import annotations

from ._run import render_output
from ._state import TaskRecord, TaskStatus

__all__ = ('describe_record', 'list_line', 'truncate')


def describe_record(record: TaskRecord, max_chars: int, *, position: int | None = None) -> str:
    """A task's state in the short, exact words the parent's model reads."""
    head = f'Task {record.id} ({record.subagent})'
    status = record.status
    if status is TaskStatus.PENDING:
        where = f', position {position} in the queue' if position else ''
        return f'{head} is pending{where}.'
    if status is TaskStatus.RUNNING:
        extra = ' Cancellation requested.' if record.cancel is not None else ''
        return f'{head} is running ({record.elapsed():.0f}s).{extra}'
    if status is TaskStatus.WAITING_FOR_ANSWER:
        return f'{head} asks: {record.question}\nAnswer with answer_subagent(task_id="{record.id}", answer=...).'
    if status is TaskStatus.COMPLETED:
        return f'{head} completed. Result:\n{truncate(render_output(record.result), max_chars)}'
    if status is TaskStatus.FAILED:
        return f'{head} failed: {record.error}'
    if record.partial_result:
        return f'{head}: Task cancelled. Partial results: {truncate(record.partial_result, max_chars)}'
    return f'{head}: Task cancelled. No partial results.'


def truncate(text: str, max_chars: int) -> str:
    """Cut `text` to `max_chars` with a marker saying how much was left out (the full text stays stored)."""
    if len(text) <= max_chars:
        return text
    return f'{text[:max_chars]}\n[... {len(text) - max_chars} more characters truncated]'


def list_line(record: TaskRecord) -> str:
    """One line of `list_active_tasks`: id, subagent, status, elapsed seconds and the start of the description."""
    description = record.description.replace('\n', ' ')
    if len(description) > 60:
        description = description[:59] + '…'
    return f'{record.id} {record.subagent} {record.status.value} {record.elapsed():.0f}s: {description}'
