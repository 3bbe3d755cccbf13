"""SAC's update written out (issue 25): the losses' forward pass and their gradients as explicit
batched matmuls, with no autograd graph.

The SAC learner (``mbpo_ray.agents.sac.SAC``) and a seed group's stacked learners
(``mbpo_ray.agents.stacked``) both call ``sac_gradients``; it is the only SAC update. It computes
exactly what autograd computes for SAC's losses (docs/baselines.md; Haarnoja et al. 2018, as in
the softlearning SAC that MBPO's released code runs), all three losses from the parameters as
they are before the step:

* critic loss ``0.5 * sum_m mean_B (Q_m(s, a) - y)^2`` with the target
  ``y = r + gamma (1 - done) (min_m Qtarget_m(s', a') - alpha log pi(a'|s'))``, a' ~ pi(s');
* policy loss ``mean_B (alpha log pi(a~|s) - min_m Q_m(s, a~))``, a~ ~ pi(s) reparameterised,
  the critics' parameters held fixed (the gradient flows into a~ only);
* temperature loss ``-mean_B log_alpha (log pi(a~|s) + target_entropy)``, alpha = exp(log_alpha)
  held fixed in the other two.

Why by hand: at SAC's sizes (batch 256, 2x256 MLPs) autograd's per-op bookkeeping costs more
than the matmuls (benchmarks/precision.py). Here the policy runs once on s and s' stacked (one
matmul per layer), the twin critic once on (s, a) and (s, a~) stacked (one batched matmul per
layer for both members), and the backward pass reuses the forward's activations. The batched
matmuls are ``mbpo_ray.matmul``'s (oneDNN's float32 kernel on a CPU).

Every tensor has a leading seed dimension S (1 for a single learner): policy weights
[S, out, in] (nn.Linear's layout), critic weights [S, E, in, out] and biases [S, E, 1, out]
(``StackedMLP``'s), log_alpha and target_entropy [S]; batches [S, B, ...] and the noise
[S, 2, B, act_dim] (``SAC.draw_noise``). Under bfloat16 autocast (``precision: bf16``) the
matmuls run in bf16 as they do in the autograd form, and every network output, loss and
gradient is float32.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from mbpo_ray.agents.actor_critic import LOG_STD_MAX, LOG_STD_MIN
from mbpo_ray.matmul import baddbmm, bmm
from mbpo_ray.nn import LAYER_NORM_EPS, full_precision

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2)


def parameter_names(num_policy_layers: int, num_q_layers: int) -> Tuple[List[str], List[str]]:
    """The names (as in ``SAC.named_parameters``) of the trained tensors, the keys of the
    gradients ``sac_gradients`` returns, and of the target critic's."""
    policy = [f"policy.net.{2 * i}.{kind}" for i in range(num_policy_layers) for kind in ("weight", "bias")]
    q = [f"q.weights.{i}" for i in range(num_q_layers)] + [f"q.biases.{i}" for i in range(num_q_layers)]
    target = [f"q_target.weights.{i}" for i in range(num_q_layers)] + [
        f"q_target.biases.{i}" for i in range(num_q_layers)]
    return policy + q + ["log_alpha"], target


def _hidden(z: torch.Tensor, layer_norm: bool, norms: List) -> torch.Tensor:
    """A hidden layer's activation from its pre-activation z: ReLU, after a LayerNorm without
    learned scale or shift when ``layer_norm`` (sac.critic_layer_norm, sac.policy_layer_norm), whose
    normalised output and 1/std (what its backward needs) are appended to ``norms``."""
    if not layer_norm:
        return z.relu_()
    normed, _, rstd = torch.native_layer_norm(full_precision(z), z.shape[-1:], None, None, LAYER_NORM_EPS)
    norms.append((normed, rstd))
    return normed.relu()


def _policy_forward(ws: List[torch.Tensor], bs: List[torch.Tensor], x: torch.Tensor, layer_norm: bool = False,
                    norms: Optional[List] = None) -> List[torch.Tensor]:
    """The policy MLP on x [S, R, in]: every layer's output (hidden ones after ReLU), the last in
    float32; with ``layer_norm`` the LayerNorms' values go to ``norms`` (``_hidden``)."""
    outs = []
    last = len(ws) - 1
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        x = full_precision(x) if i == last else _hidden(x, layer_norm, norms)
        outs.append(x)
    return outs


def _critic_forward(ws: List[torch.Tensor], bs: List[torch.Tensor], x: torch.Tensor, layer_norm: bool = False,
                    norms: Optional[List] = None) -> List[torch.Tensor]:
    """Stacked critics, weights [N, in, out] (N = seeds x members), on x [N, R, in]: every
    layer's output as in ``_policy_forward``."""
    outs = []
    last = len(ws) - 1
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = baddbmm(b, x, w)
        x = full_precision(x) if i == last else _hidden(x, layer_norm, norms if norms is not None else [])
        outs.append(x)
    return outs


def _layer_norm_backward(grad: torch.Tensor, normed: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """The gradient through a LayerNorm without scale or shift, from its normalised output and
    1/std: rstd (g - mean(g) - normed mean(g normed)), means over the units."""
    grad = full_precision(grad)
    return rstd * (grad - grad.mean(-1, keepdim=True) - normed * (grad * normed).mean(-1, keepdim=True))


def _hidden_backward(grad: torch.Tensor, output: torch.Tensor, norm: Optional[Tuple]) -> torch.Tensor:
    """The gradient through ``_hidden`` to its pre-activation, from its output (and the LayerNorm's
    values, when it has one); in place where it can."""
    grad = _relu_backward(grad, output)
    return grad if norm is None else _layer_norm_backward(grad, *norm)


def _relu_backward(grad: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The gradient through a ReLU from its output: ``grad`` where ``output`` > 0, else 0, in
    place (one kernel, the one autograd runs)."""
    return torch.ops.aten.threshold_backward.grad_input(grad, output, 0, grad_input=grad)


def _members(t: torch.Tensor) -> torch.Tensor:
    """[S, E, ...] -> [S * E, ...]."""
    return t.flatten(0, 1)


def _sample(out: torch.Tensor, noise: torch.Tensor, act_dim: int):
    """The tanh-Gaussian draw from the policy's output [S, R, 2A] with ``noise`` [S, R, A]:
    (action, log pi, its Gaussian's std, which rows' log std was clamped), as
    ``TanhGaussianPolicy.forward`` computes them."""
    mean, raw_log_std = out[..., :act_dim], out[..., act_dim:]
    log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
    std = log_std.exp()
    pre_tanh = mean + std * noise
    action = torch.tanh(pre_tanh)
    log_prob = (-0.5 * noise ** 2 - log_std - _HALF_LOG_2PI).sum(-1)
    log_prob = log_prob - (2 * (_LOG_2 - pre_tanh - F.softplus(-2 * pre_tanh))).sum(-1)
    inside = (raw_log_std >= LOG_STD_MIN) & (raw_log_std <= LOG_STD_MAX)
    return action, log_prob, std, inside


def _weight_grads(d_out: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``y = x @ w + b`` (critic layout, w [N, in, out]) from d_out [N, R, out]
    and the layer's input x [N, R, in]: dW [N, in, out] and db [N, 1, out], in float32."""
    grad_w = full_precision(bmm(x.transpose(1, 2), d_out))
    return grad_w, d_out.sum(1, keepdim=True, dtype=torch.float32)


def sac_gradients(params: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                  target_entropy: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor,
                  next_obs: torch.Tensor, done: torch.Tensor, noise: torch.Tensor, discount: float,
                  subset: Optional[torch.Tensor] = None, critic_layer_norm: bool = False,
                  policy_layer_norm: bool = False) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """The gradients of SAC's three losses (module docstring) with respect to ``params`` (by name,
    ``parameter_names``), and the metrics [S, 6] in ``mbpo_ray.agents.sac.METRIC_NAMES``'s order.
    Run under ``torch.no_grad()``.

    MBPO+ (docs/mbpo_plus.md#critic-normalisation): ``subset`` [S, E] bool, REDQ's random subset of
    the target critics (the TD target's min is over it, and the policy loss takes the mean over
    all critics instead of the min); None: SAC (the min over all, in both). ``critic_layer_norm``,
    ``policy_layer_norm``: the networks' hidden layers have a LayerNorm before the ReLU."""
    num_q = sum(1 for n in params if n.startswith("q.weights."))
    num_pi = sum(1 for n in params if n.startswith("policy.") and n.endswith(".weight"))
    pi_w = [params[f"policy.net.{2 * i}.weight"] for i in range(num_pi)]
    pi_b = [params[f"policy.net.{2 * i}.bias"] for i in range(num_pi)]
    q_w = [_members(params[f"q.weights.{i}"]) for i in range(num_q)]
    q_b = [_members(params[f"q.biases.{i}"]) for i in range(num_q)]
    qt_w = [_members(target[f"q_target.weights.{i}"]) for i in range(num_q)]
    qt_b = [_members(target[f"q_target.biases.{i}"]) for i in range(num_q)]
    log_alpha = params["log_alpha"]
    seeds, batch, act_dim = act.shape
    members = params["q.weights.0"].shape[1]
    alpha = log_alpha.exp()  # [S]

    # the policy on s (rows :B, the policy loss's draw noise[1]) and s' (rows B:, noise[0])
    pi_in = torch.cat([obs, next_obs], 1)
    pi_norms: List = []
    pi_outs = _policy_forward(pi_w, pi_b, pi_in, policy_layer_norm, pi_norms)
    pi_noise = torch.cat([noise[:, 1], noise[:, 0]], 1)
    pi_act, pi_logp, pi_std, pi_inside = _sample(pi_outs[-1], pi_noise, act_dim)
    new_act, logp = pi_act[:, :batch], pi_logp[:, :batch]

    # the TD target from the target critics at (s', a')
    target_in = torch.cat([next_obs, pi_act[:, batch:]], -1)
    target_in = target_in.unsqueeze(1).expand(-1, members, -1, -1).flatten(0, 1)
    next_q = _critic_forward(qt_w, qt_b, target_in, critic_layer_norm)[-1].view(seeds, members, batch)
    if subset is not None:
        next_q = next_q.masked_fill(~subset.unsqueeze(-1), math.inf)
    next_q = next_q.min(1).values
    y = rew + discount * (1.0 - done) * (next_q - alpha.unsqueeze(1) * pi_logp[:, batch:])

    # the critics at (s, a) (rows :B) and (s, a~) (rows B:)
    q_in = torch.cat([torch.cat([obs, act], -1), torch.cat([obs, new_act], -1)], 1)
    q_in = q_in.unsqueeze(1).expand(-1, members, -1, -1).flatten(0, 1)
    q_norms: List = []
    q_outs = _critic_forward(q_w, q_b, q_in, critic_layer_norm, q_norms)
    q_all = q_outs[-1].view(seeds, members, 2 * batch)
    q_data, q_new = q_all[..., :batch], q_all[..., batch:]
    if subset is None:
        q_pi, q_pi_member = q_new.min(1)  # [S, B]
    else:
        q_pi = q_new.mean(1)

    q_loss = 0.5 * ((q_data - y.unsqueeze(1)) ** 2).mean(-1).sum(-1)
    policy_loss = (alpha.unsqueeze(1) * logp - q_pi).mean(-1)
    alpha_loss = -(log_alpha.unsqueeze(1) * (logp + target_entropy.unsqueeze(1))).mean(-1)
    metrics = torch.stack([q_loss, policy_loss, alpha_loss, alpha, -logp.mean(-1), q_data.mean((1, 2))], -1)

    # --- backward: the critics (their parameters from the critic loss, a~ from the policy loss)
    d_q_data = (q_data - y.unsqueeze(1)) / batch
    if subset is None:
        chosen = torch.arange(members, device=act.device).view(1, members, 1) == q_pi_member.unsqueeze(1)
        d_q_new = chosen.to(d_q_data.dtype) * (-1.0 / batch)
    else:
        d_q_new = torch.full_like(d_q_data, -1.0 / (batch * members))
    d_out = torch.cat([d_q_data, d_q_new], -1).view(seeds * members, 2 * batch, 1)
    grads: Dict[str, torch.Tensor] = {}
    q_ins = [q_in, *q_outs[:-1]]
    for i in reversed(range(num_q)):
        grad_w, grad_b = _weight_grads(d_out[:, :batch], q_ins[i][:, :batch])
        grads[f"q.weights.{i}"] = grad_w.view(seeds, members, *grad_w.shape[1:])
        grads[f"q.biases.{i}"] = grad_b.view(seeds, members, *grad_b.shape[1:])
        if i > 0:
            # through W [N, in, out]: an outer product for the one-unit output layer (a bmm with
            # an inner dimension of 1 is far slower than the broadcast multiply)
            w_t = q_w[i].transpose(1, 2)
            d_in = d_out * w_t if d_out.shape[-1] == 1 else bmm(d_out, w_t)
            d_out = _hidden_backward(d_in, q_outs[i - 1], q_norms[i - 1] if critic_layer_norm else None)
        else:  # into a~ only: the critic's input's action columns, summed over the members
            obs_dim = obs.shape[-1]
            d_new_act = bmm(d_out[:, batch:], q_w[0][:, obs_dim:].transpose(1, 2))
            d_new_act = full_precision(d_new_act).view(seeds, members, batch, act_dim).sum(1)

    # --- backward: the policy (policy loss through log pi and a~; on rows :B only)
    d_logp = (alpha / batch).view(seeds, 1, 1)
    action, std, eps = new_act, pi_std[:, :batch], pi_noise[:, :batch]
    # d log pi / d pre_tanh = 2 tanh(pre_tanh); d a~ / d pre_tanh = 1 - tanh^2
    d_pre = d_logp * 2 * action + d_new_act * (1 - action * action)
    d_log_std = (d_pre * std * eps - d_logp) * pi_inside[:, :batch]
    d_out = torch.cat([d_pre, d_log_std], -1)
    pi_ins = [pi_in, *pi_outs[:-1]]
    for i in reversed(range(num_pi)):
        x = pi_ins[i][:, :batch]
        grads[f"policy.net.{2 * i}.weight"] = full_precision(bmm(d_out.transpose(1, 2), x))
        grads[f"policy.net.{2 * i}.bias"] = d_out.sum(1, dtype=torch.float32)
        if i > 0:
            norm = (pi_norms[i - 1][0][:, :batch], pi_norms[i - 1][1][:, :batch]) if policy_layer_norm else None
            d_out = _hidden_backward(bmm(d_out, pi_w[i]), pi_outs[i - 1][:, :batch], norm)

    grads["log_alpha"] = -(logp + target_entropy.unsqueeze(1)).mean(-1)
    return grads, metrics
