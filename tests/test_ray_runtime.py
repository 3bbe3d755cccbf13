"""The Ray runtime on a real local Ray cluster (one per module): the sync schedule keeps the
local runtime's order and ratios, async keeps the update ratio within its bounds, killed actors
are replaced without losing transitions, resume restores the buffer actor, and a config that asks
for resources the cluster lacks stops at once."""
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # starts a Ray cluster: make test-fast leaves it out

from mbpo_ray.algos import make_algorithm  # noqa: E402
from mbpo_ray.cli import main  # noqa: E402
from mbpo_ray.config import ConfigError  # noqa: E402
from mbpo_ray.run_dir import RunDirectory  # noqa: E402
from mbpo_ray.train import train  # noqa: E402

SCHEDULE_KEYS = ("train/updates", "rollout/k", "rollout/start_states")


@pytest.fixture(scope="module")
def ray_cluster():
    # Logical CPUs: the actor group asks for 1 + 2 + 1 + 1 (collector, rollout workers,
    # model trainer, learner); they mostly wait on each other in these tests.
    ray.init(address="local", num_cpus=6, object_store_memory=128 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_config(tiny_config):
    def make(**extra):
        overrides = {"runtime": "ray", "ray.num_rollout_workers": 2, "ray.collector_chunk": 50}
        overrides.update(extra)
        return tiny_config(**overrides)
    return make


def schedule_of(records):
    return [{**{k: r.get(k) for k in ("env_steps",) + SCHEDULE_KEYS}, "fitted": "model/holdout_mse" in r}
            for r in records]


def run_steps(algo, until):
    records = []
    while algo.env_steps < until:
        record = algo.step()
        if record is not None:
            records.append(record)
    return records


def buffer_sizes(algo):
    return ray.get(algo.runtime.buffer.sizes.remote())


# One sync run whose collector, rollout worker and model trainer are each killed once, at
# different steps, mid-epoch: every actor comes back without losing or repeating a transition,
# and the run still keeps the local runtime's schedule epoch by epoch.
KILLS = {250: "collector", 320: "rollout_worker", 450: "model_trainer"}  # the next rollouts come at
# 300 and 400, the next fit at 500: each replaced actor is used again after its kill


def test_sync_schedule_matches_local_runtime_through_killed_actors(ray_config, tiny_config, tmp_path, ray_cluster,
                                                                    single_thread):
    train(tiny_config(), str(tmp_path / "local"), progress=False)
    local = RunDirectory(tmp_path / "local").read_metrics()
    cfg = ray_config()
    algo = make_algorithm(cfg, "cpu", tmp_path / "ray")
    try:
        remote = []
        for step, role in sorted(KILLS.items()):
            remote += run_steps(algo, step)
            ray.kill({"collector": algo.runtime.collectors[0], "rollout_worker": algo.runtime.rollout_workers[1],
                      "model_trainer": algo.runtime.model_trainer}[role])
        remote += run_steps(algo, cfg.total_steps)
        assert algo.runtime.restarts == {role: 1 for role in KILLS.values()}
        assert remote[-1]["perf/actor_restarts"] == 3
        # every transition the collectors produced reached D_env once: nothing lost or repeated
        assert buffer_sizes(algo)["real_added"] == cfg.total_steps
        assert remote[-1]["model/version"] >= 3  # fits went on after the kills
    finally:
        algo.close()
    # the same epochs, SAC updates, model fits, k and start states, epoch by epoch
    assert schedule_of(remote) == schedule_of(local)
    assert [r["rollout/model_buffer_size"] for r in remote if "rollout/k" in r] == \
        [r["rollout/model_buffer_size"] for r in local if "rollout/k" in r]
    last = remote[-1]
    for key in ("perf/collector_env_steps_per_s", "perf/learner_updates_per_s",
                "perf/rollout_transitions_per_s_per_worker"):
        assert last[key] > 0, key  # the last epoch stepped, updated and branched rollouts
    assert last["perf/collector_policy_lag"] == 0  # sync: the collector acts with the newest policy
    # sync: every step acts, and every rollout branches, with the newest policy and model
    fitted = [r for r in remote if "rollout/k" in r]
    for key in ("perf/collector_policy_lag_max", "perf/rollout_model_lag_max", "perf/rollout_policy_lag_max"):
        assert all(r[key] == 0 for r in fitted), key


def test_the_options_whose_state_its_roles_hold_run_on_the_ray_runtime(ray_config, tmp_path, ray_cluster,
                                                                        single_thread):
    """MBPO+ on the Ray runtime (docs/mbpo_plus.md#where-each-option-runs): m2ac in the rollout
    workers, LayerNorms and REDQ in the learner (and the LayerNorm policy in the workers and
    collectors), scale-aware targets in the model trainer."""
    cfg = ray_config(**{"total_steps": 400, "mbpo.rollout_uncertainty": "m2ac", "mbpo.rollout_schedule": [0, 1, 3, 3],
                        "sac.critic_layer_norm": True, "sac.policy_layer_norm": True, "sac.num_critics": 4,
                        "sac.critic_subset": 2, "model.normalize_targets": True})
    result = train(cfg, str(tmp_path / "run"), progress=False)
    run = RunDirectory(tmp_path / "run")
    assert result.completed
    last = run.read_metrics()[-1]
    # k = 3, two workers with 500 start states each: step h keeps at most floor(500 (3 - h) / 8) per
    # worker (fewer where the termination rule ended rollouts before)
    assert last["rollout/k"] == 3 and 2 * (187 + 125) / 1000 < last["rollout/mean_length"] <= 2 * (187 + 125 + 62) / 1000
    # the rule ended every rollout but the 2 x 62 kept at the last step, less those the termination
    # rule had ended before
    ended = 1 - 2 * 62 / 1000
    assert ended - last["rollout/ended_terminated"] <= last["rollout/ended_by_uncertainty"] <= ended
    state = run.load_checkpoint()["algorithm"]["runtime"]
    assert state["learner"]["agent"]["module"]["q.weights.0"].shape[0] == 4
    assert float(state["model_trainer"]["weights"]["model"]["target_std"].max()) != 1.0  # the fit's normaliser


def test_redone_call_does_not_store_its_rows_twice(ray_config, tmp_path, ray_cluster, single_thread):
    # A collector or rollout worker can die after the buffer actor stored its rows and before
    # the driver saw the reply; the driver then redoes the call under the same ticket.
    algo = make_algorithm(ray_config(), "cpu", tmp_path)
    try:
        rt = algo.runtime
        ticket = rt.new_ticket("collector0")
        first = ray.get(rt.launch_collect(0, 60, 60, ticket))
        again = ray.get(rt.launch_collect(0, 60, 60, ticket))
        assert first["real_added"] == again["real_added"] == buffer_sizes(algo)["real_added"] == 60
        assert again["finished_returns"] == []  # the redone call's episodes were not stored
        fresh = ray.get(rt.launch_collect(0, 10, 10, rt.new_ticket("collector0")))
        assert fresh["real_added"] == buffer_sizes(algo)["real_added"] == 70
        # the same for model rows pushed by a rollout worker
        starts = ray.get(rt.buffer.sample_env_obs.remote(20))
        policy = rt.learner.policy.remote()
        weights = ray.get(rt.model_trainer.weights.remote())
        ticket = rt.new_ticket("rollout_worker0")
        for _ in range(2):
            ray.get(rt.rollout_workers[0].generate.remote(weights, policy, starts, 1, rt.buffer, ticket))
        assert buffer_sizes(algo)["model_added"] == 20
    finally:
        algo.close()


def test_async_run_survives_killed_collector_and_trainer(ray_config, tmp_path, ray_cluster, single_thread):
    cfg = ray_config(**{"ray.schedule": "async", "ray.num_collectors": 2})
    algo = make_algorithm(cfg, "cpu", tmp_path)
    try:
        loop = algo.loop
        # advance the async loop call by call until a collector is busy past step 300, so that
        # the kills below interrupt calls in flight, not idle actors
        while not (algo.env_steps >= 300 and loop.busy("collect")):
            loop.launch()
            loop.wait_one()
        busy = [job.index for job in loop.jobs if job.kind == "collect"]
        ray.kill(algo.runtime.collectors[busy[0]])
        ray.kill(algo.runtime.model_trainer)
        records = run_steps(algo, cfg.total_steps)
        assert algo.env_steps == cfg.total_steps
        assert algo.runtime.restarts == {"collector": 1, "model_trainer": 1}
        # a killed collector's unfinished chunk never reached the buffer actor and was redone
        assert buffer_sizes(algo)["real_added"] == cfg.total_steps
        assert records[-1]["model/version"] >= 2
    finally:
        algo.close()


def test_async_does_not_wait_for_updates_that_cannot_start(ray_config, tmp_path, ray_cluster, single_thread):
    # The warm-up (100) ends long before D_env holds min_real_before_updates (256): the rate
    # limiter's lower bound must not hold the collectors back while the learner cannot update,
    # or the run waits forever at 200 env steps (found by the resume matrix).
    cfg = ray_config(**{"ray.schedule": "async", "total_steps": 300, "mbpo.epoch_length": 100,
                        "mbpo.init_random_steps": 100, "mbpo.min_real_before_updates": 256})
    train(cfg, str(tmp_path / "run"), progress=False)
    records = RunDirectory(tmp_path / "run").read_metrics()
    assert [r["env_steps"] for r in records] == [100, 200, 300]
    assert records[-1]["perf/updates_per_env_step_total"] > 0  # updates started once D_env had 256


def test_async_keeps_updates_per_env_step_within_bounds(ray_config, tmp_path, ray_cluster, single_thread):
    # G = 2 (tiny config); allow the learner to fall to 1 update per env step
    cfg = ray_config(**{"ray.schedule": "async", "ray.min_updates_per_step": 1.0, "ray.learner_chunk": 20})
    train(cfg, str(tmp_path / "run"), progress=False)
    records = RunDirectory(tmp_path / "run").read_metrics()
    assert [r["env_steps"] for r in records] == [200, 400, 600]
    total = records[-1]["perf/updates_per_env_step_total"]
    assert 1.0 <= total <= 2.0, total
    for r in records[1:]:
        assert "perf/collector_policy_lag" in r and "perf/learner_updates_per_s" in r
        assert r["perf/updates_per_env_step"] <= 2.0 + 1e-9
    assert records[-1]["model/version"] >= 2 and records[-1]["rollout/transitions"] > 0
    lags = [r["perf/rollout_policy_lag_max"] for r in records if "perf/rollout_policy_lag_max" in r]
    assert lags  # async: a rollout may use an older policy, and says how much older


def test_resume_restores_buffer_actor(ray_config, tmp_path, ray_cluster, single_thread):
    # One schedule: both restore through the same RayRuntime.load_state_dict. Resuming the run to
    # its end is tests/test_resume_matrix.py's (mbpo-ray-sync, mbpo-ray-async): here, what a
    # fresh actor group holds once it has loaded the checkpoint.
    cfg = ray_config(**{"ray.schedule": "sync"})
    out = tmp_path / "run"
    part = train(cfg, str(out), progress=False, stop_at=350)
    assert not part.completed
    saved = RunDirectory(out).load_checkpoint()
    saved_real = saved["algorithm"]["runtime"]["buffer"]["real_added"]
    assert saved["env_steps"] == saved_real >= 350
    # a fresh actor group takes the buffer actor's contents from the checkpoint
    algo = make_algorithm(cfg, "cpu", out)
    try:
        algo.load_state_dict(saved["algorithm"])
        assert buffer_sizes(algo)["real_added"] == saved_real
        saved_model_rows = len(saved["algorithm"]["runtime"]["buffer"]["model"]["rows"])
        assert saved_model_rows > 0 and buffer_sizes(algo)["model"] == saved_model_rows
    finally:
        algo.close()


def test_missing_gpu_stops_at_once_and_writes_nothing(ray_config, tmp_path, ray_cluster, capsys):
    # device=auto: the config itself is fine (device=cpu with a GPU actor is refused earlier, by
    # validation); the cluster has no GPU
    cfg = ray_config(**{"ray.learner_gpus": 1, "device": "auto"})
    with pytest.raises(ConfigError, match="GPU: needs 1, the cluster has 0"):
        train(cfg, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()
    out = tmp_path / "cli"
    code = main(["train", "--env", "InvertedPendulum-v5", "--out", str(out), "--runtime", "ray",
                 "--set", "ray.model_trainer_gpus=2", "--device", "auto"])
    assert code == 2
    assert "GPU: needs 2" in capsys.readouterr().err
    assert not out.exists()


def test_bad_ray_config_names_the_field(ray_config):
    with pytest.raises(ConfigError, match="ray.schedule='fast'.*sync, async"):
        ray_config(**{"ray.schedule": "fast"})
    with pytest.raises(ConfigError, match="ray.collector_chunk=30.*divisor of mbpo.epoch_length"):
        ray_config(**{"ray.collector_chunk": 30})
    with pytest.raises(ConfigError, match="runtime=.*local for algo=pets"):
        ray_config(algo="pets")


def test_killed_driver_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL the driver process (no chance to save anything), then `--resume DIR`."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    settings = ["--set", "mbpo.epoch_length=100", "--set", "mbpo.init_random_steps=100",
                "--set", "mbpo.model_train_freq=100", "--set", "mbpo.rollout_batch_size=500",
                "--set", "mbpo.updates_per_step=1", "--set", "model.hidden_width=16",
                "--set", "model.max_fit_epochs=2", "--set", "sac.hidden_width=16", "--set", "eval_episodes=1",
                "--set", "ray.num_rollout_workers=1", "--set", "ray.collector_chunk=50"]
    cmd = [sys.executable, "-m", "mbpo_ray", "train", "--env", "InvertedPendulum-v5", "--steps", "100000",
           "--seed", "0", "--out", str(out), "--no-progress", "--device", "cpu", "--runtime", "ray", *settings]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = RunDirectory(out)
    deadline = time.time() + 300
    while time.time() < deadline and len(run.read_metrics()) < 3 and proc.poll() is None:
        time.sleep(0.5)
    assert len(run.read_metrics()) >= 3, proc.stderr.read() if proc.poll() is not None else "too slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved = run.load_checkpoint()
    stopped_at = saved["env_steps"]
    assert saved["algorithm"]["runtime"]["buffer"]["real_added"] == stopped_at >= 200
    done = subprocess.run([sys.executable, "-m", "mbpo_ray", "train", "--resume", str(out),
                           "--steps", str(stopped_at + 200), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = run.load_checkpoint()
    assert final["env_steps"] == stopped_at + 200
    # D_env came back from the checkpoint and grew by exactly the new steps
    assert final["algorithm"]["runtime"]["buffer"]["real_added"] == stopped_at + 200
    steps = [r["env_steps"] for r in run.read_metrics()]
    assert steps == list(range(100, stopped_at + 201, 100))
