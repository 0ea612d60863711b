"""Running a task: one drive loop, three executors (this event loop, a child process, a worker), one outcome.

This package never imports the manager: it reports through the observer and control protocols.
"""

from ._drive import drive, outcome_of
from ._inprocess import InProcessExecutor
from ._process import ProcessExecutor
from ._protocol import Cascade, Executor, Outcome, OutcomeKind, RunControl, RunObserver, TaskJob, current_task
from ._support import (
    SOFT_CANCEL_NOTICE,
    TaskCrashedError,
    partial_from_messages,
    render_output,
    safe_error,
    sync_tool_names,
    task_agent,
    usage_snapshot,
)
from ._worker import WorkerExecutor

__all__ = (
    'SOFT_CANCEL_NOTICE',
    'Cascade',
    'Executor',
    'InProcessExecutor',
    'Outcome',
    'OutcomeKind',
    'ProcessExecutor',
    'RunControl',
    'RunObserver',
    'TaskCrashedError',
    'TaskJob',
    'WorkerExecutor',
    'current_task',
    'drive',
    'outcome_of',
    'partial_from_messages',
    'render_output',
    'safe_error',
    'sync_tool_names',
    'task_agent',
    'usage_snapshot',
)
