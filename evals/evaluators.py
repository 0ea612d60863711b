"""The evaluators: each judges one thing about a case's trajectory or its final answer, and says why it failed.

A trajectory here is the parent's tool calls across the runs of the case, in order, with their replies. A call the
toolset refused (the model was asked to retry) does not count as made, except for
[`AtMostCalls`][evals.evaluators.AtMostCalls], which counts every attempt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_evals.evaluators import EvaluationReason, Evaluator, EvaluatorContext

from .children import normalize
from .harness import CaseOutput, ToolCall

__all__ = ('Answered', 'AtMostCalls', 'Called', 'CalledBefore', 'Mentions', 'TasksContinued', 'TasksEnded')

Context = EvaluatorContext[Any, CaseOutput, Any]


def _accepted(output: CaseOutput, run: int | None = None) -> list[ToolCall]:
    return [c for c in output.calls if not c.retry and (run is None or c.run == _run_index(output, run))]


def _run_index(output: CaseOutput, run: int) -> int:
    return run if run >= 0 else len(output.runs) + run


def _show(call: ToolCall) -> str:
    args = ', '.join(f'{k}={v!r}' for k, v in call.args.items())
    return f'{call.tool}({args})' + (' [retry]' if call.retry else '')


def _trajectory(output: CaseOutput) -> str:
    return ' -> '.join(_show(c) for c in output.calls) or 'no tool calls'


@dataclass(repr=False)
class Answered(Evaluator[Any, CaseOutput, Any]):
    """Every run of the case ended with an answer (no error, no deadline)."""

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        output = ctx.output
        if output.error is not None:
            return EvaluationReason(False, reason=output.error)
        if not output.answer.strip():
            return EvaluationReason(False, reason='the last run gave an empty answer')
        return EvaluationReason(True)


@dataclass(repr=False)
class Mentions(Evaluator[Any, CaseOutput, Any]):
    """The answer of a run mentions every one of `all_of` and at least one of `any_of` (case and accents ignored)."""

    all_of: Sequence[str] = ()
    any_of: Sequence[str] = ()
    run: int = -1
    """Which run's answer: `-1` is the last."""

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        words = [*self.all_of, *(['|'.join(self.any_of)] if self.any_of else [])]
        where = '' if self.run == -1 else f' (run {self.run + 1})'
        return f'answer mentions {", ".join(words)}{where}'

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        output = ctx.output
        index = _run_index(output, self.run)
        answer = (output.runs[index].answer or '') if 0 <= index < len(output.runs) else ''
        text = normalize(answer)
        missing = [w for w in self.all_of if normalize(w) not in text]
        if self.any_of and not any(normalize(w) in text for w in self.any_of):
            missing.append(' or '.join(self.any_of))
        if missing:
            return EvaluationReason(False, reason=f'missing {", ".join(missing)} in answer {answer[:300]!r}')
        return EvaluationReason(True)


@dataclass(repr=False)
class Called(Evaluator[Any, CaseOutput, Any]):
    """Accepted calls of `tool` whose arguments match number between `at_least` and `at_most`.

    `where` asks for arguments equal to a value; `contains` for string arguments that contain a text (case and
    accents ignored).
    """

    tool: str
    at_least: int = 1
    at_most: int | None = None
    where: Mapping[str, Any] = field(default_factory=dict[str, Any])
    contains: Mapping[str, str] = field(default_factory=dict[str, str])
    run: int | None = None
    """Only the calls of this run (`-1`: the last); `None`: all runs."""

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        args = [f'{k}={v}' for k, v in self.where.items()] + [f'{k}~{v}' for k, v in self.contains.items()]
        count = f'{self.at_least}' if self.at_most == self.at_least else f'{self.at_least}..{self.at_most or "n"}'
        where = '' if self.run is None else f' in run {self.run + 1 if self.run >= 0 else "last"}'
        return f'{self.tool}({", ".join(args)}) x{count}{where}'

    def matches(self, call: ToolCall) -> bool:
        """Whether a call is one this evaluator counts."""
        if call.tool != self.tool:
            return False
        for name, value in self.where.items():
            got = call.args.get(name, _DEFAULTS.get((call.tool, name)))
            if got != value:
                return False
        for name, text in self.contains.items():
            got = call.args.get(name)
            if not isinstance(got, str) or normalize(text) not in normalize(got):
                return False
        return True

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        count = sum(1 for c in _accepted(ctx.output, self.run) if self.matches(c))
        if count < self.at_least or (self.at_most is not None and count > self.at_most):
            return EvaluationReason(False, reason=f'{count} such calls in: {_trajectory(ctx.output)}')
        return EvaluationReason(True)


_DEFAULTS: dict[tuple[str, str], Any] = {('task', 'mode'): 'sync', ('wait_tasks', 'mode'): 'all'}
"""Arguments the tools default when the model leaves them out."""


@dataclass(repr=False)
class CalledBefore(Evaluator[Any, CaseOutput, Any]):
    """An accepted call of one of `first` comes before an accepted call of one of `then`."""

    first: Sequence[str]
    then: Sequence[str]

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        return f'{"|".join(self.first)} then {"|".join(self.then)}'

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        seen_first = False
        for call in _accepted(ctx.output):
            if call.tool in self.first:
                seen_first = True
            elif seen_first and call.tool in self.then:
                return EvaluationReason(True)
        return EvaluationReason(False, reason=f'not in order in: {_trajectory(ctx.output)}')


@dataclass(repr=False)
class AtMostCalls(Evaluator[Any, CaseOutput, Any]):
    """The parent made at most `limit` tool calls, refused ones included: no loops, no flailing."""

    limit: int

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        return f'at most {self.limit} tool calls'

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        count = len(ctx.output.calls)
        if count > self.limit:
            return EvaluationReason(False, reason=f'{count} calls: {_trajectory(ctx.output)}')
        return EvaluationReason(True)


@dataclass(repr=False)
class TasksEnded(Evaluator[Any, CaseOutput, Any]):
    """At the end, at least `at_least` tasks have `status`, and a cancel record that mentions `cancel` if given.

    A cancel record reads `<kind> by <who>`: `hard by model`, `soft by model`, `hard by escalation`.
    """

    status: str
    at_least: int = 1
    cancel: str | None = None

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        how = f' ({self.cancel})' if self.cancel else ''
        return f'{self.at_least}+ tasks {self.status}{how}'

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        tasks = ctx.output.tasks
        count = sum(
            1
            for t in tasks
            if t['status'] == self.status and (self.cancel is None or self.cancel in (t['cancel'] or ''))
        )
        if count < self.at_least:
            states = ', '.join(f'{t["subagent"]}:{t["status"]}/{t["cancel"]}' for t in tasks) or 'no tasks'
            return EvaluationReason(False, reason=f'tasks at the end: {states}')
        return EvaluationReason(True)


@dataclass(repr=False)
class TasksContinued(Evaluator[Any, CaseOutput, Any]):
    """At least `at_least` tasks of `subagent` are follow-ups: they continue an earlier task's conversation."""

    subagent: str
    at_least: int = 1

    def get_default_evaluation_name(self) -> str:
        """The check's name in the report, from its parameters."""
        return f'{self.at_least}+ {self.subagent} tasks continued'

    def evaluate(self, ctx: Context) -> EvaluationReason:
        """Judge the case; a failure's reason says what the parent did instead."""
        tasks = [t for t in ctx.output.tasks if t['subagent'] == self.subagent]
        if sum(1 for t in tasks if t['continued_from']) < self.at_least:
            return EvaluationReason(
                False, reason=f'{len(tasks)} {self.subagent} tasks, none continued: {_trajectory(ctx.output)}'
            )
        return EvaluationReason(True)
