"""The task manager and the collaborators behind it (slots, waiting, questions, cancelling, sharing, settling)."""

from ._hooks import AfterTaskHook, BeforeTaskHook, RefuseTask, TaskEnd, TaskRequest
from ._manager import MANAGER_PREFIX, OnRunEnd, TaskManager
from ._options import ManagerOptions, check_manager_options
from ._transcripts import TranscriptStore
from ._waiting import WaitMode

__all__ = (
    'MANAGER_PREFIX',
    'AfterTaskHook',
    'BeforeTaskHook',
    'ManagerOptions',
    'OnRunEnd',
    'RefuseTask',
    'TaskEnd',
    'TaskManager',
    'TaskRequest',
    'TranscriptStore',
    'WaitMode',
    'check_manager_options',
)
