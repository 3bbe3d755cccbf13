"""ReplayBuffer, sample_mixed and the model-buffer size formula (docs/hyperparameters.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mbpo_ray.config import PRESETS, MBPOConfig
from mbpo_ray.data import ReplayBuffer, RowLayout, model_buffer_capacity, sample_mixed

OBS, ACT = 3, 2
WIDTH = 2 * OBS + ACT + 2


pytestmark = pytest.mark.usefixtures("single_thread")


def transitions(ids):
    """Transitions whose every field encodes its id, so rows can be identified."""
    ids = torch.as_tensor(ids, dtype=torch.float32)
    n = ids.shape[0]
    obs = ids[:, None] + torch.tensor([0.0, 0.1, 0.2])
    act = -ids[:, None] - torch.tensor([0.0, 0.5])
    rew = ids * 10
    next_obs = obs + 1000
    done = (ids.long() % 2).float()
    assert obs.shape == (n, OBS)
    return obs, act, rew, next_obs, done


def ids_of(rows: torch.Tensor):
    return rows[:, 0].round().long().tolist()


def filled(capacity, ids):
    buf = ReplayBuffer(OBS, ACT, capacity)
    buf.add(*transitions(ids))
    return buf


def test_add_single_and_batch_and_split_fields():
    buf = ReplayBuffer(OBS, ACT, 10)
    assert buf.width == WIDTH and len(buf) == 0 and buf.ptr == 0
    o, a, r, no, d = transitions([1])
    buf.add(o[0], a[0], r[0].item(), no[0], bool(d[0]))  # one transition, no leading dim
    assert len(buf) == 1 and buf.ptr == 1
    buf.add(*transitions([2, 3, 4]))
    assert len(buf) == 4 and buf.ptr == 4
    obs, act, rew, next_obs, done = buf.all()
    assert obs.shape == (4, OBS) and act.shape == (4, ACT) and next_obs.shape == (4, OBS)
    assert rew.shape == (4,) and done.shape == (4,)
    eo, ea, er, eno, ed = transitions([1, 2, 3, 4])
    assert torch.equal(obs, eo) and torch.equal(act, ea) and torch.equal(rew, er)
    assert torch.equal(next_obs, eno) and torch.equal(done, ed)
    # numpy and python inputs are accepted too
    buf.add(eo[0].numpy(), ea[0].tolist(), 5.0, eno[0].numpy(), True)
    assert len(buf) == 5 and buf.all()[4][-1].item() == 1.0


def test_wraparound_keeps_newest_rows_in_order():
    buf = ReplayBuffer(OBS, ACT, 5)
    for i in (1, 2, 3):
        buf.add(*[x[0] for x in transitions([i])])
    assert (len(buf), buf.ptr) == (3, 3)
    buf.add(*transitions([4, 5, 6, 7]))  # wraps: 7 rows into 5
    assert (len(buf), buf.ptr) == (5, 2)
    assert ids_of(buf.rows_in_order()) == [3, 4, 5, 6, 7]
    buf.add(*transitions([8]))
    assert (len(buf), buf.ptr) == (5, 3)
    assert ids_of(buf.rows_in_order()) == [4, 5, 6, 7, 8]
    # full fields survive the wrap
    obs, act, rew, next_obs, done = buf.split(buf.rows_in_order())
    eo, ea, er, eno, ed = transitions([4, 5, 6, 7, 8])
    assert torch.equal(obs, eo) and torch.equal(act, ea) and torch.equal(rew, er)
    assert torch.equal(next_obs, eno) and torch.equal(done, ed)


@pytest.mark.parametrize("n", [5, 12])
def test_batch_at_least_capacity_keeps_newest(n):
    buf = filled(5, [100, 101])  # partly filled, ptr in the middle
    buf.add(*transitions(list(range(1, n + 1))))
    assert len(buf) == 5
    assert ids_of(buf.rows_in_order()) == list(range(n - 4, n + 1))
    buf.add(*transitions([99]))
    assert ids_of(buf.rows_in_order()) == list(range(n - 3, n + 1)) + [99]


def test_resize_up_and_down_keeps_newest():
    buf = filled(5, range(1, 8))  # holds 3..7, wrapped
    buf.resize(8)
    assert buf.capacity == 8 and len(buf) == 5
    assert ids_of(buf.rows_in_order()) == [3, 4, 5, 6, 7]
    buf.add(*transitions([8, 9, 10, 11]))
    assert ids_of(buf.rows_in_order()) == list(range(4, 12))
    buf.resize(3)
    assert buf.capacity == 3 and len(buf) == 3
    assert ids_of(buf.rows_in_order()) == [9, 10, 11]
    buf.add(*transitions([12]))
    assert ids_of(buf.rows_in_order()) == [10, 11, 12]
    # resize of a partly filled buffer
    small = filled(10, [1, 2])
    small.resize(4)
    assert len(small) == 2 and ids_of(small.rows_in_order()) == [1, 2]


def test_state_dict_round_trip():
    buf = filled(6, range(1, 10))  # wrapped
    state = buf.state_dict()
    other = ReplayBuffer(OBS, ACT, 2)
    other.load_state_dict(state)
    assert other.capacity == 6 and len(other) == len(buf)
    assert torch.equal(other.rows_in_order(), buf.rows_in_order())
    # the saved state is a copy, and both buffers keep behaving identically
    buf.add(*transitions([50, 51]))
    other.add(*transitions([50, 51]))
    assert torch.equal(other.rows_in_order(), buf.rows_in_order())
    assert ids_of(ReplayBuffer.saved_rows_in_order(state)) == list(range(4, 10))
    # a loaded wrapped buffer maps each index to the row it held: the same seed draws the same
    # rows (a resumed run samples what the uninterrupted one samples)
    wrapped = filled(6, range(1, 10))
    loaded = ReplayBuffer(OBS, ACT, 2)
    loaded.load_state_dict(wrapped.state_dict())
    torch.manual_seed(3)
    want = wrapped.sample_rows(20)
    torch.manual_seed(3)
    assert torch.equal(loaded.sample_rows(20), want)
    # a checkpoint written before the write position was saved (rows oldest first) still loads
    old = {"rows": wrapped.rows_in_order().clone(), "capacity": 6}
    legacy = ReplayBuffer(OBS, ACT, 2)
    legacy.load_state_dict(old)
    assert torch.equal(legacy.rows_in_order(), wrapped.rows_in_order())
    # partly filled buffer
    part = filled(6, [1, 2])
    restored = ReplayBuffer(OBS, ACT, 6)
    restored.load_state_dict(part.state_dict())
    assert len(restored) == 2 and torch.equal(restored.rows_in_order(), part.rows_in_order())


def test_sample_returns_stored_rows():
    torch.manual_seed(0)
    buf = filled(10, range(1, 8))  # partly filled: rows 7..9 are empty zeros
    obs, act, rew, next_obs, done = buf.sample(500)
    assert obs.shape == (500, OBS) and act.shape == (500, ACT) and next_obs.shape == (500, OBS)
    assert rew.shape == (500,) and done.shape == (500,)
    ids = obs[:, 0].round().long()
    assert set(ids.tolist()) == set(range(1, 8))  # never an empty row, all rows reachable
    # the fields of a sampled row belong together
    eo, ea, er, eno, ed = transitions(ids.tolist())
    assert torch.equal(act, ea) and torch.equal(rew, er) and torch.equal(next_obs, eno)
    assert torch.equal(done, ed)

    wrapped = filled(10, range(1, 26))
    got = set(ids_of(wrapped.sample_rows(500)))
    assert got == set(range(16, 26))


def _marked(n, value, capacity=1000):
    buf = ReplayBuffer(OBS, ACT, capacity)
    buf.add(torch.full((n, OBS), value), torch.zeros(n, ACT), torch.zeros(n),
            torch.zeros(n, OBS), torch.zeros(n))
    return buf


def test_sample_mixed_ratio():
    torch.manual_seed(1)
    real, model = _marked(300, 1.0), _marked(500, -1.0)
    obs, act, rew, next_obs, done = sample_mixed(real, model, 256, 0.05)
    assert obs.shape == (256, OBS) and act.shape == (256, ACT) and rew.shape == (256,)
    assert int((obs[:, 0] == 1.0).sum()) == int(256 * 0.05) == 12
    assert int((obs[:, 0] == -1.0).sum()) == 244

    obs, *_ = sample_mixed(real, ReplayBuffer(OBS, ACT, 10), 256, 0.05)  # empty model buffer
    assert obs.shape == (256, OBS) and (obs[:, 0] == 1.0).all()

    obs, *_ = sample_mixed(real, model, 256, 0.0)
    assert obs.shape == (256, OBS) and (obs[:, 0] == -1.0).all()

    obs, *_ = sample_mixed(real, model, 256, 1.0)
    assert (obs[:, 0] == 1.0).all()

    obs, *_ = sample_mixed(real, model, 100, 0.5)
    assert int((obs[:, 0] == 1.0).sum()) == 50


def test_model_buffer_capacity_formula_and_presets():
    rollout_batch = MBPOConfig().rollout_batch_size
    assert rollout_batch == 100_000

    def formula(env, k):
        p = PRESETS[env]
        return int(p["mbpo.model_retain_epochs"] * (p["mbpo.epoch_length"] / p["mbpo.model_train_freq"])
                   * rollout_batch * k)

    def capacity(env, k):
        p = PRESETS[env]
        return model_buffer_capacity(p["mbpo.model_retain_epochs"], p["mbpo.epoch_length"],
                                     p["mbpo.model_train_freq"], rollout_batch, k)

    assert capacity("Hopper-v5", 15) == formula("Hopper-v5", 15) == 6_000_000
    assert capacity("Hopper-v5", 1) == 400_000
    assert capacity("Ant-v5", 25) == 10_000_000
    # Humanoid: retain 5 epochs, retrain period 1000.
    assert capacity("Humanoid-v5", 25) == formula("Humanoid-v5", 25) == 12_500_000
    assert capacity("Humanoid-v5", 1) == 500_000
    assert capacity("InvertedPendulum-v5", 1) == 100_000
    for env in PRESETS:
        assert capacity(env, 3) == formula(env, 3)


# --- the row layout ------------------------------------------------------------------------------

def test_row_layout_pack_split_round_trip():
    layout = RowLayout(OBS, ACT)
    assert layout.width == WIDTH == ReplayBuffer(OBS, ACT, 1).width
    assert ReplayBuffer(OBS, ACT, 1).layout == layout
    obs, act, rew, next_obs, done = transitions([1, 2, 3, 4])
    rows = layout.pack(obs, act, rew, next_obs, done.bool())  # a bool flag becomes 0.0 / 1.0
    assert rows.shape == (4, WIDTH) and rows.dtype == torch.float32
    # [obs | act | reward | next_obs | terminated], in that order
    assert torch.equal(rows, torch.cat([obs, act, rew[:, None], next_obs, done[:, None]], dim=1))
    for got, want in zip(layout.split(rows), (obs, act, rew, next_obs, done)):
        assert torch.equal(got, want)
    assert torch.equal(rows[:, layout.rew], rew) and torch.equal(rows[:, layout.terminated], done)
    assert torch.equal(rows[:, layout.obs], obs) and torch.equal(rows[:, layout.next_obs], next_obs)
    # one transition without a batch dim packs to one row
    one = layout.pack(obs[1], act[1], rew[1], next_obs[1], done[1])
    assert torch.equal(one, rows[1:2])
    # the buffer splits what it stores with the same layout
    buf = ReplayBuffer(OBS, ACT, 10)
    buf.add_rows(rows)
    for got, want in zip(buf.all(), (obs, act, rew, next_obs, done)):
        assert torch.equal(got, want)


def test_row_layout_pack_numpy_matches_torch_and_env_step_types():
    layout = RowLayout(OBS, ACT)
    rng = np.random.default_rng(0)
    obs, next_obs = rng.normal(size=OBS), rng.normal(size=OBS)  # float64, as envs return them
    act = rng.uniform(-1, 1, ACT).astype(np.float32)
    reward, terminated = np.float64(rng.normal()), True
    row = layout.pack_numpy(obs, act, reward, next_obs, terminated)
    assert row.shape == (WIDTH,) and row.dtype == np.float32
    expected = np.concatenate([obs, act, [reward], next_obs, [float(terminated)]]).astype(np.float32)
    assert np.array_equal(row, expected)
    as_torch = layout.pack(*(torch.as_tensor(np.asarray(x), dtype=torch.float32)
                             for x in (obs, act, reward, next_obs, terminated)))
    assert torch.equal(torch.from_numpy(row)[None], as_torch)
    # batched arrays give [B, width]
    batch = layout.pack_numpy(np.stack([obs, next_obs]), np.stack([act, act]), np.array([1.0, 2.0]),
                              np.stack([next_obs, obs]), np.array([False, True]))
    assert batch.shape == (2, WIDTH) and batch[1, layout.terminated] == 1.0 and batch[0, layout.rew] == 1.0
    assert np.array_equal(batch[0], layout.pack_numpy(obs, act, 1.0, next_obs, False))
