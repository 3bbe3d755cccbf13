"""STEVE (Buckman et al. 2018) with a SAC base learner, as an ``Algorithm``.

The loop is MBPO's (``MBPOLoop``) with no model data (``mbpo.real_ratio`` 1, which validate()
requires for algo steve): ``mbpo.init_random_steps`` uniform-random env steps, then per env
step one policy step into D_env and ``mbpo.updates_per_step`` STEVE updates on batches of
``sac.batch_size`` real transitions once D_env holds ``mbpo.min_real_before_updates``; an
evaluation and a metrics record every ``mbpo.epoch_length`` env steps and at the end. So the
records have MBPO's keys, eval seeds and perf/ timers (perf/sac_seconds is the time in STEVE
updates, model fitting included; perf/model_seconds and perf/rollout_seconds stay 0: STEVE's
models are fit inside its update). The learner is ``mbpo_ray.agents.steve.STEVELearner``.
"""
from __future__ import annotations

import torch

from mbpo_ray.agents.steve import STEVELearner
from mbpo_ray.algos.mbpo import MBPO, MBPOLoop
from mbpo_ray.config import TrainConfig
from mbpo_ray.runtime.local import AgentRuntime


class STEVERuntime(AgentRuntime):
    """The env, D_env, the STEVE learner and evaluation in this process; each real transition
    also updates the learner's standardisation statistics."""

    def make_agent(self):
        agent = STEVELearner(self.obs_dim, self.act_dim, self.cfg.sac, self.cfg.steve, self.device)
        return agent, agent.metric_names

    def observe(self, row: torch.Tensor) -> None:
        obs, _, rew, next_obs, _ = self.real_buffer.split(row)
        self.agent.observe(obs, rew, next_obs)


class STEVE(MBPO):
    """MBPO's loop with no model data (real_ratio 1) over the STEVE runtime above."""

    def make_runtime(self, cfg: TrainConfig, device):
        self.title = "STEVE"
        return STEVERuntime(cfg, device), MBPOLoop
