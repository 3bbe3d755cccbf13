"""The precision switch (mbpo_ray.precision, docs/precision.md): the rule that picks float32 or
bf16, and bf16 autocast in the SAC update, the ensemble's fit and a whole run, on CPU (bf16
autocast runs on any x86 CPU; without bfloat16 units it is emulated and only slower)."""
from __future__ import annotations

import copy

import pytest
import torch

from mbpo_ray.agents.sac import SAC
from mbpo_ray.config import ConfigError, ModelConfig, SACConfig, make_config
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.precision import autocast, bf16_units, choose_precision
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train

CPU = torch.device("cpu")


def test_auto_picks_bf16_only_where_the_cpu_has_bf16_units():
    assert choose_precision("auto", CPU, flags=["sse2", "avx2", "fma"]) == "float32"
    assert choose_precision("auto", CPU, flags=["avx2", "avx512f", "avx512_bf16"]) == "bf16"
    assert choose_precision("auto", CPU, flags=["amx_tile", "amx_bf16"]) == "bf16"
    assert not bf16_units(CPU, flags=["avx512f", "avx512bw"])  # AVX-512 without BF16 is not enough
    assert choose_precision("float32", CPU, flags=["avx512_bf16"]) == "float32"
    assert choose_precision("bf16", CPU, flags=[]) == "bf16"


@pytest.mark.parametrize("overrides, message", [
    ({"precision": "fp16"}, "precision='fp16' is not allowed: one of float32, bf16, auto"),
    ({"precision": "bf16", "algo": "pets"}, "precision='bf16' is not allowed: float32 with algo pets"),
])
def test_bad_precision_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config("InvertedPendulum-v5", overrides)


def _batch(n=256, obs_dim=11, act_dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    act = torch.rand(n, act_dim, generator=g) * 2 - 1
    return obs, act, torch.randn(n, generator=g), obs + 0.1 * torch.randn(n, obs_dim, generator=g), torch.zeros(n)


# (Parameter and optimiser-state dtypes are not checked: autocast never changes them.)
def test_bf16_sac_update_moves_like_float32():
    torch.manual_seed(0)
    cfg = SACConfig()
    agent32 = SAC(11, 3, cfg, CPU)
    agent16 = copy.deepcopy(agent32)
    batch = _batch()
    torch.manual_seed(1)
    m32 = agent32.update(*batch)
    torch.manual_seed(1)  # the same policy noise for both
    with autocast(CPU, "bf16"):
        m16 = agent16.update(*batch)
    assert torch.isfinite(m16).all()
    # The matmuls ran in bf16 (the update is not float32's) ...
    moved = [(a - b).abs().max() for a, b in zip(agent16.parameters(), agent32.parameters())]
    assert max(moved) > 0
    # ... and it is the same step up to bf16 rounding: Adam's first step moves every weight by
    # lr * g / (|g| + eps), at most lr, in the direction of its gradient's sign; bf16 can flip
    # the sign only of near-zero gradients, so no weight ends further than 2 lr from float32's.
    assert max(moved) <= 2 * cfg.learning_rate * 1.001
    # the metrics (losses) agree to bf16's precision (8 mantissa bits: ~0.4 % per product; the
    # losses here are sums of many, whose rounding errors mostly cancel)
    assert torch.allclose(m16, m32, rtol=0.05, atol=0.05)


def test_bf16_ensemble_fit_reaches_the_float32_fit_on_a_noisy_linear_problem():
    # obs change = A [obs, act] + noise (std 0.1): both fits can reach the noise floor, MSE 0.01
    # per output; bf16 rounding (relative 2^-8 per product) is far below it. Many optimiser steps
    # run inside one autocast region here, as in a run's fit: stale bf16 copies of the weights
    # (autocast's cast cache) would leave the bf16 fit where it started (~1.5).
    g = torch.Generator().manual_seed(0)
    n, obs_dim, act_dim = 1000, 4, 2
    inputs = torch.randn(n, obs_dim + act_dim, generator=g)
    A = torch.randn(obs_dim + act_dim, 1 + obs_dim, generator=g) * 0.5
    targets = inputs @ A + 0.1 * torch.randn(n, 1 + obs_dim, generator=g)
    cfg = ModelConfig(num_members=4, num_elites=2, hidden_width=32, num_hidden_layers=2,
                      weight_decays=(1e-5, 1e-5, 1e-5), max_fit_epochs=30, learning_rate=3e-3)
    results = {}
    for precision in ("float32", "bf16"):
        torch.manual_seed(0)
        model = ProbabilisticEnsemble(obs_dim, act_dim, cfg)
        with autocast(CPU, precision):
            metrics = EnsembleTrainer(model, cfg).fit(inputs, targets)
            mean, logvar = model(inputs[:10])
        assert mean.dtype == torch.float32 and logvar.dtype == torch.float32  # the model casts its outputs back
        results[precision] = metrics["model/holdout_mse"]
    # the targets' variance is ~1.5 per output: a fit that learned nothing scores ~1.5; these 30
    # epochs reach about 0.02 (the noise floor is 0.01)
    assert results["float32"] < 0.05
    assert results["bf16"] < 0.05 and results["bf16"] < 2 * results["float32"]


def test_a_bf16_run_trains_with_finite_metrics(tiny_config, tmp_path):
    cfg = tiny_config(total_steps=400, precision="bf16")
    train(cfg, str(tmp_path))
    records = RunDirectory(tmp_path).read_metrics()
    assert records[-1]["env_steps"] == 400
    for key in ("train/q_loss", "model/holdout_mse", "rollout/transitions"):
        values = [r[key] for r in records if key in r]
        assert values and all(v == v and abs(v) != float("inf") for v in values), key
    assert RunDirectory(tmp_path).load_config().precision == "bf16"
