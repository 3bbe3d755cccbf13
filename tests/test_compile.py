"""The compiled paths (`sac.compile`, `model.compile`, issue 13) run on a CPU too: a compiled SAC
update and a compiled ensemble fit give the eager path's numbers. Each compile costs ~20 s here.

Tolerance: the compiled kernels fuse elementwise work and may sum in another order than eager
PyTorch, a difference of ~1e-7 relative per float32 operation; over a few updates or a short fit
that stays far below 1e-4, while a wrong loss (another term, a missed detach) differs by O(1)."""
from __future__ import annotations

import math

import pytest
import torch

from mbpo_ray.agents.sac import SAC
from mbpo_ray.config import SACConfig
from helpers import toy_fit_data, toy_trainer

RTOL = 1e-4


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a - b).abs() <= RTOL * b.abs().clamp_min(1e-3)).all())


def test_compiled_sac_update_matches_the_eager_update():
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 4, generator=generator), torch.rand(32, 2, generator=generator) * 2 - 1,
                torch.randn(32, generator=generator), torch.randn(32, 4, generator=generator),
                (torch.rand(32, generator=generator) < 0.2).float()) for _ in range(4)]
    runs = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        agent = SAC(4, 2, SACConfig(hidden_width=32, batch_size=32, compile=compiled), torch.device("cpu"))
        before = _graphs_compiled()
        metrics = [agent.update(*batch) for batch in batches]  # the noise: torch's global stream
        assert (_graphs_compiled() > before) == compiled  # the compiled path did run compiled
        runs[compiled] = (torch.stack(metrics), [p.detach().clone() for p in agent.state_dict().values()])
    (eager_metrics, eager_state), (compiled_metrics, compiled_state) = runs[False], runs[True]
    assert _close(compiled_metrics, eager_metrics), (compiled_metrics, eager_metrics)
    assert all(_close(c, e) for c, e in zip(compiled_state, eager_state))
    # the updates moved the weights (so the comparison compares trained networks)
    torch.manual_seed(0)
    fresh = SAC(4, 2, SACConfig(hidden_width=32, batch_size=32), torch.device("cpu"))
    assert not all(torch.equal(f, e) for f, e in zip(fresh.state_dict().values(), eager_state))


def test_compiled_ensemble_fit_matches_the_eager_fit():
    inputs, targets = toy_fit_data()  # targets: [reward, delta of obs 3]
    results = {}
    for compiled in (False, True):
        trainer = toy_trainer(compile=compiled)
        model = trainer.model
        before = _graphs_compiled()
        stats = [trainer.fit(inputs, targets) for _ in range(2)]  # 480 training rows: batches of 64 and 32
        assert (_graphs_compiled() > before) == compiled
        results[compiled] = (stats, {k: v.clone() for k, v in model.state_dict().items()})
    (eager_stats, eager_state), (compiled_stats, compiled_state) = results[False], results[True]
    for eager, compiled in zip(eager_stats, compiled_stats):
        assert compiled["model/epochs"] == eager["model/epochs"] and not compiled["model/fit_failed"]
        for key in ("model/train_loss", "model/holdout_mse", "model/holdout_mse_all"):
            assert math.isclose(compiled[key], eager[key], rel_tol=RTOL), (key, compiled[key], eager[key])
    assert eager_stats[1]["model/holdout_mse"] < eager_stats[0]["model/holdout_mse"]  # it learned
    for key, value in eager_state.items():
        assert torch.equal(compiled_state[key], value) if value.dtype == torch.long else _close(
            compiled_state[key], value), key
