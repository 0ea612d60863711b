"""Delegation evals: does a parent model use the subagent tools well?

Each case gives a parent model a realistic delegation request, with subagents whose models are scripted, and judges
the tool-call trajectory and the final answer. The parent model comes from the environment (see
[`parent_model_from_env`][evals.harness.parent_model_from_env]); without one, a scripted stand-in plays every case
as a good model would, which proves the harness and the evaluators (CI runs it as a smoke test).

Run it with `make eval` or `python -m evals --help`.
"""
