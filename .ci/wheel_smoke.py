"""Run by `.ci/run` in a clean virtual environment where only the built wheel is installed.

It checks that the package imports from that environment (not from the source tree), that its version is the one in
the wheel's metadata, and that a delegating agent runs offline with `pydantic_ai_subagents.testing`.
"""

import asyncio
import sys
from importlib.metadata import version
from pathlib import Path

from pydantic_ai import Agent, models

import pydantic_ai_subagents
from pydantic_ai_subagents import TaskStatus, create_subagent_toolset
from pydantic_ai_subagents.testing import call, run_parent, scripted_subagent

models.ALLOW_MODEL_REQUESTS = False


def check_installation() -> Path:
    """Where the package was imported from, after checking that it is this environment and the version agrees."""
    location = Path(pydantic_ai_subagents.__file__).resolve().parent
    assert location.is_relative_to(Path(sys.prefix).resolve()), f'imported from {location}, not the environment'
    assert pydantic_ai_subagents.__version__ == version('pydantic-ai-subagents'), pydantic_ai_subagents.__version__
    return location


async def delegate() -> None:
    """A parent delegates to a subagent that answers and to one that asks a question first."""
    subagents = create_subagent_toolset(
        [
            scripted_subagent('researcher', answer='Found 3 sources on {prompt}.'),
            scripted_subagent('writer', ask='Who is it for?', answer='A draft for {answer}.'),
        ],
        general_purpose=False,
    )
    async with subagents:
        run = await run_parent(
            Agent(toolsets=[subagents]),
            [
                call('task', description='bicycles', subagent_type='researcher'),
                call('task', description='write it up', subagent_type='writer'),
                lambda run: call('answer_subagent', task_id=run.task_ids[-1], answer='children'),
                lambda run: call('wait_tasks', task_ids=run.task_ids),
            ],
        )
        statuses = [record.status for record in subagents.manager.list()]
    follow_up = f'(To revise or extend this result, call task with continue_task_id="{run.task_ids[0]}".)'
    assert run.texts[0] == f'Found 3 sources on bicycles.\n\n{follow_up}', run.texts
    assert 'A draft for children.' in run.reply('wait_tasks'), run.texts
    assert statuses == [TaskStatus.COMPLETED, TaskStatus.COMPLETED], statuses


location = check_installation()
asyncio.run(delegate())
print(f'pydantic-ai-subagents {pydantic_ai_subagents.__version__} from {location}: ok')
