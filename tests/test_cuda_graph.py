"""The graphed training steps (`sac.cuda_graph`, `model.cuda_graph`, issue 13;
mbpo_ray/cuda_graph.py). On a CPU nothing is captured, but every other part runs: the static
inputs, the warm-up steps and the restore of the state they changed, the recapture after a
checkpoint load. So a graphed learner must take exactly the eager learner's steps (bit for bit:
both run the same kernels on the same machine); a restore that missed a tensor (a parameter, an
Adam moment, a step count, the target critics) would show as a difference. The last test checks
what capture itself needs and a CPU cannot: that no graphed step reads a value on the host."""
from __future__ import annotations

import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mbpo_ray.agents.sac import SAC
from mbpo_ray.agents.stacked import StackedUpdate
from mbpo_ray.config import ModelConfig, SACConfig
from mbpo_ray.cuda_graph import WARMUP_STEPS, GraphedStep
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.stacked_fit import StackedFit, _Stack
from helpers import toy_fit_data, toy_trainer

pytestmark = pytest.mark.usefixtures("single_thread")
CPU = torch.device("cpu")


def _batches(n, seed, batch=32, obs_dim=4, act_dim=2):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, obs_dim, generator=g), torch.rand(batch, act_dim, generator=g) * 2 - 1,
             torch.randn(batch, generator=g), torch.randn(batch, obs_dim, generator=g),
             (torch.rand(batch, generator=g) < 0.2).float()) for _ in range(n)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _adam_tensors(optimizer_state: dict) -> dict:
    """An optimiser's ``state_dict()`` as {"<param>.<key>": tensor}."""
    return {f"{i}.{k}": v for i, st in optimizer_state["state"].items() for k, v in st.items()}


def test_graphed_step_warms_up_then_restores_the_state():
    """A step that Adam-trains a linear layer: the graphed path runs the warm-up steps (counted)
    and still ends where the eager steps end; the Adam state that the warm-up created is fresh
    again (zeros) before the first real step."""
    data = [(torch.randn(8, 3, generator=torch.Generator().manual_seed(i)),) for i in range(5)]
    results = []
    for graphed in (False, True):
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
        calls = []

        def step(x):
            calls.append(1)
            loss = (layer(x) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = GraphedStep(step, lambda: list(layer.parameters()), [optimizer]) if graphed else step
        losses = torch.stack([run(*d) for d in data])
        results.append((losses, dict(layer.state_dict()), _adam_tensors(optimizer.state_dict())))
        assert len(calls) == len(data) + (WARMUP_STEPS if graphed else 0)
    (eager_losses, eager_w, eager_adam), (graph_losses, graph_w, graph_adam) = results
    assert torch.equal(graph_losses, eager_losses)
    assert _same(graph_w, eager_w) and _same(graph_adam, eager_adam)
    assert float(graph_adam["0.step"]) == len(data)  # not len(data) + WARMUP_STEPS
    assert len(set(eager_losses.tolist())) == len(data)  # the steps did change the layer


def test_graphed_sac_update_equals_the_eager_update_across_a_checkpoint_load():
    batches = _batches(8, seed=1)
    runs = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        agent = SAC(4, 2, SACConfig(hidden_width=32, batch_size=32, cuda_graph=graphed), CPU)
        metrics = [agent.update(*b) for b in batches[:4]]
        saved = agent.full_state_dict()
        torch.manual_seed(1)  # another learner's steps in between, then back to the checkpoint
        for b in batches[4:6]:
            agent.update(*b)
        agent.load_full_state_dict(saved)
        torch.manual_seed(2)
        metrics += [agent.update(*b) for b in batches[4:]]
        runs[graphed] = (torch.stack(metrics), agent.full_state_dict())
        if graphed:
            assert agent._graphed.captures == 2  # captured again after the load
    (eager_metrics, eager_state), (graph_metrics, graph_state) = runs[False], runs[True]
    assert torch.equal(graph_metrics, eager_metrics)
    assert _same(graph_state["module"], eager_state["module"])  # policy, critics, targets, alpha
    assert _same(_adam_tensors(graph_state["optimizer"]), _adam_tensors(eager_state["optimizer"]))
    assert not graph_state["optimizer"]["param_groups"][0]["capturable"]  # loads on any device


def test_graphed_ensemble_fit_equals_the_eager_fit():
    inputs, targets = toy_fit_data()
    results = {}
    for graphed in (False, True):
        trainer = toy_trainer(cuda_graph=graphed)
        stats = [trainer.fit(inputs, targets) for _ in range(2)]  # 480 training rows: batches of 64 and a last 32
        for s in stats:
            s.pop("model/fit_seconds")
        results[graphed] = (stats, dict(trainer.model.state_dict()), _adam_tensors(trainer.optimizer.state_dict()))
        if graphed:
            assert trainer._graphed.captures == 1
    assert results[True][0] == results[False][0]
    assert _same(results[True][1], results[False][1]) and _same(results[True][2], results[False][2])
    assert results[False][0][1]["model/holdout_mse"] < results[False][0][0]["model/holdout_mse"]  # it learned


def test_graphed_stacked_update_equals_the_eager_one():
    runs = {}
    for graphed in (False, True):
        agents = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            agents.append(SAC(4, 2, SACConfig(hidden_width=32, batch_size=32, cuda_graph=graphed), CPU))
        stacked = StackedUpdate(agents)
        g = torch.Generator().manual_seed(4)
        metrics = [stacked.update(_batches(2, seed=10 + u), [torch.randn(2, 32, 2, generator=g) for _ in agents])
                   for u in range(5)]
        stacked.save_to_agents()
        runs[graphed] = (torch.stack(metrics), [a.full_state_dict() for a in agents])
    assert torch.equal(runs[True][0], runs[False][0])
    for a, b in zip(runs[True][1], runs[False][1]):
        assert _same(a["module"], b["module"]) and _same(_adam_tensors(a["optimizer"]), _adam_tensors(b["optimizer"]))


def test_graphed_stacked_fit_equals_the_eager_one():
    """Seeds that stop at different epochs leave the stack: the graph is captured anew for the
    smaller stack and the fits still end as the eager ones."""
    g = torch.Generator().manual_seed(5)
    data = []
    for i in range(3):
        x = torch.randn(300, 6, generator=g)
        signal = torch.tanh(x @ torch.randn(6, 5, generator=g)) if i else torch.zeros(300, 5)
        data.append((x, signal + (0.01 if i else 1.0) * torch.randn(300, 5, generator=g)))
    runs = {}
    for graphed in (False, True):
        cfg = ModelConfig(num_members=4, num_elites=2, hidden_width=32, num_hidden_layers=2, batch_size=64,
                          weight_decays=(2.5e-5, 5e-5, 1e-4), early_stop_patience=3, max_fit_epochs=12,
                          cuda_graph=graphed)
        trainers = []
        for seed in range(3):
            torch.manual_seed(seed)
            trainers.append(EnsembleTrainer(ProbabilisticEnsemble(4, 2, cfg), cfg))
        torch.manual_seed(7)
        stats = StackedFit(trainers).fit(data)
        for s in stats:
            s.pop("model/fit_seconds")
        runs[graphed] = (stats, [dict(t.model.state_dict()) for t in trainers])
    assert runs[True][0] == runs[False][0]
    assert len({s["model/epochs"] for s in runs[False][0]}) > 1  # a seed left the stack early
    assert all(_same(a, b) for a, b in zip(runs[True][1], runs[False][1]))


def test_a_run_with_graphed_steps_equals_the_eager_run(tiny_config, tmp_path):
    """The switches end to end: an MBPO run with both steps graphed is the eager run, metric for
    metric (wall-clock keys aside), and ends with the same learner and model; so is an eager run
    resumed with the graphs switched on."""
    from helpers import assert_states_equal, comparable
    from mbpo_ray.run_dir import RunDirectory
    from mbpo_ray.train import train

    def config(graphed):
        return tiny_config(**{"sac.cuda_graph": graphed, "model.cuda_graph": graphed})

    runs = []
    for name, graphed in (("eager", False), ("graphed", True)):
        train(config(graphed), str(tmp_path / name), progress=False)
        runs.append(RunDirectory(tmp_path / name))
    # an eager run stopped mid-way and resumed with the graphs on (--resume may switch them)
    train(config(False), str(tmp_path / "switched"), progress=False, stop_at=350)
    train(config(True), str(tmp_path / "switched"), resume=True, progress=False)
    runs.append(RunDirectory(tmp_path / "switched"))
    eager, graphed, switched = (comparable(r.read_metrics()) for r in runs)
    assert len(eager) == 3 and graphed == eager and switched == eager
    for run in runs[1:]:
        assert_states_equal(run.load_checkpoint()["algorithm"]["runtime"],
                            runs[0].load_checkpoint()["algorithm"]["runtime"])


# What a CUDA graph cannot hold: reading a value on the host (a sync, refused while capturing), a
# tensor made from host data (a host-to-device copy), an output whose shape depends on the data.
HOST_READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy", "nonzero",
              "masked_select", "unique", "tensor"}


class _NoHostReads(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            raise AssertionError(f"{name} inside a step meant for a CUDA graph")
        return func(*args, **(kwargs or {}))


def test_the_graphed_steps_never_read_the_host():
    """The capture rule that a CPU cannot enforce (nothing is captured here), checked on the
    Python calls of each graphed step: SAC's, the fit's, the stacked update's, the stacked fit's
    (each run once eagerly first, so that Adam's lazy state exists, as at a capture)."""
    batch = _batches(1, seed=3)[0]
    agent = SAC(4, 2, SACConfig(hidden_width=32, batch_size=32), CPU)
    noise = agent.draw_noise(32)
    trainer = toy_trainer()
    inputs, targets = torch.randn(3, 64, 5), torch.randn(3, 64, 4)
    stacked = StackedUpdate([SAC(4, 2, SACConfig(hidden_width=32, batch_size=32), CPU) for _ in range(2)])
    columns, noises = [torch.stack([t, t]) for t in batch], torch.stack([noise, noise])
    trainers = [toy_trainer(), toy_trainer()]
    fit = StackedFit(trainers)
    stack = _Stack(fit, trainers)
    steps = [lambda: agent._step(*batch, noise), lambda: trainer._step(inputs, targets),
             lambda: stacked._step(*columns, noises),
             lambda: fit._step(stack, torch.stack([inputs, inputs]), torch.stack([targets, targets]))]
    for step in steps:
        step()
        with _NoHostReads():
            step()
    with pytest.raises(AssertionError, match="item"):  # the guard does catch a host read
        with _NoHostReads():
            trainer._step(inputs, targets).item()


class _CountHostReads(TorchFunctionMode):
    """Counts host reads by the mbpo_ray function they happen in (the innermost frame of the
    package on the stack), and those made anywhere below ``LocalRuntime.update_agent``."""

    def __init__(self):
        super().__init__()
        self.by_function, self.in_updates = {}, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS - {"tensor"}:
            frames = [f for f in traceback.extract_stack()[:-1] if "mbpo_ray" in f.filename]
            if frames:
                self.by_function[frames[-1].name] = self.by_function.get(frames[-1].name, 0) + 1
                self.in_updates += any(f.name == "update_agent" for f in frames)
        return func(*args, **(kwargs or {}))


def test_a_learning_env_step_reads_the_host_once(tiny_config, tmp_path):
    """The GPU-resident loop's rule (docs/architecture.md#speed-rules), counted on a CPU run: the G
    SAC updates of an env step never read a value on the host; a learning env step reads the
    policy's action once (the simulator runs on the host); the other reads belong to the model
    fit's early stopping, the rollouts' bookkeeping, evaluation, logging and checkpoints, each of
    which runs once per many env steps."""
    from mbpo_ray.train import train

    cfg = tiny_config(total_steps=400)  # 200 random steps, then 200 learning steps
    with _CountHostReads() as reads:
        train(cfg, str(tmp_path / "run"), progress=False)
    assert reads.in_updates == 0, reads.by_function
    # the action of each learning step: one .cpu() and one .numpy()
    assert reads.by_function["env_step"] == 2 * (cfg.total_steps - cfg.mbpo.init_random_steps)
