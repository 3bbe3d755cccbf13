"""The overlapped MBPO schedule (algos/mbpo_async.py) against the step-by-step one's counts, on
a fake AsyncRuntime whose jobs end in the order they were started: how many model transitions
and agent updates a run makes do not depend on how its work overlaps."""
from typing import Any, Dict, List

import pytest

from mbpo_ray.algos.mbpo_async import AsyncMBPOLoop
from mbpo_ray.algos.mbpo_loop import MBPOLoop
from mbpo_ray.config import make_config
from mbpo_ray.runtime.base import Job


class FakeAsyncRuntime:
    """Jobs end first-started first-done; collectors add one D_env row per env step; records what
    the loop asked for."""

    def __init__(self, num_collectors: int = 2):
        self.num_collectors = num_collectors
        self.rows = 0
        self.start_states: List[int] = []     # per start_rollouts call
        self.update_chunks: List[tuple] = []  # (D_env rows when started, updates)
        self.fits = 0

    # the step-by-step interface, as far as the loops use it
    def env_step(self, random_action: bool):
        self.rows += 1
        return None

    def real_size(self) -> int:
        return self.rows

    def fit_model(self) -> Dict[str, float]:
        self.fits += 1
        return {"model/holdout_mse": 1.0}

    def generate_rollouts(self, num_start_states: int, rollout_length: int, capacity: int) -> Dict[str, float]:
        self.start_states.append(num_start_states)
        return {}

    def update_agent(self, num_updates: int, real_ratio: float) -> None:
        self.update_chunks.append((self.rows, num_updates))

    def agent_metrics(self):
        return {}

    runtime_metrics = diagnostic_metrics = agent_metrics

    def evaluate(self, episodes: int, seed: int) -> Dict[str, float]:
        return {"eval/return_mean": 0.0}

    # the overlapped interface
    def start_collect(self, collector: int, num_steps: int, num_random: int) -> Job:
        return Job("collect", collector, handle=num_steps)

    def start_fit(self) -> Job:
        return Job("fit", handle=None)

    def start_rollouts(self, num_start_states: int, rollout_length: int, capacity: int) -> List[Job]:
        self.start_states.append(num_start_states)
        return [Job("rollout", i) for i in range(2)]

    def start_update(self, num_updates: int, real_ratio: float) -> Job:
        self.update_chunks.append((self.rows, num_updates))
        return Job("update", handle=num_updates)

    def wait_any(self, jobs) -> tuple:
        job = jobs[0]
        if job.kind == "collect":
            self.rows += job.handle
            return job, {"steps": job.handle, "finished_returns": []}
        if job.kind == "update":
            return job, {"updates": job.handle}
        if job.kind == "fit":
            return job, self.fit_model()
        return job, {}

    def merge_rollout_metrics(self, parts: List[Dict[str, Any]]) -> Dict[str, float]:
        return {}


def config(**extra):
    overrides = {"total_steps": 1000, "mbpo.epoch_length": 200, "mbpo.init_random_steps": 100,
                 "mbpo.model_train_freq": 250, "mbpo.rollout_freq": 50, "mbpo.rollout_batch_size": 1000,
                 "mbpo.updates_per_step": 2, "mbpo.min_real_before_updates": 64,
                 "ray.collector_chunk": 50, "ray.learner_chunk": 40, "ray.schedule": "async"}
    overrides.update(extra)
    return make_config("InvertedPendulum-v5", overrides)


def run(loop) -> None:
    while loop.state.env_steps < loop.cfg.total_steps:
        loop.step()


def sync_and_async(cfg):
    sync_rt, async_rt = FakeAsyncRuntime(), FakeAsyncRuntime()
    run(MBPOLoop(cfg, sync_rt))
    loop = AsyncMBPOLoop(cfg, async_rt)
    run(loop)
    return sync_rt, async_rt, loop


@pytest.mark.parametrize("rollout_freq", [50, 250, 1000])
def test_async_rollouts_follow_the_rollout_frequency(rollout_freq):
    # Before, the overlapped loop branched rollouts only when a fit was published, each sized for
    # one rollout point: with rollout_freq 50 and model_train_freq 250 it made a fifth of the
    # step-by-step loop's model transitions.
    sync_rt, async_rt, _ = sync_and_async(config(**{"mbpo.rollout_freq": rollout_freq}))
    assert sum(sync_rt.start_states) > 0
    assert sum(async_rt.start_states) == sum(sync_rt.start_states)
    # no fit after the last env step (the step-by-step loop makes none there either)
    assert async_rt.fits == sync_rt.fits


@pytest.mark.parametrize("min_real, init", [(64, 100), (300, 100), (300, 0)])
def test_async_updates_begin_where_the_step_by_step_updates_begin(min_real, init):
    # Before, the update debt counted from the end of the warm-up even while D_env held fewer
    # than min_real_before_updates rows, so the learner's first chunk made up for steps at
    # which the step-by-step loop makes no updates (here 2 x 200 of them).
    cfg = config(**{"mbpo.min_real_before_updates": min_real, "mbpo.init_random_steps": init,
                    "mbpo.real_ratio": 1.0 if init == 0 else 0.05})
    sync_rt, async_rt, loop = sync_and_async(cfg)
    total_sync = sum(n for _, n in sync_rt.update_chunks)
    assert total_sync == 2 * (1000 - max(init, min_real - 1))
    assert loop.state.updates == total_sync
    # every chunk stays within what the step-by-step loop had made by then
    made = 0
    for rows, n in async_rt.update_chunks:
        made += n
        assert made <= 2 * (rows - max(init, min_real - 1)), (rows, made)


def test_a_checkpoint_of_the_schedule_dict_loads_into_the_typed_state():
    # releases before the typed state kept the overlapped schedule's fields in a dict
    old = {"env_steps": 400, "episode_returns": [], "model_metrics": {"model/holdout_mse": 1.0},
           "rollout_metrics": {}, "last_eval": 5.0, "schedule": {"updates": 600, "next_fit_at": 500}}
    state = AsyncMBPOLoop.state_from_dict(old)
    assert (state.env_steps, state.updates, state.next_fit_at) == (400, 600, 500)
    loop = AsyncMBPOLoop(config(), FakeAsyncRuntime(), state)
    # what the old dict did not hold is derived: the next rollout point, a published model
    assert state.next_rollout_at == 400 and state.model_published is True
    assert AsyncMBPOLoop.state_from_dict(loop.state_dict()) == state
    sync = MBPOLoop.state_from_dict({**old, "schedule": {}})
    assert sync.env_steps == 400 and not hasattr(sync, "updates")
