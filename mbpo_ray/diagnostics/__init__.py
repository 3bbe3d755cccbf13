"""The MBPO paper's analysis ("When to trust your model", Janner et al. 2019, sections 4 and 6)
as diagnostics of a user's own runs (docs/diagnostics.md).

``live``: the cheap metrics that training logs every epoch (model error on the newest real
data, ensemble disagreement at rollout starts, how rollouts end, the policy's KL from the
data-collecting policy). The other modules are ``mbpo-ray analyze KIND RUN_DIR``: each reads a
run directory and writes KIND.png and KIND.json (``command`` dispatches; ``options`` is the
command line, light enough for the CLI to build at every start).

This package imports no ray (tests/test_architecture.py) and nothing here at package level, so
that the runtimes can import ``live`` without loading the analyses.
"""
