"""Env construction, observation truncation, termination functions and exact env snapshots.

The termination functions (docs/termination.md) are checked against the ground truth: the
real gymnasium env's ``terminated`` flag, on states from real episodes (random and extreme
actions) and on constructed states just inside and just outside every health limit.
"""
from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from mbpo_ray.envs import (
    SUPPORTED_ENVS,
    UnknownEnvError,
    check_env_id,
    get_env_state,
    make_env,
    set_env_state,
    termination_fn,
)

ENV_IDS = list(SUPPORTED_ENVS)
TERMINATING_ENVS = [e for e in ENV_IDS if e != "HalfCheetah-v5"]

# gymnasium v5 defaults, except Ant and Humanoid: qpos[2:] and qvel only (docs/observations.md).
OBS_DIMS = {
    "Hopper-v5": 11,
    "Walker2d-v5": 17,
    "HalfCheetah-v5": 17,
    "Ant-v5": 27,
    "Humanoid-v5": 45,
    "InvertedPendulum-v5": 4,
    "InvertedDoublePendulum-v5": 9,
}

MAX_STEPS_PER_ENV = 3000


def _idp_tip_height(next_obs: np.ndarray) -> np.ndarray:
    sin1, sin2, cos1, cos2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    return 0.6 * (cos1 + cos1 * cos2 - sin1 * sin2)


# Health limits, as (quantity of next_obs, limit value, qpos index that moves it, qpos value that
# puts the quantity at the limit).
LIMITS = {
    "Hopper-v5": [
        ("height", lambda o: o[:, 0], 0.7, 1, 0.7),
        ("angle", lambda o: o[:, 1], 0.2, 2, 0.2),
        ("angle", lambda o: o[:, 1], -0.2, 2, -0.2),
    ],
    "Walker2d-v5": [
        ("height", lambda o: o[:, 0], 0.8, 1, 0.8),
        ("height", lambda o: o[:, 0], 2.0, 1, 2.0),
        ("angle", lambda o: o[:, 1], 1.0, 2, 1.0),
        ("angle", lambda o: o[:, 1], -1.0, 2, -1.0),
    ],
    "Ant-v5": [
        ("height", lambda o: o[:, 0], 0.2, 2, 0.2),
        ("height", lambda o: o[:, 0], 1.0, 2, 1.0),
    ],
    "Humanoid-v5": [
        ("height", lambda o: o[:, 0], 1.0, 2, 1.0),
        ("height", lambda o: o[:, 0], 2.0, 2, 2.0),
    ],
    "InvertedPendulum-v5": [
        ("pole angle", lambda o: o[:, 1], 0.2, 1, 0.2),
        ("pole angle", lambda o: o[:, 1], -0.2, 1, -0.2),
    ],
    "InvertedDoublePendulum-v5": [
        # tip height 0.6 (cos t1 + cos(t1 + t2)) = 1, reached by t1 alone or by t2 alone.
        ("tip height", _idp_tip_height, 1.0, 1, float(np.arccos(1 / 1.2))),
        ("tip height", _idp_tip_height, 1.0, 2, float(np.arccos(1 / 0.6 - 1))),
    ],
    "HalfCheetah-v5": [],
}
assert set(LIMITS) == set(SUPPORTED_ENVS)


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    # MuJoCo writes MUJOCO_LOG.TXT (compiler warnings) into the working directory.
    monkeypatch.chdir(tmp_path)


def _apply_termination(env_id, obs, act, next_obs, dtype):
    fn = termination_fn(env_id)
    out = fn(torch.as_tensor(np.asarray(obs), dtype=dtype),
             torch.as_tensor(np.asarray(act), dtype=dtype),
             torch.as_tensor(np.asarray(next_obs), dtype=dtype))
    assert out.dtype == torch.bool
    assert out.shape == (len(next_obs),)
    return out.numpy()


def _collect_episodes(env_id: str):
    """Real transitions from random, biased and extreme constant actions, fixed seeds."""
    env = make_env(env_id, seed=0)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(1234)
    modes = (["random"] * 6 + ["low", "high", "bias_high", "bias_low", "bang_bang"]
             + ["random"] * 10 + ["bias_high", "bias_low"] * 4)
    obs_l, act_l, next_l, term_l, trunc_l = [], [], [], [], []
    steps = 0
    for episode, mode in enumerate(modes):
        if steps >= MAX_STEPS_PER_ENV:
            break
        obs, _ = env.reset(seed=100 + episode)
        sign = 1.0
        while steps < MAX_STEPS_PER_ENV:
            u = rng.uniform(low, high)
            if mode == "random":
                a = u
            elif mode == "low":
                a = low
            elif mode == "high":
                a = high
            elif mode == "bias_high":
                a = 0.3 * u + 0.7 * high
            elif mode == "bias_low":
                a = 0.3 * u + 0.7 * low
            else:  # bang_bang: full action, sign flipped every 10 steps
                if steps % 10 == 0:
                    sign = -sign
                a = high if sign > 0 else low
            a = np.clip(a, low, high).astype(np.float32)
            next_obs, _, terminated, truncated, _ = env.step(a)
            obs_l.append(obs)
            act_l.append(a)
            next_l.append(next_obs)
            term_l.append(terminated)
            trunc_l.append(truncated)
            steps += 1
            obs = next_obs
            if terminated or truncated:
                break
    env.close()
    return (np.array(obs_l), np.array(act_l), np.array(next_l),
            np.array(term_l, dtype=bool), np.array(trunc_l, dtype=bool))


@pytest.fixture(scope="module")
def episodes():
    cache = {}

    def get(env_id):
        if env_id not in cache:
            cache[env_id] = _collect_episodes(env_id)
        return cache[env_id]

    return get


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_termination_matches_real_env_on_real_episodes(env_id, dtype, episodes):
    obs, act, next_obs, terminated, _ = episodes(env_id)
    assert 0 < len(next_obs) <= MAX_STEPS_PER_ENV
    pred = _apply_termination(env_id, obs, act, next_obs, dtype)
    mismatches = np.flatnonzero(pred != terminated)
    assert mismatches.size == 0, (
        f"{env_id}: termination fn disagrees with env at {mismatches.size} steps, e.g. "
        f"next_obs={next_obs[mismatches[0]]!r} env terminated={terminated[mismatches[0]]}")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_real_episodes_cover_both_outcomes_and_near_limit_states(env_id, episodes):
    _, _, next_obs, terminated, truncated = episodes(env_id)
    if env_id == "HalfCheetah-v5":
        assert not terminated.any()
        # full 1000-step episodes: TimeLimit truncation happened and is not termination
        assert truncated.any()
        return
    assert terminated.sum() >= 3, f"{env_id}: too few terminations to test against"
    assert (~terminated).sum() >= 10
    # at least one state near some health limit, on each side
    dist = np.min([np.abs(q(next_obs) - lim) for _, q, lim, _, _ in LIMITS[env_id]], axis=0)
    assert (dist[terminated] < 0.05).any(), f"{env_id}: no terminal state near a limit"
    assert (dist[~terminated] < 0.05).any(), f"{env_id}: no live state near a limit"


def _constructed_transitions(env_id: str, qpos_index: int, value_at_limit: float):
    """Set the MuJoCo state just inside/outside a limit, step once with zero action.

    Contacts are switched off so that a pose that puts a foot below the floor does not
    launch the body: the health rules are functions of the state only."""
    env = make_env(env_id, seed=0)
    base = env.unwrapped
    base.model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_CONTACT)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    obs_l, act_l, next_l, term_l = [], [], [], []
    for offset in np.linspace(-0.06, 0.06, 25):
        env.reset(seed=0)
        qpos, qvel = base.init_qpos.copy(), np.zeros_like(base.init_qvel)
        qpos[qpos_index] = value_at_limit + offset
        base.set_state(qpos, qvel)
        obs = base._get_obs()
        next_obs, _, terminated, truncated, _ = env.step(zero)
        assert not truncated
        obs_l.append(obs)
        act_l.append(zero)
        next_l.append(next_obs)
        term_l.append(terminated)
    env.close()
    return np.array(obs_l), np.array(act_l), np.array(next_l), np.array(term_l, dtype=bool)


@pytest.mark.parametrize(
    "env_id, limit_index",
    [(env_id, i) for env_id in ENV_IDS for i in range(len(LIMITS[env_id]))],
)
def test_termination_matches_real_env_at_constructed_limit_states(env_id, limit_index):
    name, quantity, limit, qpos_index, value_at_limit = LIMITS[env_id][limit_index]
    obs, act, next_obs, terminated = _constructed_transitions(env_id, qpos_index, value_at_limit)
    for dtype in (torch.float32, torch.float64):
        pred = _apply_termination(env_id, obs, act, next_obs, dtype)
        np.testing.assert_array_equal(pred, terminated, err_msg=f"{env_id} {name} {limit} {dtype}")
    # both sides of the limit, each within 0.01 of it
    assert terminated.any() and (~terminated).any()
    dist = np.abs(quantity(next_obs) - limit)
    assert dist[terminated].min() < 0.01
    assert dist[~terminated].min() < 0.01


def test_halfcheetah_never_terminates_even_upside_down():
    env = make_env("HalfCheetah-v5", seed=0)
    base = env.unwrapped
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    obs_l, next_l, term_l = [], [], []
    for angle in (np.pi, -np.pi / 2, np.pi / 2, 3.0):
        qpos = base.init_qpos.copy()
        qpos[1], qpos[2] = 2.0, angle
        base.set_state(qpos, base.init_qvel.copy())
        obs_l.append(base._get_obs())
        next_obs, _, terminated, _, _ = env.step(zero)
        next_l.append(next_obs)
        term_l.append(terminated)
    assert not any(term_l)
    pred = _apply_termination("HalfCheetah-v5", obs_l, [zero] * len(obs_l), next_l, torch.float32)
    assert not pred.any()


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_observation_shapes(env_id):
    env = make_env(env_id, seed=0)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (OBS_DIMS[env_id],)
    assert obs.shape == (OBS_DIMS[env_id],)
    next_obs, *_ = env.step(env.action_space.sample())
    assert next_obs.shape == (OBS_DIMS[env_id],)
    env.close()


@pytest.mark.parametrize("env_id", ["Ant-v5", "Humanoid-v5"])
def test_truncated_observation_is_qpos_without_xy_and_qvel(env_id):
    env = make_env(env_id, seed=3)
    obs, _ = env.reset(seed=3)
    data = env.unwrapped.data
    np.testing.assert_array_equal(obs, np.concatenate([data.qpos[2:], data.qvel]))
    env.close()


@pytest.mark.parametrize("bad_id", ["Hopper-v4", "Pendulum-v1", "CartPole-v1", "Nope-v0", ""])
@pytest.mark.parametrize("fn", [check_env_id, termination_fn])
def test_env_without_a_known_rule_lists_the_paper_envs(fn, bad_id):
    with pytest.raises(UnknownEnvError) as info:
        fn(bad_id)
    message = str(info.value)
    assert repr(bad_id) in message and "mbpo.termination=learned" in message
    for env_id in SUPPORTED_ENVS:
        assert env_id in message


@pytest.mark.parametrize("bad_id", ["Nope-v0", "Hopper-v99", "nons/Foo-v0", ""])
def test_make_env_of_an_unknown_id_says_what_is_allowed(bad_id):
    with pytest.raises(UnknownEnvError) as info:
        make_env(bad_id)
    message = str(info.value)
    assert repr(bad_id) in message and "package.module:ClassOrFactory" in message


def _run(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((obs.copy(), reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


def _assert_identical(a, b, rewards=False):
    assert len(a) == len(b)
    for (o1, r1, te1, tr1), (o2, r2, te2, tr2) in zip(a, b):
        assert np.array_equal(o1, o2)
        assert te1 == te2 and tr1 == tr2
        if rewards:
            assert r1 == r2


def _snapshot_and_replay(env_id):
    """Snapshot mid-episode, go on with fixed actions; replay from the snapshot in a fresh env."""
    rng = np.random.default_rng(7)
    env = make_env(env_id, seed=11)
    env.reset(seed=11)
    space = env.action_space
    for _ in range(3):  # mid-episode, small actions so that it keeps going
        env.step((0.1 * rng.uniform(space.low, space.high)).astype(np.float32))
    snapshot = get_env_state(env)
    actions = [(0.1 * rng.uniform(space.low, space.high)).astype(np.float32) for _ in range(15)]
    expected = _run(env, actions)
    assert len(expected) >= 2
    reset_expected, _ = env.reset()  # no seed: drawn from the env's RNG at the snapshot

    fresh = make_env(env_id, seed=999)
    fresh.reset(seed=999)
    set_env_state(fresh, snapshot)
    got = _run(fresh, actions)
    reset_got, _ = fresh.reset()

    # the snapshot is a copy: restoring it into the env that went on gives the same again
    set_env_state(env, snapshot)
    again = _run(env, actions)
    return expected, got, again, reset_expected, reset_got


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_state_snapshot_restores_bit_identical_observations(env_id):
    expected, got, again, reset_expected, reset_got = _snapshot_and_replay(env_id)
    _assert_identical(expected, got)
    _assert_identical(expected, again)
    assert np.array_equal(reset_expected, reset_got)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_state_snapshot_restores_bit_identical_rewards(env_id):
    expected, got, _, _, _ = _snapshot_and_replay(env_id)
    _assert_identical(expected, got, rewards=True)


def test_env_state_snapshot_restores_time_limit_counter():
    env = make_env("HalfCheetah-v5", seed=5)
    env.reset(seed=5)
    rng = np.random.default_rng(5)
    space = env.action_space
    for _ in range(990):
        _, _, terminated, truncated, _ = env.step(rng.uniform(space.low, space.high).astype(np.float32))
        assert not (terminated or truncated)
    snapshot = get_env_state(env)
    assert snapshot["elapsed_steps"] == 990
    actions = [rng.uniform(space.low, space.high).astype(np.float32) for _ in range(20)]
    expected = _run(env, actions)
    # 10 more steps reach the 1000-step limit: truncated there, not terminated
    assert len(expected) == 10 and expected[-1][3] and not expected[-1][2]

    fresh = make_env("HalfCheetah-v5", seed=0)
    fresh.reset(seed=0)
    set_env_state(fresh, snapshot)
    got = _run(fresh, actions)
    _assert_identical(expected, got, rewards=True)
    assert [t[3] for t in got] == [False] * 9 + [True]
