"""Stacked ("ensemble") layers: E independent networks evaluated with one batched matmul.

Used by the dynamics ensemble (7 members), by SAC's twin Q (2 members) and by STEVE's ensembles,
so that no Python loop over members runs on the hot path.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.matmul import baddbmm


# The LayerNorm's epsilon (torch.nn.LayerNorm's default); the written-out SAC update uses it too.
LAYER_NORM_EPS = 1e-5


class StackedMLP(nn.Module):
    """``num_members`` MLPs with identical shapes; weights stored as [E, in, out] per layer."""

    def __init__(self, num_members: int, in_dim: int, hidden: Sequence[int], out_dim: int,
                 activation: str = "relu", init: str = "default", layer_norm: bool = False):
        super().__init__()
        dims = [in_dim, *hidden, out_dim]
        self.num_members = num_members
        self.init = init
        # layer_norm: each hidden layer's output normalised over its units (no learned scale or
        # shift, so no parameters) before the activation (sac.critic_layer_norm, docs/mbpo_plus.md).
        self.layer_norm = layer_norm
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            self.weights.append(nn.Parameter(torch.empty(num_members, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(num_members, 1, fan_out)))
        self.reset_parameters()
        self.activation = {"relu": F.relu, "silu": F.silu}[activation]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Draw every layer's weights (and biases) afresh from the init distribution."""
        for w, b in zip(self.weights, self.biases):
            fan_in = w.shape[1]
            if self.init == "truncated_normal":
                # The dynamics model's init (docs/hyperparameters.md, as in MBPO's released code):
                # std 1/(2 sqrt(fan_in)), truncated at 2 std, zero bias.
                std = 1.0 / (2.0 * math.sqrt(fan_in))
                nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
                b.zero_()
            else:
                # Same distribution as torch.nn.Linear's default, member by member.
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(b, -bound, bound)

    def _hidden(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer_norm:
            x = F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS)
        return self.activation(x)

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def forward(self, x: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """x: [E, B, in] (or [B, in], shared by all members) -> [E, B, out].

        ``detach_params`` evaluates the networks without building gradients for their
        parameters (SAC's policy loss differentiates through Q into the actions only).
        Weights stacked along a leading seed dimension (a seed group's stacked fit,
        mbpo_ray.models.stacked_fit: [S, E, in, out], x [S, E, B, in]) run as S*E members.
        """
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.num_members, -1, -1)
        seeds = x.shape[:-3]
        if seeds:
            x = x.flatten(0, len(seeds))
        last = self.num_layers - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach_params:
                w, b = w.detach(), b.detach()
            if seeds:
                w, b = w.flatten(0, len(seeds)), b.flatten(0, len(seeds))
            x = baddbmm(b, x, w)
            if i < last:
                x = self._hidden(x)
        if seeds:
            x = x.unflatten(0, (*seeds, -1))
        return full_precision(x)

    def forward_member(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """x: [B, in] through one member only -> [B, out]."""
        last = self.num_layers - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = baddbmm(b[member].unsqueeze(0), x.unsqueeze(0), w[member].unsqueeze(0))[0]
            if i < last:
                x = self._hidden(x)
        return full_precision(x)

    def member_parameters(self) -> List[torch.Tensor]:
        return [*self.weights, *self.biases]


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """A network's output back in float32 when autocast computed it in a half type (bf16 autocast,
    mbpo_ray.precision); float32 and float64 outputs are returned as they are."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch build has one for the device (one kernel
    for all parameters), else the multi-tensor one; the arithmetic is Adam's either way."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, foreach=True)


def cpu_weights(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module``'s state as detached CPU copies: what is sent to another process (a Ray actor's
    published weights) or kept beside a checkpoint, unaffected by later training steps."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
