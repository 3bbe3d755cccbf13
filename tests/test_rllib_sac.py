"""RLlib's SAC as an external reference algorithm (``algo: rllib-sac``): the config mapping, a
run through ``mbpo_ray.train`` with the same run directory and records as every algorithm,
stop/resume, and learning on InvertedPendulum. One Ray session serves the whole module."""
import json
import math

import numpy as np
import pytest
import torch

from mbpo_ray.config import make_config
from mbpo_ray.errors import ConfigError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.algos import rllib_sac
from mbpo_ray.algos.rllib_sac import RLlibSAC, iteration_steps, learning_starts, rllib_sac_config
from mbpo_ray.train import train
from helpers import comparable

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # starts a Ray cluster: make test-fast leaves it out

EVAL_KEYS = ("eval/return_mean", "eval/return_std", "eval/return_min", "eval/return_max",
             "eval/episode_length")


def small_config(**extra):
    """A cheap rllib-sac config: 500 steps in epochs of 200 (iterations of 100 steps, so the
    last epoch is a short one), G = 2, updates from step 100 on, small networks."""
    overrides = {
        "algo": "rllib-sac", "total_steps": 500, "seed": 3, "device": "cpu", "eval_episodes": 2,
        "mbpo.epoch_length": 200, "mbpo.init_random_steps": 100, "mbpo.min_real_before_updates": 64,
        "mbpo.updates_per_step": 2, "sac.hidden_width": 32, "sac.batch_size": 32,
    }
    overrides.update(extra)
    return make_config("InvertedPendulum-v5", overrides)


@pytest.fixture(scope="module")
def ray_session():
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=rllib_sac.RAY_OBJECT_STORE_BYTES)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def full_run(ray_session, single_thread, tmp_path_factory):
    """An uninterrupted run of ``small_config()``, shared by the tests below."""
    out = tmp_path_factory.mktemp("rllib") / "full"
    result = train(small_config(), str(out), progress=False)
    return result, RunDirectory(out)


def test_importing_the_module_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, mbpo_ray.algos, mbpo_ray.algos.rllib_sac; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_fields_map_onto_rllib_sac_config():
    from ray.rllib.algorithms.dqn.dqn import calculate_rr_weights

    cfg = make_config("InvertedPendulum-v5", {"algo": "rllib-sac", "seed": 7,
                                              "sac.discount": 0.98, "sac.tau": 0.01,
                                              "sac.learning_rate": 1e-3, "sac.batch_size": 128,
                                              "sac.hidden_width": 64, "sac.num_hidden_layers": 3,
                                              "sac.init_log_alpha": -1.0,
                                              "mbpo.updates_per_step": 3, "total_steps": 5000})
    rc = rllib_sac_config(cfg)
    assert (rc.gamma, rc.tau) == (0.98, 0.01)
    assert rc.actor_lr == rc.critic_lr == rc.alpha_lr == 1e-3
    assert rc.train_batch_size_per_learner == 128
    assert rc.model_config["fcnet_hiddens"] == [64, 64, 64]
    assert rc.model_config["fcnet_activation"] == "relu" and rc.model_config["head_fcnet_hiddens"] == []
    assert rc.initial_alpha == pytest.approx(math.exp(-1.0))
    assert rc.target_entropy == -0.05  # the InvertedPendulum preset
    assert rc.twin_q and rc.n_step == 1 and rc.target_network_update_freq == 0
    assert rc.replay_buffer_config["type"] == "EpisodeReplayBuffer"  # uniform, as ours
    assert rc.replay_buffer_config["capacity"] == 5000  # min(replay_size, total_steps)
    assert rc.num_steps_sampled_before_learning_starts == 500  # the preset's warm-up
    assert rc.seed == 7 and rc.num_env_runners == 0 and rc.num_learners == 0
    # G = 3 updates after every env step: one env step per training_step and RLlib's own
    # round-robin weights [sample, train] = [1, 3]
    assert rc.get_rollout_fragment_length() == 1
    assert rc.training_intensity == 3 * 128
    assert calculate_rr_weights(rc) == [1, 3]
    # one iteration = one epoch (250 steps for the pendulum)
    assert rc.min_sample_timesteps_per_iteration == 250 and rc.min_time_s_per_iteration == 0
    # target_entropy None is RLlib's "auto" (-action_dim), as in our SAC
    assert rllib_sac_config(small_config(**{"sac.target_entropy": None})).target_entropy == "auto"


def test_learning_start_and_iteration_length():
    assert learning_starts(small_config()) == 100
    assert learning_starts(small_config(**{"mbpo.init_random_steps": 10})) == 64  # one batch first
    assert iteration_steps(small_config()) == 100  # gcd(epoch 200, total 500)
    assert iteration_steps(small_config(total_steps=600)) == 200
    assert iteration_steps(small_config(total_steps=600), start_steps=500) == 100


def test_unsupported_settings_are_refused():
    with pytest.raises(ConfigError, match="updates_per_step"):
        rllib_sac_config(small_config(**{"mbpo.updates_per_step": 0}))
    with pytest.raises(ConfigError, match="real_ratio"):
        rllib_sac_config(small_config(**{"mbpo.real_ratio": 0.5}))
    # an MPS request is refused by name, never turned into the CPU without a word (issue 8)
    with pytest.raises(ConfigError, match="mps"):
        rllib_sac_config(small_config(device="mps"))


def test_q_networks_are_mlps_on_obs_and_action(ray_session, single_thread, tmp_path):
    algo = RLlibSAC(small_config(), torch.device("cpu"), tmp_path)
    try:
        module = algo.algo.learner_group._learner.module["default_policy"]
        obs_dim, act_dim = 4, 1
        # concat(obs, action) -> 32 -> 32 (ReLU) -> linear head 1, for both Q nets and targets
        for name in ("qf_encoder", "qf_twin_encoder", "target_qf_encoder", "target_qf_twin_encoder"):
            shapes = [tuple(p.shape) for p in getattr(module, name).parameters()]
            assert shapes == [(32, obs_dim + act_dim), (32,), (32, 32), (32,)], (name, shapes)
            relus = [m for m in getattr(module, name).modules() if isinstance(m, torch.nn.ReLU)]
            assert len(relus) == 2, name
        assert [tuple(p.shape) for p in module.qf.parameters()] == [(1, 32), (1,)]
        # policy: obs -> 32 -> 32 -> mean and log_std
        assert [tuple(p.shape) for p in module.pi_encoder.parameters()] == [(32, obs_dim), (32,), (32, 32), (32,)]
        assert [tuple(p.shape) for p in module.pi.parameters()] == [(2 * act_dim, 32), (2 * act_dim,)]
    finally:
        algo.close()
    assert ray.is_initialized()  # close() leaves alone the Ray session it did not start


def test_run_writes_the_same_run_directory_as_every_algorithm(full_run):
    result, run = full_run
    assert result.completed and result.env_steps == 500
    assert run.config_path.is_file() and run.load_config().algo == "rllib-sac"
    records = run.read_metrics()
    assert [r["env_steps"] for r in records] == [200, 400, 500]  # epoch ends, then total_steps
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        for key in EVAL_KEYS + ("train/episode_return", "perf/sps", "perf/epoch_seconds"):
            assert key in r, key
        assert r["eval/episode_length"] >= 1
    # G = 2 gradient updates after every env step from the 100th sampled step on
    # (RLlib's count of trained samples / batch size)
    assert [r["train/updates"] for r in records] == [2 * 101, 2 * 200, 2 * 100]
    checkpoint = run.load_checkpoint()
    assert checkpoint["env_steps"] == 500
    state = checkpoint["algorithm"]
    assert state["path"] == "rllib_checkpoint" and state["env_steps"] == 500
    saved = run.path / state["path"]
    assert (saved / "rllib_checkpoint.json").is_file() and (saved / rllib_sac.REPLAY_FILE).is_file()
    assert json.loads((saved / rllib_sac.STATE_FILE).read_text())["env_steps"] == 500
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith("rllib")) == ["rllib_checkpoint"]


def test_same_seed_same_records(full_run, tmp_path):
    again = train(small_config(), str(tmp_path / "again"), progress=False)
    assert again.completed

    assert comparable(RunDirectory(tmp_path / "again").read_metrics()) == comparable(full_run[1].read_metrics())


def test_restored_algorithm_has_the_saved_weights_steps_and_replay(ray_session, single_thread, tmp_path):
    cfg = small_config()
    first = RLlibSAC(cfg, torch.device("cpu"), tmp_path)
    try:
        while first.step() is None:  # to the first epoch end (200 steps, 100 trained)
            pass
        saved_weights = first.module_weights()
        saved_replay = first.algo.local_replay_buffer.get_num_timesteps()
        state = first.state_dict()
    finally:
        first.close()
    assert saved_replay == 200
    second = RLlibSAC(cfg, torch.device("cpu"), tmp_path)
    try:
        fresh = second.module_weights()
        second.load_state_dict(state)
        restored = second.module_weights()
        assert restored.keys() == saved_weights.keys()
        assert all(np.array_equal(restored[k], saved_weights[k]) for k in saved_weights)
        assert any(not np.array_equal(fresh[k], saved_weights[k]) for k in saved_weights)
        assert second.env_steps == second.rllib_env_steps() == 200
        assert second.algo.local_replay_buffer.get_num_timesteps() == saved_replay
        record = None
        while record is None:
            record = second.step()
        assert record["env_steps"] == 400 and record["train/updates"] == 2 * 200
    finally:
        second.close()


def test_resume_continues_to_total_steps(full_run, tmp_path):
    out = tmp_path / "part"
    part = train(small_config(), str(out), progress=False, stop_at=250)
    # steps are RLlib iterations (100 env steps here): the run stops at the first one >= 250
    assert not part.completed and part.env_steps == 300
    assert [r["env_steps"] for r in RunDirectory(out).read_metrics()] == [200]
    resumed = train(small_config(), str(out), progress=False, resume=True)
    assert resumed.completed and resumed.env_steps == 500
    records = RunDirectory(out).read_metrics()
    full = full_run[1].read_metrics()
    assert [r["env_steps"] for r in records] == [r["env_steps"] for r in full] == [200, 400, 500]
    assert records[1]["train/updates"] == 2 * 200  # the epoch across the stop: both halves
    # The finished run given more steps: from step 500 the 200-step iterations of an 800-step
    # config would miss the epoch ends, so the algorithm is rebuilt with 100-step iterations.
    longer = train(small_config(total_steps=800), str(out), progress=False, resume=True)
    assert longer.completed and longer.env_steps == 800
    assert [r["env_steps"] for r in RunDirectory(out).read_metrics()] == [200, 400, 500, 600, 800]


@pytest.mark.slow
def test_rllib_sac_learns_inverted_pendulum(ray_session, single_thread, tmp_path):
    """RLlib's SAC (G = 1, the pendulum preset with 64-unit networks and batch 64 to fit the
    time budget), seed 0, 3,000 env steps (~60 s on one core).

    Threshold 30: the untrained and the random policy hold the pole ~5-10 steps (eval return
    6-12 at the first epochs of seeds 0-3 here). The best of the last four evals (2,250-3,000
    steps) was 71 / 61 / 67 / 95 for seeds 0 / 1 / 2 / 3, so 30 (3x random) leaves a margin of ~2x.
    """
    cfg = make_config("InvertedPendulum-v5", {"algo": "rllib-sac", "total_steps": 3000, "seed": 0,
                                              "device": "cpu", "sac.hidden_width": 64,
                                              "sac.batch_size": 64})
    train(cfg, str(tmp_path / "run"), progress=False)
    evals = [r["eval/return_mean"] for r in RunDirectory(tmp_path / "run").read_metrics()]
    assert len(evals) == 12
    assert evals[0] < 20, evals
    assert max(evals[-4:]) >= 30, evals
