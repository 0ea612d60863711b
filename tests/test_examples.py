"""Every example runs offline on its scripted models, exits 0 and prints what it is meant to show.

The examples run as subprocesses, a few at a time, while the tests read their output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / 'examples'
TIMEOUT = 60
WORKERS = min(4, os.cpu_count() or 2)


@dataclass(frozen=True)
class Case:
    script: str
    expected: tuple[str, ...]
    """Substrings the output must contain."""
    patterns: tuple[str, ...] = ()
    """Regular expressions the output must match (multiline)."""
    args: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return ' '.join((self.script.removesuffix('.py'), *self.args))


CASES = (
    Case(
        'quickstart.py',
        (
            '== 1. A sync task',
            "-> task(description='Two facts about tide pools', subagent_type='researcher', mode='sync')",
            '<- Findings: ',
            'is running',
            'researcher running',
            'writer running',
            'asks: Who is the audience, and what tone should I use?',
            "-> answer_subagent(task_id='",
            'Answer delivered; task ',
            'Draft (for families with young children)',
            'Cancellation requested for task ',
            'Task cancelled. Partial results: Stopped early.',
            '-> hard_cancel_task(',
            'stopped.',
            'Task cancelled. No partial results.',
            'Manager closed.',
        ),
        (
            r'^\w{8} +researcher +1 +sync +completed +[1-9]',
            r'^\w{8} +writer +1 +async +completed ',
            r'^\w{8} +deep-researcher +1 +async +cancelled +\d+ +\[soft cancel by model\] Stopped early',
            r'^\w{8} +deep-researcher +1 +async +cancelled +\d+ +\[hard cancel by model\]',
        ),
    ),
    Case(
        'cancel_from_another_thread.py',
        (
            "-> task(description='A six-chapter story",
            'hard_cancel(',
            'accepted: True',
            'asking a second time is refused: False',
            'Task cancelled. No partial results.',
            'Status: cancelled',
            'Was cancelled: True',
            'Cancel: hard, requested by application',
            'Partial content (',
            'The keeper of the north light',
        ),
        (r'^Task id: \w{24}$', r'^Parent run id: \S+$'),
    ),
    Case(
        'cancel_from_another_thread.py',
        (
            'soft_cancel(',
            'accepted: True',
            'asking a second time is refused: False',
            'Task cancelled. Partial results: Stopped after',
            'Status: cancelled',
            'Was cancelled: True',
            'Cancel: soft, requested by application',
            'The keeper of the north light',
        ),
        (r'^Partial content \([1-9]\d* chars\): Stopped after [1-5] of 6 chapters',),
        args=('--soft',),
    ),
    Case(
        'sync_vs_async.py',
        (
            "subagent_type='researcher', mode='sync')",
            "subagent_type='researcher', mode='async')",
            'Task started with ID: ',
            '(researcher) completed. Result:',
            "-> draft_outline(topic='tide pools')",
            '(notice) Task ',
        ),
    ),
    Case(
        'questions.py',
        (
            'asks: Who is the audience, and what tone should I use?',
            'paused: the subagent asks: Who is the audience',
            'Answer delivered; task ',
            'Draft (for school classes, playful tone)',
            'Draft (for retired birdwatchers, calm tone)',
            "question 'Who is the audience, and what tone should I use?' answered: True",
            'completed: Draft (for marine biology students)',
        ),
    ),
    Case(
        'cancellation.py',
        (
            'Cancellation requested for task ',
            'Task cancelled. Partial results: ',
            'Task cancelled. No partial results.',
            'the stopped run left a transcript of',
            '(stubborn-researcher): Task cancelled. Partial results: Tool results: search: ',
        ),
        (
            r'^\w{8} +researcher +1 +async +cancelled +\d+ +\[hard cancel by model\]',
            r'^\w{8} +stubborn-researcher +1 +async +cancelled +\d+ +\[hard cancel by escalation\]',
        ),
    ),
    Case(
        'nested_subagents.py',
        (
            '<- My team reports: Findings: ',
            'depth=1 running, started by the parent agent',
            'deep-researcher depth=2 running, under ',
            'stopped.',
        ),
        (
            r'^\w{8} +researcher +2 +async +completed ',
            r'^\w{8} +lead +1 +async +cancelled +\d+ +\[hard cancel by model\]',
            r'^\w{8} +deep-researcher +2 +async +cancelled +\d+ +\[hard cancel by parent\]',
        ),
    ),
    Case(
        'structured_output.py',
        (
            '<- {"place":"Point Lobos","low_tide":"07:42","height_m":-0.3,"spots":["Weston Beach","Moss Cove"]}',
            'parent: Go to Weston Beach, Moss Cove at Point Lobos; low tide is at 07:42.',
            'record.result is a TidePlan: TidePlan(',
        ),
    ),
    Case(
        'limits_and_budgets.py',
        (
            'is pending, position 1 in the queue.',
            'researcher pending',
            'Task not started: nesting depth limit reached (1)',
            'failed: usage limit reached:',
            'failed: timed out after 0.5 s',
        ),
        (
            r'^\w{8} +budgeted-researcher +1 +sync +failed +3 ',
            r'^\w{8} +timed-researcher +1 +sync +failed ',
        ),
    ),
    Case(
        'research_team.py',
        (
            "-> task(description='anemones', subagent_type='researcher', mode='async')",
            "-> task(description='hermit crabs', subagent_type='researcher', mode='async')",
            "-> task(description='sea stars', subagent_type='researcher', mode='async')",
            "mode='all'",
            'Findings: anemones close up',
            'Findings: hermit crabs swap shells',
            'Findings: sea stars can regrow',
            'parent: Draft (for family audience)',
        ),
        (r'^\w{8} +writer +1 +sync +completed ',),
    ),
    Case(
        'streaming_events.py',
        (
            '[stream] TaskCreated',
            '[stream] TaskStarted',
            '[stream] TaskQuestionAsked',
            '[stream] TaskAnswered',
            '[stream] TaskCancelRequested  ',
            '[stream] TaskCompleted',
            '[stream] TaskCancelled',
            'What TaskManager.events() saw',
            'TaskCreated: 2',
        ),
        (r'TaskCancelled +\w{8} researcher +cancelled cancel_kind=\'soft\' partial_result=',),
    ),
    Case(
        'web_dashboard.py',
        (
            'Dashboard: http://127.0.0.1:',
            'writer asks: Who is the audience, and what tone should I use?',
            'POST /tasks/{id}/answer -> 200, accepted: True',
            'POST /tasks/{id}/cancel (hard, the lead) -> 200, accepted: True',
            '== GET /tasks -> 200, 5 tasks ==',
            'Draft (for families with young children)',
            '<script>alert("not run")</script>',
            'Stopped.',
        ),
        (r'^\w{8} lead +cancelled ', r'^\w{8}   deep-researcher +cancelled ', r'^\w{8} writer +completed '),
        args=('--check',),
    ),
    Case(
        'steering.py',
        (
            "-> message_task(task_id='",
            'the subagent reads it at its next step.',
            'Report (focus on hermit crabs only): hermit crabs swap shells as they grow.',
            'has already finished and cannot be steered',
            "messages recorded on the task: ['focus on hermit crabs only']",
        ),
    ),
    Case(
        'follow_up.py',
        (
            'Three tide-pool animals: hermit crabs, sea stars, anemones.',
            "continue_task_id='",
            '<- Of the three I named before (1 earlier question), sea stars live longest.',
            'follow-up continues the first task: True',
        ),
    ),
    Case(
        'hooks.py',
        (
            '<- Task not started: deleting is not allowed here; archive instead.',
            '<- Done: Tidy the logs (config read: api_key=[redacted])',
            "careful-worker  '[read only] Check the production config'",
        ),
    ),
    Case(
        'retries.py',
        (
            '[retry] attempt 2 in ',
            'status_code: 429',
            '[retry] attempt 3 in ',
            'status_code: 503',
            '<- Found: hermit crabs swap shells as they grow',
            'status: completed, attempts: 3',
        ),
    ),
)


def run_example(case: Case) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != 'SUBAGENTS_DEMO_MODEL'}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / case.script), *case.args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        cwd=EXAMPLES.parent,
        check=False,
    )


@pytest.fixture(scope='module')
def runs(request: pytest.FixtureRequest) -> Iterator[dict[Case, Future[subprocess.CompletedProcess[str]]]]:
    """Start the selected examples at once (a few at a time) so the tests only wait for their output."""
    selected = [
        item.callspec.params['case']  # pyright: ignore[reportAttributeAccessIssue]
        for item in request.session.items
        if item.module is request.module and 'case' in getattr(getattr(item, 'callspec', None), 'params', {})
    ]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        yield {case: pool.submit(run_example, case) for case in dict.fromkeys(selected)}


@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_example(case: Case, runs: dict[Case, Future[subprocess.CompletedProcess[str]]]) -> None:
    result = runs[case].result()
    output = result.stdout
    assert result.returncode == 0, f'exit code {result.returncode}\n{output}\n{result.stderr}'
    assert not result.stderr.strip(), result.stderr
    missing = [s for s in case.expected if s not in output]
    assert not missing, f'missing {missing} in:\n{output}'
    unmatched = [p for p in case.patterns if not re.search(p, output, flags=re.MULTILINE)]
    assert not unmatched, f'no match for {unmatched} in:\n{output}'


def test_every_example_is_tested_and_documented() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob('*.py') if not p.name.startswith('_'))
    assert scripts == sorted({c.script for c in CASES})
    for name in scripts:
        source = (EXAMPLES / name).read_text()
        assert source.startswith('"""'), f'{name} has no module docstring'
        assert f'uv run python examples/{name}' in source.split('"""')[1], f'{name} does not say how to run it'
