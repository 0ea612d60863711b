"""With Logfire configured the usual way, task spans land in Logfire's pipeline, around the subagent's own spans.

Runs in a fresh interpreter: `logfire.configure()` installs the process-wide tracer provider.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import anyio
    import logfire
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import FunctionModel

    from pydantic_ai_subagents import SubAgentConfig, create_subagent_toolset

    exporter = InMemorySpanExporter()
    logfire.configure(
        send_to_logfire=False, console=False, additional_span_processors=[SimpleSpanProcessor(exporter)]
    )
    logfire.instrument_pydantic_ai()

    def parent(messages, info):
        if len(messages) == 1:
            return ModelResponse(parts=[ToolCallPart('task', {'description': 'find', 'subagent_type': 'r'})])
        return ModelResponse(parts=[TextPart('done')])

    def child(messages, info):
        return ModelResponse(parts=[TextPart('facts')])

    async def main():
        toolset = create_subagent_toolset([SubAgentConfig(name='r', model=FunctionModel(child))])
        async with toolset:
            await Agent(FunctionModel(parent), toolsets=[toolset]).run('go')

    anyio.run(main)
    logfire.force_flush()
    spans = exporter.get_finished_spans()
    (task,) = [s for s in spans if s.name == 'subagent r']
    nested = [s for s in spans if s.parent is not None and s.parent.span_id == task.context.span_id]
    print('task span status', task.attributes['subagents.status'])
    print('nested spans', len(nested))
    """
)


def test_task_spans_reach_logfire_with_the_subagent_run_nested() -> None:
    result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'task span status completed' in result.stdout
    nested = int(result.stdout.split('nested spans ')[1].split()[0])
    assert nested >= 1
