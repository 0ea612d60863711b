"""A subagent with a structured `output_type`: the parent's model gets its result as JSON.

The task record keeps the real object (`record.result` is a `TidePlan` instance), so application code needs no
parsing.

    uv run python examples/structured_output.py
"""

from __future__ import annotations

import asyncio
import json

from pydantic import BaseModel, Field
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse

from _scripted import History, call, child, demo_model, parent, print_events, say, scripted_model, section
from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset


class TidePlan(BaseModel):
    """When and where to go tide-pooling."""

    place: str
    low_tide: str = Field(description='Time of the next low tide, HH:MM')
    height_m: float = Field(description='Height of that low tide in metres')
    spots: list[str] = Field(description='The best pools to visit')


def planner_script(h: History) -> ModelResponse:
    """The planner answers by calling its output tool (the way a model returns structured output)."""
    output_tool = h.info.output_tools[0].name
    place = 'Point Lobos' if 'Point Lobos' in h.prompt else 'the nearest beach'
    return call(output_tool, place=place, low_tide='07:42', height_m=-0.3, spots=['Weston Beach', 'Moss Cove'])


planner = SubAgentConfig(
    name='tide-planner',
    instructions='You plan tide-pool visits: give the next low tide, its height and the best spots.',
    output_type=TidePlan,
    model=child(scripted_model('scripted-planner', planner_script, delay=0.05)),
)
toolset = create_subagent_toolset([planner], general_purpose=False)
agent = Agent(demo_model(), toolsets=[toolset])


def summarize(h: History) -> ModelResponse:
    """The parent reads the JSON it got back, as a model would (the reply ends with a line naming the task)."""
    plan, _ = json.JSONDecoder().raw_decode(h.last_return('task'))
    return say(f'Go to {", ".join(plan["spots"])} at {plan["place"]}; low tide is at {plan["low_tide"]}.')


async def main() -> None:
    async with toolset:
        section('The parent delegates and gets JSON back')
        result = await agent.run(
            'Ask the tide-planner (sync) to plan a visit to Point Lobos, then tell me when and where to go.',
            model=parent(
                lambda h: call(
                    'task', description='Plan a tide-pool visit to Point Lobos', subagent_type='tide-planner'
                ),
                summarize,
            ),
            event_stream_handler=print_events,
        )
        print(f'parent: {result.output}')

        section('The application reads the object itself')
        record = toolset.manager.list()[-1]
        plan = record.result
        print(f'record.result is a {type(plan).__name__}: {plan!r}')
        if isinstance(plan, TidePlan):
            print(f'low tide {plan.low_tide} at {plan.height_m} m; spots: {", ".join(plan.spots)}')


if __name__ == '__main__':
    asyncio.run(main())
