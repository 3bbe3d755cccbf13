"""The k schedule and branched model rollouts (the MBPO paper, Algorithm 2; the schedules are in
docs/hyperparameters.md)."""
from __future__ import annotations

import pytest
import torch

from mbpo_ray.agents import TanhGaussianPolicy
from mbpo_ray.config import ModelConfig
from mbpo_ray.data import ReplayBuffer
from mbpo_ray.models import ModelEnv, ProbabilisticEnsemble
from mbpo_ray.models.rollout import branched_rollout, rollout_length

OBS, ACT, N = 3, 2, 64


pytestmark = pytest.mark.usefixtures("single_thread")


# --- k schedule --------------------------------------------------------------------------------

def test_rollout_length_hopper():
    sched = (20, 150, 1, 15)
    for epoch in range(0, 21):
        assert rollout_length(epoch, sched) == 1
    for epoch in (150, 151, 200, 10_000):
        assert rollout_length(epoch, sched) == 15
    assert rollout_length(85, sched) == int(1 + 65 / 130 * 14) == 8
    assert rollout_length(29, sched) == 1  # 1 + 9/130*14 = 1.97 rounds down
    assert rollout_length(30, sched) == 2  # 1 + 10/130*14 = 2.08
    ks = [rollout_length(e, sched) for e in range(0, 300)]
    assert ks == sorted(ks)  # non-decreasing


def test_rollout_length_other_presets():
    for epoch in range(0, 100):
        assert rollout_length(epoch, (1, 15, 1, 1)) == 1  # InvertedPendulum
        assert rollout_length(epoch, (20, 150, 1, 1)) == 1  # Walker2d / HalfCheetah
    ant = (20, 100, 1, 25)
    assert rollout_length(60, ant) == 13
    assert rollout_length(0, ant) == 1 and rollout_length(100, ant) == 25
    assert rollout_length(300, (20, 300, 1, 25)) == 25  # Humanoid


# --- branched rollouts ---------------------------------------------------------------------------

def make_model(num_members=5, num_elites=3, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(num_members=num_members, num_elites=num_elites, hidden_width=16,
                      num_hidden_layers=2, weight_decays=(1e-4, 1e-4, 1e-4))
    return ProbabilisticEnsemble(OBS, ACT, cfg)


def make_policy(seed=1):
    torch.manual_seed(seed)
    return TanhGaussianPolicy(OBS, ACT, 16, 2)


def terminate_all(obs, act, next_obs):
    return torch.ones(obs.shape[0], dtype=torch.bool)


def terminate_none(obs, act, next_obs):
    return torch.zeros(obs.shape[0], dtype=torch.bool)


def terminate_positive(obs, act, next_obs):
    return next_obs[:, 0] > 0


def fields(rows):
    o, a = OBS, ACT
    return rows[:, :o], rows[:, o:o + a], rows[:, o + a], rows[:, o + a + 1:2 * o + a + 1], rows[:, -1]


@pytest.mark.parametrize("k", [1, 5])
def test_terminate_everything_stops_after_one_step(k):
    model, policy = make_model(), make_policy()
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(2)
    m = branched_rollout(model, policy, torch.randn(N, OBS), k, terminate_all, buf)
    assert len(buf) == N and m["rollout/transitions"] == N
    assert m["rollout/steps_taken"] == 1 and m["rollout/k"] == k
    assert m["rollout/terminated_frac"] == 1.0 and m["rollout/nonfinite"] == 0
    assert (fields(buf.rows_in_order())[4] == 1.0).all()


def test_never_terminating_rollout_adds_n_times_k():
    model, policy = make_model(), make_policy()
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(3)
    start = torch.randn(N, OBS)
    m = branched_rollout(model, policy, start, 5, terminate_none, buf)
    assert len(buf) == N * 5 and m["rollout/transitions"] == N * 5
    assert m["rollout/steps_taken"] == 5 and m["rollout/start_states"] == N
    assert m["rollout/terminated_frac"] == 0.0 and m["rollout/model_buffer_size"] == N * 5
    rows = buf.rows_in_order()
    obs, act, rew, next_obs, done = fields(rows)
    assert torch.isfinite(rows).all()
    assert torch.equal(obs[:N], start)
    # Each step continues from the previous step's predicted next states.
    for s in range(4):
        assert torch.equal(obs[(s + 1) * N:(s + 2) * N], next_obs[s * N:(s + 1) * N])
    assert (act.abs() <= 1).all() and (done == 0).all()
    assert m["rollout/mean_reward"] == pytest.approx(rew.mean().item(), rel=1e-4, abs=1e-6)


def test_partial_termination_continues_only_live_rows():
    model, policy = make_model(), make_policy()
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(4)
    m = branched_rollout(model, policy, torch.randn(N, OBS), 4, terminate_positive, buf)
    rows = buf.rows_in_order()
    obs, act, rew, next_obs, done = fields(rows)
    assert m["rollout/transitions"] == len(buf)
    # Stored flags are exactly the termination function on the stored transitions.
    assert torch.equal(done.bool(), terminate_positive(obs, act, next_obs))
    # Walk the buffer step by step: step s+1 holds exactly the live next states of step s.
    pos, n, sizes = 0, N, []
    while pos < len(buf):
        sizes.append(n)
        chunk_done = done[pos:pos + n].bool()
        live_next = next_obs[pos:pos + n][~chunk_done]
        nxt = pos + n
        n = int((~chunk_done).sum())
        if nxt < len(buf):
            assert torch.equal(obs[nxt:nxt + n], live_next)
        pos = nxt
    assert pos == len(buf)
    assert len(sizes) == m["rollout/steps_taken"] >= 2
    assert sizes[0] == N and 0 < sizes[1] < N  # the test needs a real mix of outcomes
    assert m["rollout/terminated_frac"] == pytest.approx(done.mean().item())


def test_nonfinite_predictions_are_dropped_and_counted():
    # The only elite predicts a NaN reward: nothing is stored, every start state is counted.
    model, policy = make_model(num_elites=1), make_policy()
    with torch.no_grad():
        model.elite_idx.copy_(torch.tensor([2]))
        model.net.biases[-1][2][..., 0] = float("nan")
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(5)
    m = branched_rollout(model, policy, torch.randn(N, OBS), 3, terminate_none, buf)
    assert m["rollout/nonfinite"] == N and m["rollout/transitions"] == 0 and len(buf) == 0

    # Two elites, one of them broken: its rows are dropped, the other's are kept.
    model, policy = make_model(num_elites=2), make_policy()
    with torch.no_grad():
        model.elite_idx.copy_(torch.tensor([0, 2]))
        model.net.biases[-1][2][..., 1] = float("inf")  # next_obs[0] = +-inf or nan
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(6)
    m = branched_rollout(model, policy, torch.randn(N, OBS), 1, terminate_none, buf)
    assert m["rollout/nonfinite"] + m["rollout/transitions"] == N
    assert 0 < m["rollout/nonfinite"] < N
    assert torch.isfinite(buf.rows_in_order()).all() and len(buf) == m["rollout/transitions"]

    buf = ReplayBuffer(OBS, ACT, 10_000)
    m = branched_rollout(model, policy, torch.randn(N, OBS), 4, terminate_none, buf)
    assert m["rollout/nonfinite"] > 0 and torch.isfinite(buf.rows_in_order()).all()
    assert m["rollout/transitions"] < 4 * N


def test_rollout_uses_elites_only():
    model, policy = make_model(num_members=5, num_elites=2), make_policy()
    with torch.no_grad():
        model.elite_idx.copy_(torch.tensor([1, 3]))
        for m in (0, 2, 4):
            for w in model.net.weights:
                w[m].fill_(float("nan"))
        # Make each member recognisable: output mean = [10 m, m, m, m], near-zero variance.
        out = model.out_dim
        model.net.weights[-1].zero_()
        for m in range(5):
            model.net.biases[-1][m][..., :out] = torch.tensor([10.0 * m, m, m, m])
            model.net.biases[-1][m][..., out:] = -100.0  # -> logvar ~ min_logvar = -10
    buf = ReplayBuffer(OBS, ACT, 10_000)
    torch.manual_seed(7)
    metrics = branched_rollout(model, policy, torch.randn(N, OBS), 3, terminate_none, buf)
    assert metrics["rollout/nonfinite"] == 0 and metrics["rollout/transitions"] == 3 * N
    rows = buf.rows_in_order()
    assert torch.isfinite(rows).all()
    obs, act, rew, next_obs, done = fields(rows)
    used = (rew / 10).round()
    assert set(used.long().tolist()) == {1, 3}  # both elites drawn, nothing else
    assert torch.allclose(next_obs - obs, used[:, None].expand(-1, OBS), atol=0.05)


# --- the model env step ----------------------------------------------------------------------------

def test_model_env_step_all_samples_like_the_ensemble_and_applies_termination():
    model = make_model()
    env = ModelEnv(model, terminate_positive)
    obs, act = torch.randn(N, OBS), torch.rand(N, ACT) * 2 - 1
    member = model.random_elites(N)
    torch.manual_seed(8)
    step = env.step(obs, act, member)  # noise="all" by default: MBPO's step
    after = torch.get_rng_state()
    torch.manual_seed(8)
    next_obs, rew = model.sample(obs, act, member)
    assert torch.equal(torch.get_rng_state(), after)  # the same draws, no more
    assert torch.equal(step.next_obs, next_obs) and torch.equal(step.reward, rew)
    assert step.terminated.dtype == torch.bool and torch.equal(step.terminated, next_obs[:, 0] > 0)
    assert step.finite.all()


def test_model_env_obs_noise_and_no_noise_use_the_mean_reward():
    model = make_model()
    env = ModelEnv(model, terminate_none)
    obs, act = torch.randn(N, OBS), torch.rand(N, ACT) * 2 - 1
    member = model.random_elites(N)
    mean, logvar = model.forward_members(torch.cat([obs, act], dim=1), member)
    deterministic = env.step(obs, act, member, noise="none")
    assert torch.equal(deterministic.reward, mean[:, 0])
    assert torch.equal(deterministic.next_obs, obs + mean[:, 1:])
    torch.manual_seed(9)
    sampled = env.step(obs, act, member, noise="obs")
    torch.manual_seed(9)
    noise = torch.randn(N, OBS)  # one draw of the next state's shape, nothing for the reward
    assert torch.equal(sampled.reward, mean[:, 0])
    assert torch.equal(sampled.next_obs, obs + (mean[:, 1:] + noise * (0.5 * logvar[:, 1:]).exp()))
    assert not sampled.terminated.any()
    with pytest.raises(ValueError):
        env.step(obs, act, member, noise="reward")


def test_model_env_finite_mask_covers_next_obs_and_reward():
    model = make_model(num_elites=3)
    with torch.no_grad():
        model.net.biases[-1][1][..., 0] = float("nan")  # member 1: reward
        model.net.biases[-1][2][..., 2] = float("inf")  # member 2: next_obs[1]
    env = ModelEnv(model, terminate_none)
    member = torch.arange(N) % 4
    for noise in ("all", "obs", "none"):
        step = env.step(torch.randn(N, OBS), torch.zeros(N, ACT), member, noise=noise)
        assert torch.equal(step.finite, (member == 0) | (member == 3))
