"""STEVE: stochastic ensemble value expansion (Buckman et al. 2018), on a SAC learner.

For a replay sample (s, a, r, s', d) the critic's TD target mixes H + 1 candidate targets:

    T_i = r + sum_{j=1..i} gamma^j c_j r_j + gamma^(i+1) c_(i+1) V(s_i),      i = 0 .. H

where s_0 = s', s_j = f(s_(j-1), a_(j-1)) is rolled out under the current policy in a learned
dynamics model (a_j ~ pi(s_j)), r_j = r(s_(j-1), a_(j-1), s_j) is a learned reward,
V(s) = Q_target(s, a) - alpha log pi(a | s) with a ~ pi(s) is SAC's soft value, and the
continuation c_1 = 1 - d, c_(j+1) = c_j (1 - p_j) with p_j the learned probability that the
transition into s_j terminated. Each T_i has num_dynamics x num_reward x num_q samples (T_0
only num_q: it needs no model); their mean m_i and variance v_i give the weights
w_i = (1 / (v_i + eps)) / sum_k (1 / (v_k + eps)), and the target is sum_i w_i m_i, gradients
stopped. Every Q member regresses onto that one target.

Deviations from the paper and choices made here (docs/baselines.md, STEVE):
  * Base learner: SAC with automatic temperature instead of DDPG (a documented variant):
    V carries SAC's entropy term, the policy maximises mean-over-Q(s, pi(s)) - alpha log pi
    (the mean over the Q ensemble, as the original STEVE code's policy loss does; not SAC's
    min of two), alpha is tuned towards ``sac.target_entropy``. One update per env step by
    default (``mbpo.updates_per_step``), batches of ``sac.batch_size``, no model pretraining.
  * The action sampled at s_0 = s' is shared by every dynamics path, so T_0 is exactly SAC's
    target with the Q ensemble's values: r + gamma (1 - d) (Q_target(s', a') - alpha log pi(a'|s')).
  * Done models: the paper's termination head lived in the transition model. Here the done
    ensemble is its own module and p_j is its mean probability (a Bernoulli mixture is the
    Bernoulli of the mean probability; drawing a done member afresh at every step gives exactly
    this continuation in expectation). So termination uncertainty scales the candidates but does
    not add to their variance, and the sample count stays dynamics x reward x Q.
  * Variances are population variances (as tf.nn.moments in the original); eps = 1e-8 (as the
    original) keeps zero-variance candidates finite: with d = 1, or with one member everywhere,
    all candidates may have zero variance and then get equal weights. With num_q = 1, T_0 has
    zero variance and takes nearly all the weight: use num_q >= 2 to let the model matter.
    A candidate whose mean or variance is not finite (a diverging model rollout) gets weight 0.
  * All members of every ensemble train on the same batch (diversity from independent
    initialisation); the original code gave each sample to one random member.
  * Normalisation: the models see inputs and predict targets standardised by a running mean and
    standard deviation of every real transition added (``observe``): observations (s and s',
    same statistics), the observation change s' - s (dynamics target) and the reward (reward
    target); actions are in [-1, 1] already. A standard deviation below 1e-6 counts as 1 (a
    constant feature, such as InvertedPendulum's reward, is then centred only). Q and the
    policy see raw observations, as the project's SAC does.
  * Losses: dynamics MSE on the standardised change, reward MSE on the standardised reward,
    done binary cross-entropy on the logit; summed over members (each member gets its own mean
    loss's gradient), together with the critic, policy and temperature losses in one backward
    and one Adam step (two parameter groups: agent at ``sac.learning_rate``, models at
    ``steve.model_learning_rate``). The target is built before that step, from the models,
    policy and target critic as they were.

The update is one tensor function: no host sync, its metrics come back as one tensor in the
order of ``metric_names(horizon)`` (ensemble losses averaged over members; train/steve_weight_i
is the batch-mean weight of T_i), and the target critic follows with one fused lerp.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.agents.actor_critic import ActorCritic
from mbpo_ray.config import SACConfig, STEVEConfig
from mbpo_ray.nn import StackedMLP

VARIANCE_EPS = 1e-8
MIN_STD = 1e-6
BASE_METRIC_NAMES = ("train/q_loss", "train/policy_loss", "train/alpha_loss", "train/alpha",
                     "train/entropy", "train/q_mean", "train/dynamics_loss", "train/reward_loss",
                     "train/done_loss", "train/target_mean")


def metric_names(horizon: int) -> Tuple[str, ...]:
    return BASE_METRIC_NAMES + tuple(f"train/steve_weight_{i}" for i in range(horizon + 1))


# --- the STEVE target as pure functions of the sampled pieces ----------------------------------

def candidate_samples(rew: torch.Tensor, done: torch.Tensor, v0: torch.Tensor,
                      model_rew: torch.Tensor, done_prob: torch.Tensor, v: torch.Tensor,
                      discount: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Samples of the candidate targets.

    rew, done: [B] real reward and terminal flag; v0: [Q, B] soft values at s_0 = s';
    model_rew: [R, D, H, B] r_j (j = 1..H) of the transition into s_j on dynamics path D;
    done_prob: [D, H, B] p_j; v: [Q, D, H, B] soft values at s_1..s_H.
    Returns T_0 samples [Q, B] and T_1..T_H samples [R, Q, D, H, B].
    """
    horizon = done_prob.shape[-2]
    alive0 = 1.0 - done                                            # c_1
    survive = torch.cumprod(1.0 - done_prob, dim=-2)               # prod_{k<=j} (1 - p_k)
    survive_prev = torch.cat([torch.ones_like(done_prob[:, :1]), survive], dim=1)[:, :horizon]
    steps = torch.arange(1, horizon + 1, dtype=rew.dtype, device=rew.device)[:, None]
    gamma_j = discount ** steps                                    # [H, 1]: gamma^j
    discounted_rew = torch.cumsum(gamma_j * alive0 * survive_prev * model_rew, dim=-2)
    values = discount * gamma_j * alive0 * survive * v             # gamma^(i+1) c_(i+1) V(s_i)
    t0 = rew + discount * alive0 * v0
    t = rew + discounted_rew[:, None] + values[None]
    return t0, t


def candidate_moments(t0: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Population mean and variance of every candidate over its samples: ([H+1, B], [H+1, B])."""
    var0, mean0 = torch.var_mean(t0, dim=0, correction=0)
    means, variances = mean0[None], var0[None]
    if t.shape[-2] > 0:  # H > 0
        var, mean = torch.var_mean(t.flatten(0, 2), dim=0, correction=0)
        means, variances = torch.cat([means, mean]), torch.cat([variances, var])
    # A diverging rollout (inf or NaN) must not poison the target: such a candidate gets weight 0.
    bad = ~(torch.isfinite(means) & torch.isfinite(variances))
    means = torch.where(bad, torch.zeros_like(means), means)
    variances = torch.where(bad, torch.full_like(variances, float("inf")), variances)
    return means, variances


def inverse_variance_weights(variances: torch.Tensor, eps: float = VARIANCE_EPS) -> torch.Tensor:
    """w_i = (1 / (v_i + eps)) / sum_k (1 / (v_k + eps)) along dim 0."""
    inverse = 1.0 / (variances + eps)
    return inverse / inverse.sum(0, keepdim=True)


def steve_target(means: torch.Tensor, variances: torch.Tensor,
                 eps: float = VARIANCE_EPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """(target [B], weights [H+1, B]) from the candidates' moments."""
    weights = inverse_variance_weights(variances, eps)
    return (weights * means).sum(0), weights


# --- running standardisation of the model's inputs and targets ---------------------------------

class RunningMeanStd(nn.Module):
    """Mean and variance of every row seen, merged batch by batch (Chan et al.'s parallel form)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("m2", torch.zeros(dim))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        batch_mean = x.mean(0)
        batch_m2 = ((x - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean.add_(delta * (n / total))
        self.m2.add_(batch_m2 + delta ** 2 * (self.count * n / total))
        self.count.copy_(total)

    def std(self) -> torch.Tensor:
        std = (self.m2 / self.count.clamp(min=1.0)).sqrt()
        return torch.where(std < MIN_STD, torch.ones_like(std), std)


# --- the learner --------------------------------------------------------------------------------

class STEVELearner(ActorCritic):
    """The shared SAC actor-critic (``num_q`` critics, the policy loss over their mean) plus the
    dynamics, reward and done ensembles, the standardisation statistics and the STEVE target."""

    policy_q_reduction = "mean"  # as the original STEVE code's policy loss (module docstring)

    def __init__(self, obs_dim: int, act_dim: int, sac_cfg: SACConfig, cfg: STEVEConfig,
                 device: torch.device):
        super().__init__(obs_dim, act_dim, sac_cfg, num_q=cfg.num_q)
        self.cfg, self.horizon = cfg, cfg.horizon
        model_hidden = [cfg.model_hidden_width] * cfg.model_num_hidden_layers
        pair_dim = 2 * obs_dim + act_dim
        self.dynamics = StackedMLP(cfg.num_dynamics, obs_dim + act_dim, model_hidden, obs_dim, "silu")
        self.reward = StackedMLP(cfg.num_reward, pair_dim, model_hidden, 1, "silu")
        self.done = StackedMLP(cfg.num_done, pair_dim, model_hidden, 1, "silu")
        # columns: observation | observation change | reward
        self.normalizer = RunningMeanStd(2 * obs_dim + 1)
        self.metric_names = metric_names(cfg.horizon)
        self._setup_training(device)

    def _optimizer_params(self):
        """Two parameter groups: the agent at ``sac.learning_rate``, the models at
        ``steve.model_learning_rate``."""
        model_params = [*self.dynamics.parameters(), *self.reward.parameters(), *self.done.parameters()]
        return [{"params": self.agent_parameters()},
                {"params": model_params, "lr": self.cfg.model_learning_rate}]

    # --- data statistics ---
    def observe(self, obs: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor) -> None:
        """Add real transitions ([N, ...]) to the standardisation statistics."""
        self.normalizer.update(torch.cat([obs, next_obs - obs, rew[:, None]], dim=-1))

    def _stats(self):
        o = self.obs_dim
        mean, std = self.normalizer.mean, self.normalizer.std()
        return {"obs": (mean[:o], std[:o]), "delta": (mean[o:2 * o], std[o:2 * o]),
                "rew": (mean[2 * o], std[2 * o])}

    # --- models ---
    @staticmethod
    def _standardise(x, stat):
        return (x - stat[0]) / stat[1]

    def _dynamics_input(self, obs, act, stats):
        return torch.cat([self._standardise(obs, stats["obs"]), act], -1)

    def _pair_input(self, obs, act, next_obs, stats):
        return torch.cat([self._standardise(obs, stats["obs"]), act,
                          self._standardise(next_obs, stats["obs"])], -1)

    def predict_next_obs(self, obs, act, stats) -> torch.Tensor:
        """obs, act: [B, .] (the same for every member) or [D, B, .] -> next obs [D, B, obs_dim]."""
        mean, std = stats["delta"]
        return obs + mean + std * self.dynamics(self._dynamics_input(obs, act, stats))

    # --- the target ---
    def _candidate_samples(self, rew, done, next_obs, alpha) -> Tuple[torch.Tensor, torch.Tensor]:
        cfg, gamma, horizon = self.cfg, self.sac_cfg.discount, self.horizon
        stats = self._stats()
        batch = rew.shape[0]
        act0, logp0 = self.policy(next_obs)  # drawn first: the same a' as a SAC target's
        v0 = self.q_target(torch.cat([next_obs, act0], -1)).squeeze(-1) - alpha * logp0
        num_paths = cfg.num_dynamics
        if horizon == 0:
            empty = rew.new_zeros(num_paths, 0, batch)
            return candidate_samples(rew, done, v0, empty.expand(cfg.num_reward, -1, -1, -1), empty,
                                     empty.expand(cfg.num_q, -1, -1, -1), gamma)
        prev_obs, prev_act, path_obs, path_act, path_logp = [], [], [], [], []
        obs, act = next_obs, act0
        for _ in range(horizon):
            new_obs = self.predict_next_obs(obs, act, stats)  # [D, B, obs_dim]
            new_act, new_logp = self.policy(new_obs)
            prev_obs.append(obs.expand(num_paths, batch, -1))
            prev_act.append(act.expand(num_paths, batch, -1))
            path_obs.append(new_obs)
            path_act.append(new_act)
            path_logp.append(new_logp)
            obs, act = new_obs, new_act
        obs_j, act_j = torch.stack(path_obs, 1), torch.stack(path_act, 1)  # [D, H, B, .]
        q = self.q_target(torch.cat([obs_j, act_j], -1).flatten(0, 2)).squeeze(-1)
        v = q.view(cfg.num_q, num_paths, horizon, batch) - alpha * torch.stack(path_logp, 1)
        pair = self._pair_input(torch.stack(prev_obs, 1), torch.stack(prev_act, 1), obs_j,
                                stats).flatten(0, 2)
        rew_mean, rew_std = stats["rew"]
        model_rew = rew_mean + rew_std * self.reward(pair).view(cfg.num_reward, num_paths, horizon, batch)
        done_prob = torch.sigmoid(self.done(pair)).view(cfg.num_done, num_paths, horizon, batch).mean(0)
        return candidate_samples(rew, done, v0, model_rew, done_prob, v, gamma)

    @torch.no_grad()
    def candidate_samples(self, rew, done, next_obs) -> Tuple[torch.Tensor, torch.Tensor]:
        """T_0 samples [Q, B] and T_1..T_H samples [R, Q, D, H, B] for a batch (no gradient)."""
        return self._candidate_samples(rew, done, next_obs, self.log_alpha.exp())

    @torch.no_grad()
    def target(self, rew, done, next_obs) -> Dict[str, torch.Tensor]:
        """The STEVE target [B] with its weights, candidate means and variances [H+1, B]."""
        means, variances = candidate_moments(*self.candidate_samples(rew, done, next_obs))
        target, weights = steve_target(means, variances)
        return {"target": target, "weights": weights, "means": means, "variances": variances}

    # --- the update ---
    def _losses(self, obs, act, rew, next_obs, done, noise=None) -> Tuple[torch.Tensor, torch.Tensor]:
        # noise: None (draw_noise's default): STEVE draws inline, its rollouts' draws included
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            means, variances = candidate_moments(*self._candidate_samples(rew, done, next_obs, alpha))
            target, weights = steve_target(means, variances)
        q = self.q(torch.cat([obs, act], -1)).squeeze(-1)  # [Q, B]
        q_losses = 0.5 * ((q - target) ** 2).mean(dim=1)
        policy_loss, alpha_loss, logp = self._actor_losses(obs, alpha)  # over the Q ensemble's mean

        stats = self._stats()
        delta_pred = self.dynamics(self._dynamics_input(obs, act, stats))  # [D, B, obs_dim]
        delta_true = self._standardise(next_obs - obs, stats["delta"])
        dynamics_losses = ((delta_pred - delta_true) ** 2).mean(dim=(1, 2))
        pair = self._pair_input(obs, act, next_obs, stats)
        rew_pred = self.reward(pair).squeeze(-1)  # [R, B]
        reward_losses = ((rew_pred - self._standardise(rew, stats["rew"])) ** 2).mean(dim=1)
        done_logit = self.done(pair).squeeze(-1)  # [Dn, B]
        done_losses = F.binary_cross_entropy_with_logits(
            done_logit, done.expand_as(done_logit), reduction="none").mean(dim=1)

        total = (q_losses.sum() + policy_loss + alpha_loss + dynamics_losses.sum()
                 + reward_losses.sum() + done_losses.sum())
        metrics = torch.cat([
            torch.stack([q_losses.mean(), policy_loss, alpha_loss, alpha, -logp.mean(), q.mean(),
                         dynamics_losses.mean(), reward_losses.mean(), done_losses.mean(),
                         target.mean()]),
            weights.mean(dim=1),
        ]).detach()
        return total, metrics
