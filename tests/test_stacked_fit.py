"""The stacked ensemble fit of a seed group (mbpo_ray.models.stacked_fit, issue 13,
docs/seed_groups.md): several seeds' fits as one, each seed ending its fit as it would alone."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from mbpo_ray.config import ModelConfig
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.stacked_fit import StackedFit
from mbpo_ray.precision import autocast

pytestmark = pytest.mark.usefixtures("single_thread")

OBS, ACT = 4, 2
# A stacked fit and separate fits differ by float32 rounding only (the batched kernels sum in
# another order, and the Adam bias corrections are tensors): ~1e-8 absolute per step on the
# weights here. Over a fit that grows but stays far below 1e-3 relative, while a real difference
# (another batch, another seed's data, a wrong Adam step) shows as O(1) (checked below).
RTOL = 1e-3


def cfg(**kw) -> ModelConfig:
    base = dict(num_members=4, num_elites=2, hidden_width=32, num_hidden_layers=2,
                weight_decays=(2.5e-5, 5e-5, 1e-4), early_stop_patience=3, max_fit_epochs=15)
    base.update(kw)
    return ModelConfig(**base)


def trainers(seeds, model_cfg):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(EnsembleTrainer(ProbabilisticEnsemble(OBS, ACT, model_cfg), model_cfg))
    return out


def datasets(n, count, generator):
    """Seed 0's targets are noise (its fit stops on patience after a few epochs); the other
    seeds' are a smooth map of the inputs (they keep improving up to ``max_fit_epochs``). Short
    fits: the float32 drift between stacked and separate stays far from any stopping decision."""
    out = []
    for i in range(count):
        x = torch.randn(n, OBS + ACT, generator=generator)
        w = torch.randn(OBS + ACT, OBS + 1, generator=generator)
        signal = torch.tanh(x @ w) if i else torch.zeros(n, OBS + 1)
        out.append((x, signal + (0.01 if i else 1.0) * torch.randn(n, OBS + 1, generator=generator)))
    return out


class Streams:
    """One global-torch random stream per seed (what a seed group's lanes are), so that a fit
    alone and the same fit stacked draw the same numbers."""

    def __init__(self, seeds):
        self.states = {}
        for seed in seeds:
            torch.manual_seed(1000 + seed)
            self.states[seed] = torch.get_rng_state()

    def stream(self, seed):
        @contextmanager
        def active():
            torch.set_rng_state(self.states[seed])
            try:
                yield
            finally:
                self.states[seed] = torch.get_rng_state()
        return active


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def fit_both(seeds, model_cfg, rounds, data_for_round):
    alone, stacked = trainers(seeds, model_cfg), trainers(seeds, model_cfg)
    alone_streams, stacked_streams = Streams(seeds), Streams(seeds)
    fit = StackedFit(stacked)
    metrics = []
    for r in range(rounds):
        data = data_for_round(r)
        one = []
        for seed, trainer, d in zip(seeds, alone, data):
            with alone_streams.stream(seed)():
                one.append(trainer.fit(*d))
        many = fit.fit(data, [stacked_streams.stream(s) for s in seeds])
        metrics.append((one, many))
    fit_both.last = fit
    return alone, stacked, metrics


def test_stacked_fit_ends_each_seed_as_its_fit_alone():
    seeds = [0, 1, 2]
    gen = torch.Generator().manual_seed(5)
    rounds = [datasets(300, 3, gen) for _ in range(2)]  # two fits: the second starts from the first's Adam state
    alone, stacked, metrics = fit_both(seeds, cfg(), 2, lambda r: rounds[r])
    epochs = set()
    for one, many in metrics:
        for a, b in zip(one, many):
            assert a["model/epochs"] == b["model/epochs"]
            assert a["model/num_train"] == b["model/num_train"] and a["model/fit_failed"] == b["model/fit_failed"] == 0
            for key in ("model/train_loss", "model/holdout_mse", "model/holdout_mse_all"):
                assert b[key] == pytest.approx(a[key], rel=RTOL), key
            epochs.add(a["model/epochs"])
    # the seeds stopped at different epochs: the case where a seed leaves the stack early
    assert len(epochs) > 1
    for a, b in zip(alone, stacked):
        for name, value in a.model.state_dict().items():
            if value.is_floating_point():
                assert rel_diff(b.model.state_dict()[name], value) < RTOL, name
            else:
                assert torch.equal(b.model.state_dict()[name], value), name  # the elites
        sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for j in sa:
            assert float(sa[j]["step"]) == float(sb[j]["step"])  # each seed's own Adam steps
            assert rel_diff(sb[j]["exp_avg_sq"], sa[j]["exp_avg_sq"]) < RTOL
    # the comparison can fail: two seeds' ensembles differ by far more than RTOL
    w = "net.weights.0"
    assert rel_diff(alone[0].model.state_dict()[w], alone[1].model.state_dict()[w]) > 0.1
    steps = {float(t.optimizer.state_dict()["state"][0]["step"]) for t in alone}
    assert len(steps) > 1


def test_the_stack_of_all_seeds_is_captured_once_per_run_and_state_is_written_in_place():
    """model.cuda_graph: the stacked step's graph is captured at the first fit and replayed by the
    later ones (before, each fit captured anew: 3 warm-up steps and a capture); the seeds' own
    optimiser state is written into the tensors it has, which a graph of a seed's single fit is
    bound to (before, they were replaced and that graph replayed on orphaned tensors)."""
    seeds = [0, 1, 2]
    gen = torch.Generator().manual_seed(7)
    # smooth targets for every seed and no early stop: all seeds stop together at max_fit_epochs
    rounds = [[(x, t) for x, t in datasets(200, 4, gen)[1:]] for _ in range(3)]
    model_cfg = cfg(cuda_graph=True, max_fit_epochs=3, early_stop_patience=100, batch_size=64)
    alone, stacked, metrics = fit_both(seeds, model_cfg, 1, lambda r: rounds[r])
    fit = fit_both.last
    tensors = {id(t) for trainer in stacked for state in trainer.optimizer.state.values()
               for t in state.values()}
    assert len(tensors) == 3 * len(fit.names) * 3
    fit.fit(rounds[1], None)
    fit.fit(rounds[2], None)
    assert fit.captures == 1
    assert tensors == {id(t) for trainer in stacked for state in trainer.optimizer.state.values()
                       for t in state.values()}
    # and the graphed stacked fit still ends each seed as its (graphed) fit alone
    for a, b in zip(*metrics[0]):
        assert a["model/epochs"] == b["model/epochs"] == 3
        assert b["model/holdout_mse"] == pytest.approx(a["model/holdout_mse"], rel=RTOL)


def test_a_failed_seed_fit_is_discarded_alone():
    """A seed whose fit goes non-finite keeps the weights it began with (model/fit_failed), as
    alone; the other seeds of the stack fit normally."""
    seeds = [0, 1]
    gen = torch.Generator().manual_seed(9)
    data = datasets(200, 2, gen)
    bad_inputs, bad_targets = data[0]
    bad_targets = bad_targets.clone()
    bad_targets[::7] = float("nan")
    data[0] = (bad_inputs, bad_targets)
    alone, stacked, metrics = fit_both(seeds, cfg(max_fit_epochs=6), 1, lambda r: data)
    (one, many), = metrics
    assert one[0]["model/fit_failed"] == many[0]["model/fit_failed"] == 1
    assert one[1]["model/fit_failed"] == many[1]["model/fit_failed"] == 0
    fresh = trainers(seeds, cfg(max_fit_epochs=6))
    for name, value in fresh[0].model.state_dict().items():
        assert torch.equal(stacked[0].model.state_dict()[name], value), name
    assert not stacked[0].optimizer.state  # no Adam step survives the failed fit
    w = "net.weights.0"
    assert rel_diff(stacked[1].model.state_dict()[w], alone[1].model.state_dict()[w]) < RTOL
    assert rel_diff(stacked[1].model.state_dict()[w], fresh[1].model.state_dict()[w]) > 1e-3


def test_stacked_fit_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one shape and one model config"):
        StackedFit(trainers([0], cfg()) + trainers([1], cfg(hidden_width=16)))
    fit = StackedFit(trainers([0, 1], cfg()))
    gen = torch.Generator().manual_seed(0)
    a, b = datasets(100, 1, gen)[0], datasets(120, 1, gen)[0]
    with pytest.raises(ValueError, match="same number of transitions"):
        fit.fit([a, b])


def test_stacked_fit_under_bf16_autocast_keeps_float32_state():
    """precision=bf16 runs a group's stacked fit under autocast (mbpo_ray.seed_group), as a single
    fit: the weights and Adam state stay float32, and the fit's numbers stay close to float32's."""
    data = datasets(600, 2, torch.Generator().manual_seed(2))
    model_cfg = cfg(max_fit_epochs=4, early_stop_patience=10)
    exact = StackedFit(trainers([0, 1], model_cfg)).fit(data)
    fit = StackedFit(trainers([0, 1], model_cfg))
    with autocast(torch.device("cpu"), "bf16"):
        half = fit.fit(data)
    for trainer in fit.trainers:
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        assert all(s["exp_avg"].dtype == torch.float32 for s in trainer.optimizer.state.values())
    # bf16 keeps 8 bits of mantissa (~0.4 % per rounding); after 4 epochs the holdout MSE moved by
    # ~1e-4 relative here, 5 % leaves room for other CPUs, while the two seeds' MSEs (their own
    # data) differ by ~50 %: mixing up seeds would fail.
    for a, b in zip(exact, half):
        assert b["model/fit_failed"] == 0
        assert b["model/holdout_mse"] == pytest.approx(a["model/holdout_mse"], rel=0.05)
    assert exact[0]["model/holdout_mse"] > 1.2 * exact[1]["model/holdout_mse"]
