"""The written-out SAC update (mbpo_ray.agents.sac_update, issue 25) against autograd on SAC's
losses in their plain form (tests/sac_reference.py): the same gradients, metrics and step.

Tolerance: the two compute the same sums in other orders (a matmul's blocking, the fused
backward of tanh and softplus against 2 tanh), a difference of a few float32 ulps per operation,
~1e-6 of a gradient's scale after the three layers; a wrong term (a missed mask, a detach, the
wrong noise, the other critic) moves a gradient by far more than 1e-4 of its scale."""
from __future__ import annotations

import copy

import pytest
import torch

from mbpo_ray.agents import SAC
from mbpo_ray.agents.actor_critic import LOG_STD_MAX
from mbpo_ray.agents.sac_update import parameter_names, sac_gradients
from mbpo_ray.config import SACConfig
from mbpo_ray.precision import autocast
from sac_reference import autograd_gradients

CPU = torch.device("cpu")
RTOL = 1e-4

pytestmark = pytest.mark.usefixtures("single_thread")


def make_agent(obs_dim=5, act_dim=3, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = SACConfig(**{"hidden_width": 32, "num_hidden_layers": 2, **kw})
    return SAC(obs_dim, act_dim, cfg, CPU)


def random_batch(agent, n=48, seed=0, done_rate=0.3):
    g = torch.Generator().manual_seed(seed)
    batch = (torch.randn(n, agent.obs_dim, generator=g), torch.rand(n, agent.act_dim, generator=g) * 2 - 1,
             torch.randn(n, generator=g), torch.randn(n, agent.obs_dim, generator=g),
             (torch.rand(n, generator=g) < done_rate).float())
    noise = torch.randn(2, n, agent.act_dim, generator=g)
    return batch, noise


def close(got: torch.Tensor, want: torch.Tensor, rtol: float = RTOL) -> bool:
    return bool((got - want).abs().max() <= rtol * want.abs().max().clamp_min(1e-6))


def written_out(agent, batch, noise, subset=None):
    names, target_names = parameter_names(agent.sac_cfg.num_hidden_layers + 1, agent.sac_cfg.num_hidden_layers + 1)
    named = dict(agent.named_parameters())
    with torch.no_grad():
        grads, metrics = sac_gradients({n: named[n].unsqueeze(0) for n in names},
                                       {n: named[n].unsqueeze(0) for n in target_names},
                                       agent.target_entropy.unsqueeze(0), *(t.unsqueeze(0) for t in batch),
                                       noise.unsqueeze(0), agent.cfg.discount,
                                       None if subset is None else subset.unsqueeze(0), **agent.gradient_options())
    return {n: g[0] for n, g in grads.items()}, metrics[0]


@pytest.mark.parametrize("layers,act_dim", [(2, 3), (1, 1), (3, 2)])
def test_gradients_equal_autograd_on_random_batches(layers, act_dim):
    agent = make_agent(act_dim=act_dim, num_hidden_layers=layers, seed=layers)
    with torch.no_grad():  # a trained-looking temperature and critics that disagree
        agent.log_alpha.fill_(-1.3)
        for p in agent.q_target.parameters():
            p.mul_(1.5)
    for seed in range(3):
        batch, noise = random_batch(agent, seed=seed)
        want, want_metrics = autograd_gradients(agent, batch, noise)
        got, metrics = written_out(agent, batch, noise)
        assert sorted(got) == sorted(want)  # every trained tensor, none of the targets'
        for name in want:
            assert got[name].shape == want[name].shape, name
            assert close(got[name], want[name]), (name, (got[name] - want[name]).abs().max())
        assert close(metrics, want_metrics), (metrics, want_metrics)


def test_a_clamped_log_std_passes_no_gradient_as_in_autograd():
    agent = make_agent()
    with torch.no_grad():  # half the policy's log-std outputs far above LOG_STD_MAX
        agent.policy.net[-1].bias[agent.act_dim:agent.act_dim + 2] = LOG_STD_MAX + 50
    batch, noise = random_batch(agent)
    want, _ = autograd_gradients(agent, batch, noise)
    got, _ = written_out(agent, batch, noise)
    last = "policy.net.4.bias"
    assert (want[last][agent.act_dim:agent.act_dim + 2] == 0).all()  # the clamp's rows: no gradient
    assert close(got[last], want[last]) and close(got["policy.net.4.weight"], want["policy.net.4.weight"])


def test_seeds_stacked_get_each_their_own_gradients():
    agents = [make_agent(seed=s) for s in range(3)]
    data = [random_batch(a, seed=10 + i) for i, a in enumerate(agents)]
    names, target_names = parameter_names(3, 3)
    tables = [dict(a.named_parameters()) for a in agents]
    with torch.no_grad():
        grads, metrics = sac_gradients(
            {n: torch.stack([t[n] for t in tables]) for n in names},
            {n: torch.stack([t[n] for t in tables]) for n in target_names},
            torch.stack([a.target_entropy for a in agents]),
            *(torch.stack([d[0][k] for d in data]) for k in range(5)), torch.stack([d[1] for d in data]),
            agents[0].cfg.discount)
    for i, (agent, (batch, noise)) in enumerate(zip(agents, data)):
        want, want_metrics = autograd_gradients(agent, batch, noise)
        assert close(metrics[i], want_metrics)
        assert all(close(grads[n][i], want[n]) for n in names), i


def test_one_update_equals_the_autograd_update():
    """SAC.update's step (gradients into .grad, Adam, the target lerp) against autograd's
    gradients through the same Adam and lerp, over five steps."""
    agent = make_agent()
    reference = copy.deepcopy(agent)
    reference.optimizer = torch.optim.Adam(reference.agent_parameters(), lr=agent.sac_cfg.learning_rate)
    ref_q, ref_target = list(reference.q.parameters()), list(reference.q_target.parameters())
    for seed in range(5):
        batch, noise = random_batch(agent, seed=seed)
        metrics = agent._step(*batch, noise)
        _, want_metrics = autograd_gradients(reference, batch, noise)
        reference.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ref_target, ref_q, agent.sac_cfg.tau)
        assert close(metrics, want_metrics), seed
        for (name, p), q in zip(agent.named_parameters(), reference.parameters()):
            # Adam's first steps move a weight by about lr * sign(gradient): where a gradient is
            # ~0 its sign is float noise, so allow that one step on a few weights
            off = (p - q).abs()
            assert off.max() <= 2.5 * agent.sac_cfg.learning_rate, name
            assert (off > 1e-6).float().mean() <= 0.01, (name, seed)
    fresh = make_agent()
    assert not torch.equal(fresh.q.weights[0], agent.q.weights[0])  # it did train


@pytest.mark.parametrize("options", [{}, {"critic_layer_norm": True, "policy_layer_norm": True},
                                     {"num_critics": 5, "critic_subset": 2}])
def test_bf16_autocast_gradients_follow_autograd_under_autocast(options):
    """precision: bf16 runs the matmuls of both forms in bfloat16: their gradients agree to bf16's
    resolution (2^-8 relative), far from float32's (the check would also pass for float32); also
    with the MBPO+ LayerNorms (computed in float32 in both) and REDQ."""
    agent = make_agent(**options)
    batch, noise = random_batch(agent, n=64)
    torch.manual_seed(0)
    subset = agent.draw_subset()
    with autocast(CPU, "bf16"):
        want, _ = autograd_gradients(agent, batch, noise, subset)
        got, metrics = written_out(agent, batch, noise, subset)
    assert metrics.dtype == torch.float32 and all(g.dtype == torch.float32 for g in got.values())
    for name in want:
        assert close(got[name], want[name], rtol=3e-2), (name, (got[name] - want[name]).abs().max())


# MBPO+ (docs/mbpo_plus.md#critic-normalisation): the LayerNorms' backward and REDQ's target and
# policy loss, each against autograd on the modules' own forward (F.layer_norm, the subset's min).
@pytest.mark.parametrize("options", [
    {"critic_layer_norm": True}, {"policy_layer_norm": True},
    {"critic_layer_norm": True, "policy_layer_norm": True, "num_hidden_layers": 3},
    {"num_critics": 5, "critic_subset": 2}, {"num_critics": 4, "critic_subset": 4},
    {"num_critics": 6, "critic_subset": 3, "critic_layer_norm": True}])
def test_mbpo_plus_options_gradients_equal_autograd(options):
    agent = make_agent(seed=4, **options)
    with torch.no_grad():
        agent.log_alpha.fill_(-1.3)
        for p in agent.q_target.parameters():
            p.mul_(1.5)
    for seed in range(3):
        batch, noise = random_batch(agent, seed=seed)
        torch.manual_seed(seed)
        subset = agent.draw_subset()
        assert (subset is None) == (agent.sac_cfg.critic_subset == agent.sac_cfg.num_critics)
        want, want_metrics = autograd_gradients(agent, batch, noise, subset)
        got, metrics = written_out(agent, batch, noise, subset)
        assert sorted(got) == sorted(want)
        for name in want:
            assert close(got[name], want[name]), (name, options, (got[name] - want[name]).abs().max())
        assert close(metrics, want_metrics), (metrics, want_metrics)


def test_the_options_change_what_they_name():
    """Fails if an option is ignored: LayerNorm changes the critics' and the policy's outputs;
    REDQ's target is the min over the drawn subset only, and its policy loss the critics' mean."""
    batch, noise = random_batch(make_agent(), seed=5)
    plain, _ = written_out(make_agent(seed=1), batch, noise)
    for option, name in (("critic_layer_norm", "q.weights.0"), ("policy_layer_norm", "policy.net.0.weight")):
        normed, _ = written_out(make_agent(seed=1, **{option: True}), batch, noise)
        assert not close(normed[name], plain[name], rtol=1e-2), option
    agent = make_agent(seed=2, num_critics=5, critic_subset=2)
    with torch.no_grad():  # critic m outputs about 10 m: the target's min is the subset's smallest
        for m in range(5):
            agent.q_target.biases[-1][m].fill_(10.0 * m)
            agent.q_target.weights[-1][m].zero_()
    subset = torch.tensor([False, False, True, False, True])
    _, metrics = written_out(agent, batch, noise, subset)
    obs, act, rew, next_obs, done = batch
    alpha = agent.log_alpha.exp()
    with torch.no_grad():
        _, next_logp = agent.policy(next_obs, noise[0])
        y = rew + agent.cfg.discount * (1 - done) * (20.0 - alpha * next_logp)  # critic 2's 20, not critic 0's 0
        q = agent.q(torch.cat([obs, act], -1)).squeeze(-1)
    assert torch.allclose(metrics[0], 0.5 * ((q - y) ** 2).mean(1).sum(), rtol=1e-5)
    assert agent.policy_q_reduction == "mean"
    counts = torch.zeros(5)
    torch.manual_seed(0)
    for _ in range(500):
        drawn = agent.draw_subset()
        assert int(drawn.sum()) == 2
        counts += drawn
    assert (counts > 150).all()  # each critic in about 2/5 of the draws (200 expected)
