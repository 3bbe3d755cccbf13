"""What SAC and STEVE share: the SAC actor-critic (Haarnoja et al. 2018) that both train.

``ActorCritic`` owns the tanh-Gaussian policy, the critic ensemble (one StackedMLP: one batched
matmul for all members) with its target copy, the automatic temperature (log alpha towards
``sac.target_entropy``, default -action_dim), SAC's policy and temperature losses, the optimizer,
the one-backward update with the target critic's fused lerp, and the learner's state. A subclass
brings only its critic target and any losses of its own, in ``_losses`` (STEVE), or its whole
step (SAC: ``mbpo_ray.agents.sac_update``, without autograd); see docs/baselines.md for what SAC
and STEVE each are. Actions live in [-1, 1]; the env wrapper rescales them to the
env's bounds.

The update is a pure tensor function: no host sync; its metrics come back as one tensor in the
order of ``metric_names``, read only when logged.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.config import SACConfig
from mbpo_ray.cuda_graph import GraphedStep
from mbpo_ray.nn import LAYER_NORM_EPS, StackedMLP, full_precision, make_adam

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class NormReLU(nn.Module):
    """LayerNorm without learned scale or shift, then ReLU (sac.policy_layer_norm): no parameters,
    so the policy's parameter names are those of the plain policy."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS))


def _mlp(in_dim: int, hidden: int, layers: int, out_dim: int, layer_norm: bool = False) -> nn.Sequential:
    mods, dim = [], in_dim
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), NormReLU() if layer_norm else nn.ReLU()]
        dim = hidden
    mods.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*mods)


class TanhGaussianPolicy(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int, layers: int, layer_norm: bool = False):
        super().__init__()
        self.net = _mlp(obs_dim, hidden, layers, 2 * act_dim, layer_norm)

    @classmethod
    def from_config(cls, obs_dim: int, act_dim: int, sac_cfg: SACConfig) -> "TanhGaussianPolicy":
        """The policy a run's ``sac`` config describes (the learner's, a rollout worker's, a video's)."""
        return cls(obs_dim, act_dim, sac_cfg.hidden_width, sac_cfg.num_hidden_layers, sac_cfg.policy_layer_norm)

    def gaussian(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The pre-tanh Gaussian (mean, log std) at obs [B, obs_dim] that actions are drawn from
        (float32, also under bf16 autocast: mbpo_ray.precision)."""
        mean, log_std = full_precision(self.net(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs: torch.Tensor, noise: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample a reparameterised action in [-1, 1] and its log-probability; ``noise`` is the
        standard-normal draw [B, act_dim] to use (drawn here when None)."""
        mean, log_std = self.gaussian(obs)
        std = log_std.exp()
        noise = torch.randn_like(mean) if noise is None else noise
        pre_tanh = mean + std * noise
        action = torch.tanh(pre_tanh)
        # log N(u; mean, std) - log(1 - tanh(u)^2), the latter in its stable softplus form.
        log_prob = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
        return action, log_prob

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        if deterministic:
            return torch.tanh(self.gaussian(obs)[0])
        return self.act_and_gaussian(obs)[0]  # forward's draw, without its log-probability

    @torch.no_grad()
    def act_and_gaussian(self, obs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A sampled action with the Gaussian it was drawn from: (action, mean, log std), one
        forward pass and the same random draw as ``act``."""
        mean, log_std = self.gaussian(obs)
        return torch.tanh(mean + log_std.exp() * torch.randn_like(mean)), mean, log_std


class ActorCritic(nn.Module):
    """A SAC learner without its critic target.

    Construction is in two steps so that a subclass's own modules are created between them, in
    the order that fixes their initial weights under a seed: ``__init__`` builds the policy, the
    critics (``num_q`` members) and the temperature; the subclass adds its modules, then calls
    ``_setup_training(device)``, which moves everything to the device and builds the optimizer
    over ``_optimizer_params()``.

    A subclass defines ``metric_names`` and ``_losses(obs, act, rew, next_obs, done, noise) ->
    (total loss, metrics tensor)``, built from the parameters as they are before the step;
    ``noise`` is what its ``draw_noise`` drew for the batch (None: it draws inline).
    """

    metric_names: Tuple[str, ...] = ()
    # How the policy loss reduces the critic ensemble at (s, a ~ pi(s)): "min" or "mean".
    policy_q_reduction = "min"

    def __init__(self, obs_dim: int, act_dim: int, sac_cfg: SACConfig, num_q: int):
        super().__init__()
        self.sac_cfg = sac_cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.policy = TanhGaussianPolicy.from_config(obs_dim, act_dim, sac_cfg)
        self.q = StackedMLP(num_q, obs_dim + act_dim, [sac_cfg.hidden_width] * sac_cfg.num_hidden_layers, 1,
                            layer_norm=sac_cfg.critic_layer_norm)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(sac_cfg.init_log_alpha)))
        entropy = sac_cfg.target_entropy if sac_cfg.target_entropy is not None else -float(act_dim)
        self.register_buffer("target_entropy", torch.tensor(float(entropy)))

    def agent_parameters(self) -> List[torch.Tensor]:
        """Policy, critics and temperature, in the optimizer's order."""
        return [*self.policy.parameters(), *self.q.parameters(), self.log_alpha]

    def _optimizer_params(self) -> Any:
        """What the Adam is built over (parameters or parameter groups; default lr
        ``sac.learning_rate``). One Adam over policy, critics and temperature: the three losses
        touch disjoint parameters and share lr and betas, so this equals three optimizers, in
        fewer kernels."""
        return self.agent_parameters()

    def _setup_training(self, device: torch.device) -> None:
        self.resets = 0  # reset_networks calls
        self.to(device)
        self.device = device
        self.optimizer = make_adam(self._optimizer_params(), self.sac_cfg.learning_rate)
        self._q_params = list(self.q.parameters())
        self._q_target_params = list(self.q_target.parameters())
        if self.sac_cfg.compile:
            self._compile()
        # sac.cuda_graph: the whole update (losses, backward, Adam, target lerp) as one graph
        # (mbpo_ray.cuda_graph); config validation keeps it to learners with draw_noise.
        self._graphed = (GraphedStep(self._step, lambda: [*self.parameters(), *self.buffers()], [self.optimizer])
                         if self.sac_cfg.cuda_graph else None)

    def _compile(self) -> None:
        """sac.compile: torch.compile the update's hot function (here the losses)."""
        self._losses = torch.compile(self._losses)

    # --- data statistics ---
    def observe(self, obs: torch.Tensor, rew: torch.Tensor, next_obs: torch.Tensor) -> None:
        """Called with every real transition ([N, ...]) once it is stored; a learner that keeps
        statistics of the real data updates them here. Nothing to do for plain SAC."""

    # --- the update ---
    def draw_noise(self, batch_size: int) -> Optional[torch.Tensor]:
        """The random draws of one update on a batch of ``batch_size``, made before the update so
        that the update itself is a deterministic function of (parameters, batch, noise): what
        lets seeds share one stacked update (mbpo_ray.agents.stacked) with their own random
        streams. None: the subclass draws inline (it cannot be stacked)."""
        return None

    def _actor_losses(self, obs: torch.Tensor, alpha: torch.Tensor, noise: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAC's policy and temperature losses at the batch's states: (policy_loss, alpha_loss,
        log pi(a|s)) for one draw a ~ pi(s) (with ``noise``, drawn inline when None). Q is
        evaluated with detached parameters, so the policy loss differentiates only into the
        actions; alpha is the detached temperature."""
        new_act, logp = self.policy(obs, noise)
        q_pi = self.q(torch.cat([obs, new_act], -1), detach_params=True).squeeze(-1)
        q_pi = q_pi.min(0).values if self.policy_q_reduction == "min" else q_pi.mean(0)
        policy_loss = (alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        return policy_loss, alpha_loss, logp

    def _losses(self, obs, act, rew, next_obs, done, noise) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update(self, obs, act, rew, next_obs, done) -> torch.Tensor:
        """One gradient step on every loss (one backward, one Adam step) and the target-critic
        update; returns the metrics as one tensor (order: ``metric_names``)."""
        noise = self.draw_noise(obs.shape[0])
        subset = self.draw_subset()
        draws = (noise,) if subset is None else (noise, subset)
        if self._graphed is not None:
            return self._graphed(obs, act, rew, next_obs, done, *draws)
        return self._step(obs, act, rew, next_obs, done, *draws)

    def draw_subset(self) -> Optional[torch.Tensor]:
        """REDQ's random subset of target critics for one update (drawn after ``draw_noise``), a
        [num_critics] bool mask; None where the learner has none (SAC's min over all)."""
        return None

    def _step(self, obs, act, rew, next_obs, done, noise) -> torch.Tensor:
        """``update`` after its random draws: a deterministic function of the batch, the noise and
        the learner's state, which it changes in place (what a CUDA graph can replay)."""
        total, metrics = self._losses(obs, act, rew, next_obs, done, noise)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target_params, self._q_params, self.sac_cfg.tau)
        return metrics

    def metrics_to_dict(self, metrics: torch.Tensor) -> Dict[str, float]:
        return dict(zip(self.metric_names, metrics.tolist()))

    @torch.no_grad()
    def reset_networks(self) -> None:
        """Fresh policy, critics and target critics (the target a copy of the new critics) and a
        fresh Adam state; the temperature stays (mbpo.agent_reset_every, docs/mbpo_plus.md#resets).
        The parameters are written in place, so views of them (SAC's stack of one) stay valid."""
        for layer in self.policy.net:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        self.q.reset_parameters()
        torch._foreach_copy_(self._q_target_params, self._q_params)
        self.optimizer.state.clear()
        if self._graphed is not None:
            self._graphed.reset()
        self.resets += 1

    # --- state ---
    def full_state_dict(self) -> Dict[str, Any]:
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state_dict(self, state: Dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self._graphed is not None:
            self._graphed.reset()  # the optimiser's state tensors are new ones
