"""The suite: run the cases against a parent model with pydantic-evals, and report per case and in total.

The report is a plain dict (written as JSON): the model, the date, and for each case whether it passed, its time,
the parent's tokens, each check with the reason it failed, the trajectory (every tool call with its reply), the
answer, and what became of the tasks.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic_evals import Dataset, increment_eval_metric
from pydantic_evals.reporting import EvaluationReport, ReportCase

from .cases import SCENARIOS, DelegationInputs, cases
from .evaluators import Answered
from .harness import MAX_REPEATS, MAX_TOOL_CALLS, PARENT_INSTRUCTIONS, CaseOutput, ParentModel, play

__all__ = ('markdown_table', 'run_suite', 'write_report')


async def run_suite(
    parent: ParentModel, names: Sequence[str] | None = None, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the cases (all, or those named) one after another against `parent`; return the report.

    `log` gets a line as each case ends.
    """
    dataset = Dataset[DelegationInputs, CaseOutput, dict[str, str]](
        name='delegation', cases=cases(names), evaluators=[Answered()]
    )

    async def delegate(inputs: DelegationInputs) -> CaseOutput:
        started = time.perf_counter()
        output = await play(SCENARIOS[inputs.scenario], parent)
        if log is not None:
            tools = ' -> '.join(c.tool + (' [retry]' if c.retry else '') for c in output.calls) or 'no tool calls'
            error = f'; {output.error}' if output.error else ''
            log(f'{inputs.scenario}: {time.perf_counter() - started:.1f} s, {tools}{error}')
        increment_eval_metric('requests', output.requests)
        increment_eval_metric('input_tokens', output.input_tokens)
        increment_eval_metric('output_tokens', output.output_tokens)
        return output

    started = datetime.datetime.now(datetime.UTC)
    report = await dataset.evaluate(delegate, name=parent.name, max_concurrency=1, progress=False)
    return _summarize(report, parent, started)


def _summarize(
    report: EvaluationReport[DelegationInputs, CaseOutput, dict[str, str]],
    parent: ParentModel,
    started: datetime.datetime,
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [_case_row(case) for case in report.cases]
    for failure in report.failures:
        rows.append(
            {
                'name': failure.name,
                'covers': (failure.metadata or {}).get('covers', ''),
                'passed': False,
                'seconds': None,
                'requests': 0,
                'input_tokens': 0,
                'output_tokens': 0,
                'error': failure.error_message,
                'checks': [],
                'answer': None,
                'said': [],
                'trajectory': [],
                'tasks': [],
            }
        )
    order = list(SCENARIOS)
    rows.sort(key=lambda r: order.index(r['name']) if r['name'] in order else len(order))
    passed = sum(1 for r in rows if r['passed'])
    return {
        'suite': 'delegation',
        'model': parent.name,
        'scripted_stand_in': parent.scripted,
        'date': started.isoformat(timespec='seconds'),
        'settings': {
            'case_timeout_seconds': parent.case_timeout,
            'max_tool_calls': MAX_TOOL_CALLS,
            'max_repeats': MAX_REPEATS,
            'work_seconds': parent.work_seconds,
            'model_settings': dict(parent.settings),
            'parent_instructions': PARENT_INSTRUCTIONS,
        },
        'summary': {
            'cases': len(rows),
            'passed': passed,
            'pass_rate': round(passed / len(rows), 3) if rows else 0.0,
            'seconds': round(sum(r['seconds'] or 0.0 for r in rows), 1),
            'input_tokens': sum(r['input_tokens'] for r in rows),
            'output_tokens': sum(r['output_tokens'] for r in rows),
        },
        'cases': rows,
    }


def _case_row(case: ReportCase[DelegationInputs, CaseOutput, dict[str, str]]) -> dict[str, Any]:
    output = case.output
    checks = [
        {'name': name, 'passed': bool(result.value), 'reason': result.reason}
        for name, result in case.assertions.items()
    ]
    checks += [
        {'name': failure.name, 'passed': False, 'reason': f'evaluator error: {failure.error_message}'}
        for failure in case.evaluator_failures
    ]
    return {
        'name': case.name,
        'covers': (case.metadata or {}).get('covers', ''),
        'passed': all(c['passed'] for c in checks),
        'seconds': round(case.task_duration, 2),
        'requests': output.requests,
        'input_tokens': output.input_tokens,
        'output_tokens': output.output_tokens,
        'error': output.error,
        'checks': checks,
        'answer': output.answer,
        'said': [run.said for run in output.runs],
        'trajectory': [
            {'run': c.run, 'tool': c.tool, 'args': c.args, 'reply': c.reply, 'retry': c.retry} for c in output.calls
        ],
        'tasks': output.tasks,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON, making the folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + '\n')


def markdown_table(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per case, then the totals."""
    lines = [
        '| case | result | seconds | tokens in / out | failed checks |',
        '| --- | --- | ---: | ---: | --- |',
    ]
    for row in report['cases']:
        failed = '; '.join(c['name'] for c in row['checks'] if not c['passed'])
        seconds = '-' if row['seconds'] is None else f'{row["seconds"]:.1f}'
        lines.append(
            f'| {row["name"]} | {"pass" if row["passed"] else "FAIL"} | {seconds} | '
            f'{row["input_tokens"]:,} / {row["output_tokens"]:,} | {failed.replace("|", "/")} |'
        )
    s = report['summary']
    lines.append(
        f'| **total** | **{s["passed"]}/{s["cases"]}** ({s["pass_rate"]:.0%}) | {s["seconds"]:.1f} | '
        f'{s["input_tokens"]:,} / {s["output_tokens"]:,} | |'
    )
    return '\n'.join(lines)
