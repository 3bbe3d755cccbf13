"""STEVE (Buckman et al. 2018) with a SAC base learner, as an ``Algorithm``.

The loop is MBPO's (``MBPOLoop``) with no model data (``mbpo.real_ratio`` 1, which validation
requires for algo steve): ``mbpo.init_random_steps`` uniform-random env steps, then per env
step one policy step into D_env and ``mbpo.updates_per_step`` STEVE updates on batches of
``sac.batch_size`` real transitions once D_env holds ``mbpo.min_real_before_updates``; an
evaluation and a metrics record every ``mbpo.epoch_length`` env steps and at the end. So the
records have MBPO's keys, eval seeds and perf/ timers (perf/sac_seconds is the time in STEVE
updates, model fitting included; perf/model_seconds and perf/rollout_seconds stay 0: STEVE's
models are fit inside its update). The learner is ``mbpo_ray.agents.steve.STEVELearner``; the
runtime hands it every real transition (``observe``) for its standardisation statistics.
"""
from __future__ import annotations

from mbpo_ray.agents.steve import STEVELearner
from mbpo_ray.algos.mbpo import MBPO
from mbpo_ray.config import TrainConfig
from mbpo_ray.runtime.factory import make_runtime


def steve_learner(obs_dim: int, act_dim: int, cfg: TrainConfig, device) -> STEVELearner:
    return STEVELearner(obs_dim, act_dim, cfg.sac, cfg.steve, device)


class STEVE(MBPO):
    """MBPO's loop with no model data (real_ratio 1) over a runtime that trains STEVE's learner."""

    def make_runtime(self, cfg: TrainConfig, device):
        self.title = "STEVE"
        return make_runtime(cfg, device, make_agent=steve_learner, with_model=False)
