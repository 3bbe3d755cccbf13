"""Save, stop, resume: one test over every algorithm and both runtimes (docs/resume.md).

For each case, run A goes uninterrupted to N env steps; run B is stopped at a step S in the
middle of an epoch (``stop_at``, as Ctrl-C stops a run) and resumed (``resume=True``) to N. The
test then asserts what docs/resume.md promises for that case, and nothing more:

  * every case: B stops at S (or, where the algorithm advances in larger steps, at its first
    step boundary at or after S) with a checkpoint of that many env steps and only the epochs finished
    by then in metrics.jsonl; resumed, it reaches N with the same epochs as A in metrics.jsonl
    (env_steps and epoch numbers: none twice, none missing) and D_env holds N transitions;
  * bit-identical cases: every metric but the wall-clock ones (helpers.comparable) and
    the final checkpoint's state, tensor for tensor, are A's;
  * the other cases: what docs/resume.md lists for them (the records written before the stop,
    the schedule counts of every epoch, the SAC update total).

S is config arithmetic (epoch_length + epoch_length // 2), never a step read off one machine's
float trajectory. A run on the local runtime is stopped twice (S and S + 1): an episode lasts
more than one step, so one of the two stops is inside an episode whatever the trajectory, and the
test checks that one was.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import pytest

from mbpo_ray.config import make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train
from helpers import WALL_CLOCK_KEYS, assert_states_equal, comparable

ENV = "InvertedPendulum-v5"

# The keys of a record that the sync schedule fixes (docs/resume.md).
SCHEDULE_KEYS = ("train/updates", "rollout/k", "rollout/start_states", "model/version")


# --- the configs: small versions of each test module's tiny configs ---------------------------

def small_mbpo(tiny_config, **extra):
    """150 steps in epochs of 50 after a warm-up of 25, so that the first epoch's record already
    has model fits (every 25 steps), rollouts (k = 1, 2, 3 from steps 25, 75, 125) and SAC
    updates (from step 32: within the collector chunks that the async rate limiter lets through
    before any update has been made; with a later start it would wait forever)."""
    overrides = {"total_steps": 150, "mbpo.epoch_length": 50, "mbpo.init_random_steps": 25,
                 "mbpo.min_real_before_updates": 32, "sac.batch_size": 32, "mbpo.model_train_freq": 25,
                 "mbpo.rollout_batch_size": 100}
    overrides.update(extra)
    return tiny_config(**overrides)


def mbpo_plus(tiny_config, **extra):
    """Every MBPO+ option at once (docs/mbpo_plus.md): macura's running threshold, REDQ's critic
    ensemble and subset draws, LayerNorms, both resets (every 50 steps after the warm-up: at
    env steps 75 and 125, the first of them right at the stop), scale-aware targets."""
    options = {"mbpo.rollout_uncertainty": "macura", "mbpo.rollout_schedule": [0, 1, 3, 3],
               "sac.critic_layer_norm": True, "sac.policy_layer_norm": True, "sac.num_critics": 4,
               "sac.critic_subset": 2, "mbpo.model_reset_every": 50, "mbpo.agent_reset_every": 50,
               "model.normalize_targets": True}
    options.update(extra)
    return small_mbpo(tiny_config, **options)


def pets_local(tiny_config):
    return make_config(ENV, {
        "algo": "pets", "total_steps": 200, "seed": 3, "device": "cpu", "mbpo.epoch_length": 100,
        "model.hidden_width": 32, "model.max_fit_epochs": 5, "pets.horizon": 6, "pets.population": 20,
        "pets.num_elites": 4, "pets.iterations": 2, "pets.num_particles": 4, "pets.random_episodes": 2})


def steve_local(tiny_config):
    return make_config(ENV, {
        "algo": "steve", "total_steps": 300, "seed": 3, "device": "cpu", "eval_episodes": 2,
        "mbpo.epoch_length": 100, "mbpo.init_random_steps": 100, "mbpo.updates_per_step": 2,
        "sac.hidden_width": 32, "sac.batch_size": 64, "steve.horizon": 2,
        "steve.model_hidden_width": 32, "steve.model_num_hidden_layers": 2})


def rllib_sac(tiny_config):
    # iterations of gcd(50, 175) = 25 env steps: S = 75 is an iteration end inside epoch 1
    return make_config(ENV, {
        "algo": "rllib-sac", "total_steps": 175, "seed": 3, "device": "cpu", "eval_episodes": 2,
        "mbpo.epoch_length": 50, "mbpo.init_random_steps": 25, "mbpo.min_real_before_updates": 32,
        "mbpo.updates_per_step": 2, "sac.hidden_width": 32, "sac.batch_size": 32})


def ray_config(tiny_config, **extra):
    # One collector and one rollout worker: each actor group costs a torch import per actor.
    return small_mbpo(tiny_config, runtime="ray", **{"ray.num_rollout_workers": 1, "ray.collector_chunk": 25},
                      **extra)


def every_env_step(cfg) -> int:
    return 1


def rllib_iteration(cfg) -> int:
    return math.gcd(cfg.mbpo.epoch_length, cfg.total_steps)


def epoch(cfg) -> int:
    return cfg.mbpo.epoch_length


@dataclass(frozen=True)
class Case:
    name: str
    config: Callable[..., Any]  # (tiny_config fixture) -> TrainConfig
    bit_identical: bool
    step: Callable[[Any], int] = every_env_step  # env steps between the points a run can stop at
    uses_ray: bool = False
    same_until_stop: bool = False  # not bit-identical, but the records before the stop are A's
    same_keys: Tuple[str, ...] = ()  # not bit-identical, but these keys of every record are A's
    update_total: bool = False  # async: the run's SAC update count is A's, within the bounds


CASES = [
    Case("mbpo-local", small_mbpo, bit_identical=True),
    Case("sac-local", lambda t: small_mbpo(t, algo="sac"), bit_identical=True),
    Case("mbpo-plus-local", mbpo_plus, bit_identical=True),
    Case("mbpo-m2ac-local", lambda t: small_mbpo(t, **{"mbpo.rollout_uncertainty": "m2ac",
                                                        "mbpo.rollout_schedule": [0, 1, 3, 3]}), bit_identical=True),
    Case("pets-local", pets_local, bit_identical=True),
    Case("steve-local", steve_local, bit_identical=True),
    Case("mbpo-ray-sync", ray_config, bit_identical=False, uses_ray=True, same_until_stop=True,
         same_keys=SCHEDULE_KEYS),
    Case("mbpo-ray-async", lambda t: ray_config(t, **{"ray.schedule": "async"}), bit_identical=False,
         step=epoch, uses_ray=True, update_total=True),
    Case("rllib-sac", rllib_sac, bit_identical=False, step=rllib_iteration, uses_ray=True,
         same_until_stop=True, same_keys=("train/updates",)),
]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the module's Ray cases (an actor group asks for 4 or 5 logical
    CPUs: collector, rollout worker, model trainer, learner, buffer; they mostly wait on each
    other)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=6, object_store_memory=128 * 1024 * 1024,
                 include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


# --- reading a run ------------------------------------------------------------------------------

def epoch_ends(cfg) -> List[int]:
    """The env_steps of the records a run to cfg.total_steps writes: every epoch end, and the end."""
    length, total = cfg.mbpo.epoch_length, cfg.total_steps
    return list(range(length, total, length)) + [total]


def d_env_size(cfg, run: RunDirectory, state: Dict[str, Any]) -> int:
    """The transitions D_env holds, from a checkpoint's algorithm state."""
    if cfg.algo == "rllib-sac":  # RLlib's replay buffer is saved next to RLlib's own checkpoint
        with open(run.path / state["path"] / "replay_buffer.pkl", "rb") as f:
            return pickle.load(f)["_num_timesteps_added"]
    if cfg.runtime == "ray":
        buffer = state["runtime"]["buffer"]
        assert buffer["real"]["rows"].shape[0] == buffer["real_added"]
        return buffer["real_added"]
    if cfg.algo == "pets":
        return state["buffer"]["rows"].shape[0]
    return state["runtime"]["real_buffer"]["rows"].shape[0]


def running_episode_length(state: Dict[str, Any]) -> int:
    """How far the training episode had got when the checkpoint was written (local runtime:
    the training env's state, with PETS at the top of the algorithm's state)."""
    return state.get("runtime", state)["episode"][1]


# --- the matrix ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.ray] if c.uses_ray else [])
                                  for c in CASES])
def test_resume_keeps_the_documented_guarantee(case, tiny_config, tmp_path, request, single_thread):
    if case.uses_ray:
        request.getfixturevalue("ray_session")
    cfg = case.config(tiny_config)
    total, length = cfg.total_steps, cfg.mbpo.epoch_length
    mid_epoch = length + length // 2
    step = case.step(cfg)
    # local runs stop exactly where asked: twice in a row (see the module docstring)
    stops = [mid_epoch, mid_epoch + 1] if step == 1 and not case.uses_ray else [mid_epoch]
    assert -(-stops[-1] // step) * step < total

    # A: uninterrupted
    full = train(case.config(tiny_config), str(tmp_path / "a"), progress=False)
    a = RunDirectory(tmp_path / "a")
    assert full.completed and full.env_steps == total
    a_records = a.read_metrics()
    assert [r["env_steps"] for r in a_records] == epoch_ends(cfg)

    # B: stopped (once or twice), then resumed to the end
    b = RunDirectory(tmp_path / "b")
    episode_lengths = []
    for i, stop in enumerate(stops):
        part = train(case.config(tiny_config) if i == 0 else b.load_config(), str(b.path),
                     resume=i > 0, progress=False, stop_at=stop)
        # at the first point at or after the stop where the algorithm's step() returns
        assert not part.completed and part.env_steps == -(-stop // step) * step, (stop, part.env_steps)
        saved = b.load_checkpoint()
        assert saved["env_steps"] == part.env_steps
        assert d_env_size(cfg, b, saved["algorithm"]) == part.env_steps
        assert [r["env_steps"] for r in b.read_metrics()] == [s for s in epoch_ends(cfg) if s <= part.env_steps]
        if not case.uses_ray:
            episode_lengths.append(running_episode_length(saved["algorithm"]))
    if episode_lengths:
        assert max(episode_lengths) > 0, "no stop fell inside an episode"  # see the module docstring
    stopped_at = part.env_steps
    resumed = train(b.load_config(), str(b.path), resume=True, progress=False)
    assert resumed.completed and resumed.env_steps == total and b.curve_path.exists()

    # every case: the same epochs, once each, and all N transitions in D_env
    b_records = b.read_metrics()
    assert [r["env_steps"] for r in b_records] == [r["env_steps"] for r in a_records]
    assert [r["epoch"] for r in b_records] == [r["epoch"] for r in a_records] == list(range(len(a_records)))
    final = b.load_checkpoint()
    assert final["env_steps"] == total
    assert d_env_size(cfg, b, final["algorithm"]) == total == d_env_size(cfg, a, a.load_checkpoint()["algorithm"])

    if case.bit_identical:
        assert comparable(b_records) == comparable(a_records)
        assert_states_equal(a.load_checkpoint()["algorithm"], final["algorithm"], ignore=WALL_CLOCK_KEYS)
        return
    if case.same_until_stop:
        before = [i for i, r in enumerate(a_records) if r["env_steps"] <= stopped_at]
        assert before and comparable([b_records[i] for i in before]) == comparable([a_records[i] for i in before])
    for key in case.same_keys:
        assert [r.get(key) for r in b_records] == [r.get(key) for r in a_records], key
    if case.update_total:
        r = cfg.ray
        high = cfg.mbpo.updates_per_step if r.max_updates_per_step is None else r.max_updates_per_step
        low = high if r.min_updates_per_step is None else r.min_updates_per_step
        # the env steps after which the sync schedule makes updates (docs/architecture.md#the-rate-limiter)
        with_updates = total - max(cfg.mbpo.init_random_steps, cfg.mbpo.min_real_before_updates - 1)
        for records in (a_records, b_records):
            ratio = records[-1]["perf/updates_per_env_step_total"]
            assert low - 1e-9 <= ratio <= high + 1e-9, ratio
            updates = sum(rec.get("train/updates", 0) for rec in records)
            assert updates == pytest.approx(ratio * with_updates)
        if low == high:  # the bounds meet: the count itself is fixed
            assert sum(rec.get("train/updates", 0) for rec in b_records) == \
                sum(rec.get("train/updates", 0) for rec in a_records) == math.floor(high * with_updates)
