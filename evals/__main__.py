"""`python -m evals`: run the delegation suite against the parent model the environment names, print the table."""

from __future__ import annotations

import argparse
import re
import sys
from functools import partial
from pathlib import Path

import anyio

from .cases import SCENARIOS
from .harness import parent_model_from_env
from .suite import markdown_table, run_suite, write_report

RESULTS = Path(__file__).parent / 'results'


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 0 whatever the pass rate (a model's score is a measurement, not a build failure)."""
    parser = argparse.ArgumentParser(
        prog='python -m evals',
        description='Delegation evals. The parent model comes from SUBAGENTS_EVAL_MODEL (a Pydantic AI model string, '
        'or openai-compatible:<base_url>) or SUBAGENTS_EVAL_BASE_URL; default: the scripted stand-in.',
    )
    parser.add_argument('--cases', help=f'comma-separated case names (default: all): {", ".join(SCENARIOS)}')
    parser.add_argument('--out', type=Path, help='where to write the JSON report (default: evals/results/<model>.json)')
    parser.add_argument('--case-timeout', type=float, help='seconds per case (overrides SUBAGENTS_EVAL_CASE_TIMEOUT)')
    parser.add_argument('--work-seconds', type=float, help='work time of a slow subagent per step')
    args = parser.parse_args(argv)

    parent = parent_model_from_env()
    if args.case_timeout is not None:
        parent.case_timeout = args.case_timeout
    if args.work_seconds is not None:
        parent.work_seconds = args.work_seconds
    names = [n.strip() for n in args.cases.split(',') if n.strip()] if args.cases else None
    print(f'parent model: {parent.name}; {len(names or SCENARIOS)} cases', file=sys.stderr)
    report = anyio.run(partial(run_suite, parent, names, log=lambda line: print(line, file=sys.stderr, flush=True)))
    slug = re.sub(r'[^A-Za-z0-9._-]+', '-', parent.name.split(' at ')[0]).strip('-') or 'model'
    out = args.out or RESULTS / f'{slug}.json'
    write_report(report, out)
    print(markdown_table(report))
    print(f'\nreport: {out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
