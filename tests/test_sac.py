"""SAC with automatic temperature and the tanh-Gaussian policy."""
from __future__ import annotations

import sys

import pytest
import torch

from mbpo_ray.agents import SAC, TanhGaussianPolicy
from mbpo_ray.agents.sac import METRIC_NAMES
from mbpo_ray.config import SACConfig
from mbpo_ray.nn import StackedMLP

OBS, ACT = 4, 2
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


def make_sac(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(hidden_width=32, num_hidden_layers=2)
    base.update(kw)
    return SAC(OBS, ACT, SACConfig(**base), CPU)


def batch(n=64, seed=0, obs_dim=OBS, act_dim=ACT):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    act = torch.rand(n, act_dim, generator=g) * 2 - 1
    rew = torch.randn(n, generator=g)
    next_obs = torch.randn(n, obs_dim, generator=g)
    done = (torch.rand(n, generator=g) < 0.2).float()
    return obs, act, rew, next_obs, done


# --- policy --------------------------------------------------------------------------------------

def test_policy_actions_bounded_even_for_large_outputs():
    torch.manual_seed(0)
    policy = TanhGaussianPolicy(OBS, ACT, 32, 2)
    obs = torch.randn(500, OBS) * 100  # huge pre-activations
    act, logp = policy(obs)
    assert act.shape == (500, ACT) and logp.shape == (500,)
    assert (act.abs() <= 1).all() and torch.isfinite(logp).all()
    assert (policy.act(obs).abs() <= 1).all()


def test_policy_log_prob_matches_torch_distributions():
    torch.manual_seed(1)
    policy = TanhGaussianPolicy(OBS, ACT, 32, 2).double()
    with torch.no_grad():  # keep pre-tanh values moderate so atanh(action) is well conditioned
        policy.net[-1].weight.mul_(0.3)
    obs = torch.randn(400, OBS, dtype=torch.float64)
    act, logp = policy(obs)
    mean, log_std = policy.net(obs).chunk(2, dim=-1)
    std = log_std.clamp(-20, 2).exp()
    u = torch.atanh(act)
    assert u.abs().max() < 3.5
    dist = torch.distributions.Normal(mean, std)
    expected = (dist.log_prob(u) - torch.log(1 - torch.tanh(u) ** 2 + 1e-12)).sum(-1)
    assert torch.allclose(logp, expected, atol=1e-5, rtol=1e-6)
    # The log-prob is differentiable in the policy parameters (reparameterised sample).
    logp.sum().backward()
    assert all(p.grad is not None for p in policy.parameters())


def test_policy_deterministic_act_is_tanh_of_mean():
    torch.manual_seed(2)
    policy = TanhGaussianPolicy(OBS, ACT, 32, 2)
    obs = torch.randn(50, OBS)
    mean, _ = policy.net(obs).chunk(2, dim=-1)
    det = policy.act(obs, deterministic=True)
    assert torch.allclose(det, torch.tanh(mean), atol=1e-7)
    assert torch.equal(det, policy.act(obs, deterministic=True))  # no noise
    assert not torch.equal(policy.act(obs), policy.act(obs))  # stochastic act samples


# --- SAC update ----------------------------------------------------------------------------------

def test_twin_q_is_one_stacked_mlp_with_two_members():
    sac = make_sac()
    assert isinstance(sac.q, StackedMLP) and sac.q.num_members == 2
    assert isinstance(sac.q_target, StackedMLP) and sac.q_target.num_members == 2
    assert sac.q.weights[0].shape == (2, OBS + ACT, 32)
    assert not torch.equal(sac.q.weights[0][0], sac.q.weights[0][1])  # independent critics
    assert all(not p.requires_grad for p in sac.q_target.parameters())
    for p, t in zip(sac.q.parameters(), sac.q_target.parameters()):
        assert torch.equal(p, t) and p.data_ptr() != t.data_ptr()
    assert sac.log_alpha.item() == 0.0
    assert sac.target_entropy.item() == -float(ACT)  # default: -action_dim


def test_update_returns_metric_tensor_without_host_sync(monkeypatch):
    sac = make_sac()

    def guard(name):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if "mbpo_ray" in caller:
                raise AssertionError(f"Tensor.{name} called from {caller}")
            return orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapped)

    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu"):
        guard(name)
    metrics = sac.update(*batch())
    monkeypatch.undo()
    assert isinstance(metrics, torch.Tensor)
    assert metrics.dim() == 1 and metrics.shape[0] == len(METRIC_NAMES)
    assert not metrics.requires_grad and torch.isfinite(metrics).all()
    d = SAC.metrics_to_dict(metrics)
    assert list(d) == list(METRIC_NAMES)
    assert d["train/alpha"] == pytest.approx(1.0)  # alpha before the step: exp(0)


def test_target_network_moves_by_tau():
    sac = make_sac(tau=0.005)
    with torch.no_grad():  # make online and target differ before the update
        for p in sac.q_target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    target_before = [p.detach().clone() for p in sac.q_target.parameters()]
    online_before = [p.detach().clone() for p in sac.q.parameters()]
    sac.update(*batch())
    for tb, ob, p, t in zip(target_before, online_before, sac.q.parameters(), sac.q_target.parameters()):
        assert not torch.equal(p, ob)  # the online critic took a step
        post = torch.lerp(tb, p.detach(), 0.005)  # toward the *post-step* online params
        pre = torch.lerp(tb, ob, 0.005)
        assert torch.allclose(t, post, atol=1e-8, rtol=1e-6)
        # and not toward the pre-step params (they differ by 0.005 * the step, ~1e-6)
        assert (t - pre).abs().max() > 10 * (t - post).abs().max()


def test_gradient_step_changes_policy_q_and_alpha():
    sac = make_sac()
    policy0 = [p.detach().clone() for p in sac.policy.parameters()]
    q0 = [p.detach().clone() for p in sac.q.parameters()]
    alpha0 = sac.log_alpha.detach().clone()
    sac.update(*batch())
    assert any(not torch.equal(a, b) for a, b in zip(policy0, sac.policy.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(q0, sac.q.weights))
    assert not torch.equal(alpha0, sac.log_alpha.detach())
    for p in [*sac.policy.parameters(), *sac.q.parameters(), sac.log_alpha]:
        assert torch.isfinite(p).all()


@pytest.mark.parametrize("target_entropy, direction", [(-100.0, -1), (100.0, +1)])
def test_temperature_follows_entropy_target(target_entropy, direction):
    sac = make_sac(target_entropy=target_entropy)
    assert sac.target_entropy.item() == target_entropy
    values = [sac.log_alpha.item()]
    for i in range(5):
        sac.update(*batch(seed=i))
        values.append(sac.log_alpha.item())
    steps = [b - a for a, b in zip(values[:-1], values[1:])]
    assert all(direction * s > 0 for s in steps)
    # Adam moves log_alpha by about lr per step when the gradient sign is constant.
    assert direction * (values[-1] - values[0]) == pytest.approx(5 * 3e-4, rel=0.2)


def test_sac_learns_a_one_step_bandit():
    """reward = -(a - 0.5)^2, done everywhere: Q(s, a) = reward, the best action is 0.5.

    Tolerance: the deterministic action starts at ~0 (|a - 0.5| ~ 0.44 on average here).
    Q only has to fit a parabola in a, which 300 updates at lr 3e-3 do well. What remains is
    the entropy bonus: alpha is still ~0.4 after 300 updates, and the tanh log-det term of the
    entropy rewards pre-tanh values near 0, which pulls tanh(mean) somewhat below 0.5 (in
    seeds 0-5 we saw |a - 0.5| <= 0.09 for every state). |a - 0.5| < 0.15 for every state
    allows for that bias while ruling out both the initial policy and a saturated one (|a| = 1).
    """
    torch.manual_seed(0)
    sac = SAC(3, 1, SACConfig(hidden_width=32, num_hidden_layers=2, learning_rate=3e-3,
                              target_entropy=-1.0), CPU)
    obs = torch.randn(128, 3)
    start = sac.policy.act(obs, deterministic=True)
    assert (start - 0.5).abs().mean() > 0.25
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        act = torch.rand(128, 1, generator=g) * 2 - 1
        rew = -(act[:, 0] - 0.5) ** 2
        sac.update(obs, act, rew, obs, torch.ones(128))
    det = sac.policy.act(obs, deterministic=True)
    assert (det - 0.5).abs().max() < 0.15
    assert (det - 0.5).abs().mean() < (start - 0.5).abs().mean() / 3
    # Q has learned the reward curve inside the data (the edge a = 1 is fitted less well).
    with torch.no_grad():
        q = lambda a: sac.q(torch.cat([obs, torch.full((128, 1), a)], -1)).min(0).values
        assert (q(0.5) > q(0.0)).all() and (q(0.0) > q(-0.5)).all()
        assert (q(-0.5) + 1.0).abs().max() < 0.2  # true value -1


def test_sac_losses_and_target_average_by_hand():
    """The update's arithmetic against numbers computed here from the formulas (Haarnoja et al.
    2018; docs/hyperparameters.md): networks whose outputs are constants (zero weights, chosen
    biases), so every term is known: the TD target with done = 0 and 1, gamma, the entropy term
    alpha log pi(a'|s') with the tanh correction, the min over the two target critics, and the
    Polyak average of the target critics after the step."""
    import math

    gamma, tau, alpha, mean, log_std = 0.9, 0.25, 0.5, 0.3, -0.5
    agent = make_sac(discount=gamma, tau=tau, init_log_alpha=math.log(alpha))
    q_online, q_target = (1.0, 2.0), (4.0, 3.0)
    with torch.no_grad():
        for p in [*agent.policy.parameters(), *agent.q.parameters(), *agent.q_target.parameters()]:
            p.zero_()
        last = agent.policy.net[-1].bias
        last[:ACT], last[ACT:] = mean, log_std
        for net, values in ((agent.q, q_online), (agent.q_target, q_target)):
            net.biases[-1][:, 0, 0] = torch.tensor(values)
    obs, act = torch.randn(2, OBS), torch.rand(2, ACT) * 2 - 1
    rew, done = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    noise = torch.tensor([[[0.5, -1.0], [2.0, 0.1]], [[-0.3, 0.7], [1.2, -1.5]]])  # [2, B, A]

    def log_pi(n):  # log N(u; mean, std) - log(1 - tanh(u)^2), per sample, summed over dims
        total = 0.0
        for z in n:
            u = mean + math.exp(log_std) * z
            total += -0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(u) ** 2)
        return total

    next_q = min(q_target)
    targets = [r + gamma * (1 - d) * (next_q - alpha * log_pi(n.tolist()))
               for r, d, n in zip(rew.tolist(), done.tolist(), noise[0])]
    assert targets[1] == -2.0  # done: the reward alone
    q_loss = 0.5 * sum(sum((q - t) ** 2 for t in targets) / 2 for q in q_online)
    logp = [log_pi(n.tolist()) for n in noise[1]]
    policy_loss = sum(alpha * lp - min(q_online) for lp in logp) / 2
    alpha_loss = -sum(math.log(alpha) * (lp - ACT) for lp in logp) / 2  # target entropy -|A|
    expected = [q_loss, policy_loss, alpha_loss, alpha, -sum(logp) / 2, sum(q_online) / 2]
    # the step's metrics are the losses before it; after it: target <- (1 - tau) target + tau
    # online (the online critic just stepped)
    metrics = agent._step(obs, act, rew, torch.randn(2, OBS), done, noise)
    assert metrics.tolist() == pytest.approx(expected, rel=1e-5)
    # a mistake in any one term moves the loss by far more than the tolerance
    assert abs(q_loss - 0.5 * sum(sum((q - r) ** 2 for r in rew.tolist()) / 2 for q in q_online)) > 0.1
    online_after = agent.q.biases[-1][:, 0, 0].detach()
    assert not torch.equal(online_after, torch.tensor(q_online))
    averaged = (1 - tau) * torch.tensor(q_target) + tau * online_after
    assert torch.allclose(agent.q_target.biases[-1][:, 0, 0], averaged, atol=1e-6)
