"""The delegation cases: realistic requests, the team of scripted subagents, and how each case is judged.

Every case offers the parent the same team (so the tool text is the same in every case); only the request differs.
The stand-in's play for each case is written as a good model would play it: it reads task IDs and results from the
tool replies, never from the harness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel
from pydantic_ai.messages import ModelRequest, ModelResponsePart, ToolCallPart, ToolReturnPart
from pydantic_ai.tools import RunContext
from pydantic_ai.toolsets import FunctionToolset
from pydantic_evals import Case
from pydantic_evals.evaluators import Evaluator

from pydantic_ai_subagents import SubAgentConfig, SubAgentToolset

from . import children
from .evaluators import AtMostCalls, Called, CalledBefore, Mentions, TasksContinued, TasksEnded
from .harness import CaseOutput, Move, Scenario, StandIn, View

__all__ = ('SCENARIOS', 'DelegationInputs', 'cases', 'team')

FACTS = {
    'boil': 'Water boils at 100 °C (212 °F) at sea level.',
    'prime': 'There are 25 prime numbers below 100.',
    'moon is': 'The Moon is about 384,400 km from Earth on average.',
    'far': 'The Moon is about 384,400 km from Earth on average.',
    'mars': 'Mars has two moons, Phobos and Deimos.',
    'bone': 'An adult human has 206 bones.',
}
TRANSLATIONS = {'french': 'French: bonjour', 'german': 'German: guten Morgen', 'spanish': 'Spanish: buenos días'}
LANGUAGES = ('Ada', 'ALGOL', 'APL', 'BASIC', 'C', 'COBOL', 'Eiffel', 'Forth', 'Fortran', 'Haskell', 'Lisp', 'ML') * 3
UNKNOWN_ID = '3f9a2c7d81b4e6f0a5d2c9e7'


class Forecast(BaseModel):
    """A weather forecast for one city."""

    city: str
    temperature_c: int
    sky: str


FORECASTS: dict[str, dict[str, object]] = {
    'paris': {'city': 'Paris', 'temperature_c': 18, 'sky': 'sunny'},
    'oslo': {'city': 'Oslo', 'temperature_c': 4, 'sky': 'snow'},
    '': {'city': 'unknown', 'temperature_c': 0, 'sky': 'unknown'},
}


def _next_item_tool(seconds: float) -> FunctionToolset[Any]:
    async def next_item(ctx: RunContext[Any]) -> str:
        """Work on the next item of the survey and return its name."""
        done = sum(
            1
            for m in ctx.messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, ToolReturnPart) and p.tool_name == 'next_item'
        )
        await anyio.sleep(seconds)
        return LANGUAGES[done % len(LANGUAGES)]

    return FunctionToolset([next_item])


def team(work_seconds: float) -> list[SubAgentConfig]:
    """The subagents every case offers; `work_seconds` is how long the slow ones work (per step)."""
    return [
        SubAgentConfig(
            name='researcher',
            description='Looks up facts and answers research questions.',
            model=children.lookup(FACTS, delay=work_seconds),
        ),
        SubAgentConfig(
            name='translator',
            description='Translates a short text into one language.',
            model=children.lookup(TRANSLATIONS, delay=work_seconds),
        ),
        SubAgentConfig(
            name='card_writer',
            description='Writes greeting cards.',
            model=children.asking('Who is the card for?', 'Happy birthday, {answer}! Wishing you a year full of joy.'),
        ),
        SubAgentConfig(
            name='surveyor',
            description='Surveys a large field item by item; slow.',
            model=children.stepper(LANGUAGES, what='items'),
            toolsets=[_next_item_tool(work_seconds)],
        ),
        SubAgentConfig(
            name='forecaster',
            description='Gives the weather forecast for a city.',
            model=children.structured(FORECASTS),
            output_type=Forecast,
        ),
    ]


def writers(work_seconds: float) -> list[SubAgentConfig]:
    """A poet that revises its own haiku when a task is continued, and the researcher (the follow-up case)."""
    return [
        SubAgentConfig(
            name='poet',
            description='Writes and revises short poems.',
            model=children.revising(
                'Waves fold into foam / salt wind carries the gull cry / the tide keeps its time',
                'Moonlit waves whisper / salt wind carries the owl cry / the tide keeps its dark',
            ),
        ),
        *team(work_seconds)[:1],
    ]


# ----------------------------------------------------------------------------------------------- stand-in moves


def _call(tool: str, **args: Any) -> Move:
    return lambda view: [ToolCallPart(tool, args)]


def _on_task(tool: str, **args: Any) -> Move:
    """A call about the latest task the replies mentioned."""
    return lambda view: [ToolCallPart(tool, {'task_id': view.ids()[-1], **args})]


def _wait_all(view: View) -> Sequence[ModelResponsePart]:
    return [ToolCallPart('wait_tasks', {'task_ids': view.ids()})]


def _relay(view: View) -> str:
    return f'Here is what the subagent reported: {view.last}'


def _relay_all(view: View) -> str:
    return 'The subagents reported:\n' + '\n'.join(view.replies[-1:] if view.replies else [])


def _relay_notice(view: View) -> str:
    notices = [p for p in view.prompts if 'completed' in p or 'failed' in p or 'cancelled' in p]
    return f'Yes, it finished: {notices[-1]}' if notices else 'It has not finished yet.'


# ----------------------------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class DelegationInputs:
    """What a case gives the parent: the user's messages, one per run."""

    scenario: str
    prompts: tuple[str, ...]


async def _let_tasks_finish(toolset: SubAgentToolset) -> None:
    for record in toolset.manager.list():
        await toolset.manager.wait_for(record.id, until_question=False)


_SCENARIOS: list[tuple[Scenario, list[Evaluator[Any, CaseOutput, Any]], str]] = [
    (
        Scenario(
            name='sync',
            prompts=['Use the researcher subagent to find out at what temperature water boils at sea level.'],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='At what temperature does water boil at sea level?',
                            subagent_type='researcher',
                        )
                    ],
                    _relay,
                )
            ],
        ),
        [Called('task', where={'subagent_type': 'researcher'}), Mentions(all_of=['100']), AtMostCalls(3)],
        'one sync task, result relayed',
    ),
    (
        Scenario(
            name='async_then_wait',
            prompts=[
                'Start the researcher subagent in the background (mode "async") to count the prime numbers below '
                '100. Wait for it to finish, then tell me the count.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='Count the prime numbers below 100.',
                            subagent_type='researcher',
                            mode='async',
                        ),
                        _wait_all,
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('task', where={'mode': 'async', 'subagent_type': 'researcher'}),
            CalledBefore(['task'], ['wait_tasks', 'check_task']),
            Mentions(all_of=['25']),
            AtMostCalls(6),
        ],
        'async task, then wait for its result',
    ),
    (
        Scenario(
            name='parallel',
            prompts=[
                'Translate "good morning" into French, German and Spanish. Start one async translator task per '
                'language, all at once, then wait for all of them and give me the three translations.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        lambda view: [
                            ToolCallPart(
                                'task',
                                {
                                    'description': f'Translate "good morning" into {language}.',
                                    'subagent_type': 'translator',
                                    'mode': 'async',
                                },
                            )
                            for language in ('French', 'German', 'Spanish')
                        ],
                        _wait_all,
                    ],
                    _relay_all,
                )
            ],
        ),
        [
            Called('task', at_least=3, where={'mode': 'async', 'subagent_type': 'translator'}),
            CalledBefore(['task'], ['wait_tasks', 'check_task']),
            Mentions(all_of=['bonjour', 'guten morgen', 'buenos dias']),
            AtMostCalls(10),
        ],
        'three async tasks in parallel, wait for all',
    ),
    (
        Scenario(
            name='question_sync',
            prompts=[
                'Have the card_writer subagent write a short birthday card (mode "sync"). The card is for my sister '
                'Alice; answer its questions. Then show me the card.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call('task', description='Write a short birthday card.', subagent_type='card_writer'),
                        # The task is sync: answering its question returns the card.
                        _on_task('answer_subagent', answer='Alice'),
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('answer_subagent', at_most=2, contains={'answer': 'alice'}),
            Mentions(all_of=['happy birthday', 'alice']),
            AtMostCalls(6),
        ],
        'the subagent of a sync task asks a question',
    ),
    (
        Scenario(
            name='question_async',
            prompts=[
                'Start the card_writer subagent in async mode to write a short birthday card and wait for it. The '
                'card is for my sister Alice; answer its questions. Then show me the card.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='Write a short birthday card.',
                            subagent_type='card_writer',
                            mode='async',
                        ),
                        _wait_all,
                        _on_task('answer_subagent', answer='Alice'),
                        _wait_all,
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('task', where={'mode': 'async', 'subagent_type': 'card_writer'}),
            Called('answer_subagent', at_most=2, contains={'answer': 'alice'}),
            Mentions(all_of=['happy birthday', 'alice']),
            AtMostCalls(8),
        ],
        'the subagent of an async task asks a question',
    ),
    (
        Scenario(
            name='soft_cancel',
            prompts=[
                'Start the surveyor subagent in async mode to survey every programming language ever made. That '
                'takes too long: right after starting it, cancel it softly so that it returns partial results, and '
                'tell me which languages it covered so far.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='Survey every programming language ever made.',
                            subagent_type='surveyor',
                            mode='async',
                        ),
                        _on_task('soft_cancel_task'),
                        _wait_all,
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('soft_cancel_task'),
            Called('hard_cancel_task', at_least=0, at_most=0),
            CalledBefore(['soft_cancel_task'], ['wait_tasks', 'check_task']),
            TasksEnded('cancelled'),
            Mentions(all_of=['Ada']),
            AtMostCalls(6),
        ],
        'soft cancel, partial results relayed',
    ),
    (
        Scenario(
            name='hard_cancel',
            prompts=[
                'Start the surveyor subagent in async mode to survey every programming language ever made, then '
                'stop it immediately: I do not need any partial results. Confirm that it is stopped.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='Survey every programming language ever made.',
                            subagent_type='surveyor',
                            mode='async',
                        ),
                        _on_task('hard_cancel_task'),
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('hard_cancel_task'),
            Called('soft_cancel_task', at_least=0, at_most=0),
            TasksEnded('cancelled', cancel='hard by model'),
            Mentions(any_of=['stop', 'cancel']),
            AtMostCalls(5),
        ],
        'hard cancel, no partial results wanted',
    ),
    (
        Scenario(
            name='listing',
            prompts=[
                'Start two async surveyor tasks: one surveying programming languages, one surveying databases. Then '
                'list your active tasks and tell me how many are running.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        lambda view: [
                            ToolCallPart(
                                'task',
                                {'description': f'Survey {field}.', 'subagent_type': 'surveyor', 'mode': 'async'},
                            )
                            for field in ('programming languages', 'databases')
                        ],
                        _call('list_active_tasks'),
                    ],
                    lambda view: f'{len(view.last.splitlines())} tasks are running:\n{view.last}',
                )
            ],
        ),
        [
            Called('task', at_least=2, where={'mode': 'async', 'subagent_type': 'surveyor'}),
            CalledBefore(['task'], ['list_active_tasks']),
            Mentions(any_of=['2', 'two']),
            AtMostCalls(6),
        ],
        'two async tasks, then list the active ones',
    ),
    (
        Scenario(
            name='unknown_id',
            prompts=[
                f'Yesterday I started task {UNKNOWN_ID} with the researcher to find out how far away the Moon is. '
                'Check its result. If that task is not found, ask the researcher again and tell me the answer.'
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call('check_task', task_id=UNKNOWN_ID),
                        _call('task', description='How far away is the Moon from Earth?', subagent_type='researcher'),
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('check_task', at_least=0),
            CalledBefore(['check_task', 'wait_tasks', 'list_active_tasks'], ['task']),
            Called('task', where={'subagent_type': 'researcher'}),
            Mentions(all_of=['384']),
            AtMostCalls(5),
        ],
        'recover from a task ID that does not exist',
    ),
    (
        Scenario(
            name='wrong_subagent',
            prompts=['Ask the research_bot subagent how many moons Mars has.'],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call('task', description='How many moons does Mars have?', subagent_type='research_bot'),
                        _call('task', description='How many moons does Mars have?', subagent_type='researcher'),
                    ],
                    _relay,
                )
            ],
        ),
        [
            Called('task', where={'subagent_type': 'researcher'}),
            Mentions(any_of=['two', '2', 'phobos']),
            AtMostCalls(4),
        ],
        'recover from a subagent name that does not exist',
    ),
    (
        Scenario(
            name='background_next_run',
            prompts=[
                'Start the researcher subagent in async mode to find out how many bones an adult human has. Do not '
                'wait for it; just tell me that it has started.',
                'Has the research finished? What did it find?',
            ],
            subagents=team,
            stand_in=[
                StandIn(
                    [
                        _call(
                            'task',
                            description='How many bones does an adult human have?',
                            subagent_type='researcher',
                            mode='async',
                        )
                    ],
                    lambda view: f'Started task {view.ids()[-1]}; you will hear when it finishes.',
                ),
                StandIn([], _relay_notice),
            ],
            between_runs=_let_tasks_finish,
        ),
        [
            Called('task', where={'mode': 'async', 'subagent_type': 'researcher'}, run=0),
            Called('wait_tasks', at_least=0, at_most=0, run=0),
            Mentions(all_of=['206']),
            AtMostCalls(4),
        ],
        'a background result delivered into the next run',
    ),
    (
        Scenario(
            name='follow_up',
            prompts=[
                'Ask the poet subagent to write a haiku about the sea, and show it to me.',
                'Now have the poet revise that haiku so that it is set at night. Continue its earlier task (so it '
                'remembers the haiku) rather than starting a new one, and show me the revised haiku.',
            ],
            subagents=writers,
            stand_in=[
                StandIn([_call('task', description='Write a haiku about the sea.', subagent_type='poet')], _relay),
                StandIn(
                    [
                        lambda view: _call(
                            'task',
                            description='Revise your haiku so that it is set at night.',
                            subagent_type='poet',
                            continue_task_id=view.ids()[-1],
                        )(view)
                    ],
                    _relay,
                ),
            ],
        ),
        [
            Called('task', at_least=2, where={'subagent_type': 'poet'}),
            TasksContinued('poet'),
            Mentions(all_of=['moonlit'], run=-1),
            AtMostCalls(5),
        ],
        'a follow-up that continues a finished task',
    ),
    (
        Scenario(
            name='structured_output',
            prompts=['Ask the forecaster subagent for the weather in Paris, and tell me the temperature and the sky.'],
            subagents=team,
            stand_in=[
                StandIn(
                    [_call('task', description='Give the weather forecast for Paris.', subagent_type='forecaster')],
                    _relay,
                )
            ],
        ),
        [Called('task', where={'subagent_type': 'forecaster'}), Mentions(all_of=['18', 'sunny']), AtMostCalls(3)],
        'a subagent with structured output',
    ),
    (
        Scenario(
            name='no_delegation',
            prompts=['What is 7 times 6? Answer directly; this needs no subagent.'],
            subagents=team,
            stand_in=[StandIn([], lambda view: '7 times 6 is 42.')],
        ),
        [Called('task', at_least=0, at_most=0), Mentions(all_of=['42']), AtMostCalls(1)],
        'no delegation when none is needed',
    ),
]

SCENARIOS: dict[str, Scenario] = {s.name: s for s, _, _ in _SCENARIOS}
"""The scenarios by case name."""


def cases(names: Sequence[str] | None = None) -> list[Case[DelegationInputs, CaseOutput, dict[str, str]]]:
    """The cases, all of them or those named."""
    unknown = set(names or ()) - set(SCENARIOS)
    if unknown:
        raise ValueError(f'unknown cases: {", ".join(sorted(unknown))}; known: {", ".join(SCENARIOS)}')
    return [
        Case(
            name=scenario.name,
            inputs=DelegationInputs(scenario=scenario.name, prompts=tuple(scenario.prompts)),
            metadata={'covers': covers},
            evaluators=evaluators,
        )
        for scenario, evaluators, covers in _SCENARIOS
        if names is None or scenario.name in names
    ]
