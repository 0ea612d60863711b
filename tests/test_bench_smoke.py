"""The benchmark harness keeps working: its quick mode runs every workload end to end (no timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_bench_quick_runs_every_workload() -> None:
    env = {k: v for k, v in os.environ.items() if k != 'SUBAGENTS_DEMO_MODEL'}
    result = subprocess.run(
        [sys.executable, 'bench/run.py', '--quick', '--no-json'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for workload in ('[delegation]', '[fanout]', '[cancel]', '[memory]', '[model_cost]', '[bus]'):
        assert workload in result.stdout
    assert 'status CANCELLED before the run exited' in result.stdout


def test_bench_alternatives_script_loads_without_the_other_libraries() -> None:
    # The other libraries live in bench/.venvs/ and are imported only when a workload runs, so the script's own
    # imports and options work here too.
    result = subprocess.run(
        [sys.executable, 'bench/alternatives.py', 'sapa', '--help'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '--cancel-live' in result.stdout


def test_the_soak_runs_and_reads_the_manager_s_real_tables() -> None:
    # `make soak` reads the manager's private tables for its memory checks: a short run with progress lines catches
    # a table that moved (it raises, rather than counting an empty one) and any invariant the soak checks.
    result = subprocess.run(
        [sys.executable, 'bench/soak.py', '--tasks', '400', '--retained', '100', '--backlog', '100', '--every', '0.2'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-2000:])
    assert 'PASS: every invariant held' in result.stdout
    assert "'runtimes': 0" in result.stdout and 'transcripts=' in result.stdout
