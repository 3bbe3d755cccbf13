"""Learned termination (``mbpo.termination: learned``; docs/termination.md#learned-termination).

For an env without a known termination rule, a classifier predicts the real env's
``terminated`` flag from the predicted next state, and model rollouts (MBPO) and particles
(PETS) end where it says so, as they do with a known rule. It is fit on all of D_env at every
model refit, right after the ensemble:

- input: ``next_obs`` only (gymnasium's ``terminated`` says that the state reached is terminal,
  as every known rule does: docs/termination.md), standardised with the mean and standard
  deviation of the fit's training split; output: one logit;
- class imbalance (terminal transitions are rare): a weighted binary cross-entropy in which the
  terminal and the non-terminal transitions of the training split each carry half the total
  weight, so that the classifier is not rewarded for predicting "never";
- holdout and early stopping as the ensemble's (``model.holdout_ratio``, ``model.max_holdout``,
  ``model.early_stop_patience``, ``model.improvement_threshold``), with the holdout drawn per
  class so that it holds terminal transitions once D_env has two; the criterion is the balanced
  loss on the holdout, and the weights of the best epoch are kept; at most
  ``model.termination_max_epochs`` epochs; the weights carry over from fit to fit;
- a next state with a non-finite entry counts as terminal (as in the known rules' finiteness
  checks).

Until a fit has seen a terminal transition in D_env, the rule never terminates (it is
``mbpo.termination: none``). Each fit reports the holdout's precision and recall under
``model/`` (docs/metrics.md).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from mbpo_ray.config import ModelConfig
from mbpo_ray.nn import cpu_weights, full_precision, make_adam


# An epoch of the classifier: one pass over the training split in minibatches drawn with
# replacement, but at least this many minibatches, so that early stopping on a small D_env (a
# few thousand transitions: a dozen minibatches) does not end a fit after a few dozen steps.
MIN_STEPS_PER_EPOCH = 100


class TerminationClassifier(nn.Module):
    """MLP (SiLU) from a standardised next state to the logit of "terminated"."""

    def __init__(self, obs_dim: int, hidden_width: int, num_hidden_layers: int):
        super().__init__()
        layers, width = [], obs_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_width), nn.SiLU()]
            width = hidden_width
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mu", torch.zeros(obs_dim))
        self.register_buffer("sigma", torch.ones(obs_dim))

    def set_normalizer(self, x: torch.Tensor) -> None:
        sigma = x.std(dim=0, unbiased=False)
        self.mu.copy_(x.mean(dim=0))
        self.sigma.copy_(torch.where(sigma < 1e-12, torch.ones_like(sigma), sigma))

    def forward(self, next_obs: torch.Tensor) -> torch.Tensor:
        """next_obs [B, obs_dim] -> logits [B]."""
        return full_precision(self.net((next_obs - self.mu) / self.sigma)).squeeze(-1)


def class_weights(y: torch.Tensor) -> torch.Tensor:
    """Per-row weights giving each class present in ``y`` (0/1 floats) half the total weight."""
    n, n_pos = y.numel(), y.sum()
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.ones_like(y)
    return torch.where(y > 0.5, n / (2 * n_pos), n / (2 * n_neg))


def precision_recall(predicted: torch.Tensor, actual: torch.Tensor) -> Tuple[float, float]:
    """Precision and recall of boolean predictions of the positive class; precision is 0 when
    nothing is predicted positive (the caller reports them only when ``actual`` has positives)."""
    true_pos = int((predicted & actual).sum())
    return true_pos / max(1, int(predicted.sum())), true_pos / max(1, int(actual.sum()))


def stratified_split(y: torch.Tensor, holdout_ratio: float, max_holdout: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train indices, holdout indices): each class holds out ``holdout_ratio`` of its rows (at
    least one terminal row once there are two), scaled down together to ``max_holdout`` rows.
    Random draws: one ``randperm`` per class, positives first."""
    pos = (y > 0.5).nonzero().flatten()
    neg = (y <= 0.5).nonzero().flatten()
    pos = pos[torch.randperm(pos.numel(), device=y.device)]
    neg = neg[torch.randperm(neg.numel(), device=y.device)]
    hold_pos, hold_neg = int(pos.numel() * holdout_ratio), int(neg.numel() * holdout_ratio)
    total = hold_pos + hold_neg
    if total > max_holdout:
        hold_pos, hold_neg = int(hold_pos * max_holdout / total), int(hold_neg * max_holdout / total)
    if pos.numel() >= 2 and holdout_ratio > 0 and max_holdout > 0:
        hold_pos = max(1, hold_pos)
    hold_pos = min(hold_pos, pos.numel() - 1)  # the training split keeps a terminal row
    holdout = torch.cat([pos[:hold_pos], neg[:hold_neg]])
    train = torch.cat([pos[hold_pos:], neg[hold_neg:]])
    return train, holdout


class LearnedTermination:
    """A ``TerminationFn`` (``mbpo_ray.models.model_env``) backed by a classifier fit on D_env."""

    def __init__(self, obs_dim: int, cfg: ModelConfig, device: Optional[torch.device] = None):
        self.cfg = cfg
        self.classifier = TerminationClassifier(obs_dim, cfg.termination_hidden_width,
                                                cfg.termination_num_hidden_layers).to(device)
        self.optimizer = make_adam(self.classifier.parameters(), cfg.learning_rate)
        self.active = False  # a fit has seen a terminal transition

    @torch.no_grad()
    def predict(self, next_obs: torch.Tensor) -> torch.Tensor:
        """next_obs [B, obs_dim] -> terminated [B] (bool)."""
        if not self.active:
            return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)
        return (self.classifier(next_obs) > 0) | ~torch.isfinite(next_obs).all(dim=-1)

    def __call__(self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return self.predict(next_obs)

    @torch.no_grad()
    def _balanced_loss(self, x: torch.Tensor, y: torch.Tensor) -> float:
        losses = F.binary_cross_entropy_with_logits(self.classifier(x), y, reduction="none")
        return float((losses * class_weights(y)).mean())

    def fit(self, next_obs: torch.Tensor, terminated: torch.Tensor) -> Dict[str, float]:
        """Fit on D_env's next states [N, obs_dim] and terminated flags [N] (0/1); returns the
        model/termination_* metrics."""
        cfg = self.cfg
        y = (terminated.reshape(-1) > 0.5).to(next_obs.dtype)
        keep = torch.isfinite(next_obs).all(dim=-1)
        x, y = next_obs[keep], y[keep]
        n_pos = int(y.sum())
        metrics: Dict[str, float] = {"model/termination_positives": n_pos}
        if n_pos == 0:
            return metrics  # nothing to learn yet: the rule stays "never terminates"

        train_idx, holdout_idx = stratified_split(y, cfg.holdout_ratio, cfg.max_holdout)
        train_x, train_y = x[train_idx], y[train_idx]
        hold_x, hold_y = x[holdout_idx], y[holdout_idx]
        has_holdout = bool(hold_y.sum() > 0)
        if not has_holdout:  # no terminal row held out (fewer than two): early-stop on the training split
            hold_x, hold_y = train_x, train_y
        weights = class_weights(train_y)
        good_state = copy.deepcopy(self.classifier.state_dict())
        good_opt = copy.deepcopy(self.optimizer.state_dict())
        self.classifier.set_normalizer(train_x)

        best, best_state = math.inf, good_state  # as the ensemble: a fit keeps at least its first epoch
        n = train_x.shape[0]
        steps = max(math.ceil(n / cfg.batch_size), MIN_STEPS_PER_EPOCH)
        since_improvement, epochs, failed = 0, 0, False
        while epochs < cfg.termination_max_epochs:
            draws = torch.randint(n, (steps, cfg.batch_size), device=x.device)
            for batch in draws:
                loss = (F.binary_cross_entropy_with_logits(self.classifier(train_x[batch]), train_y[batch],
                                                           reduction="none") * weights[batch]).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
            epochs += 1
            holdout_loss = self._balanced_loss(hold_x, hold_y)
            if not math.isfinite(holdout_loss):
                failed = True
                break
            if not math.isfinite(best) or best - holdout_loss > cfg.improvement_threshold * best:
                best, best_state = holdout_loss, copy.deepcopy(self.classifier.state_dict())
                since_improvement = 0
            else:
                since_improvement += 1
                if since_improvement >= cfg.early_stop_patience:
                    break
        if failed:  # a non-finite loss: back to the weights and optimiser of before this fit
            self.classifier.load_state_dict(good_state)
            self.optimizer.load_state_dict(good_opt)
        else:
            self.classifier.load_state_dict(best_state)
        self.active = self.active or not failed

        metrics["model/termination_epochs"] = epochs
        metrics["model/termination_holdout_positives"] = int(hold_y.sum()) if has_holdout else 0
        if has_holdout:
            predicted = self.predict(hold_x)
            precision, recall = precision_recall(predicted, hold_y > 0.5)
            metrics["model/termination_precision"] = precision
            metrics["model/termination_recall"] = recall
        return metrics

    # --- weights (published by the Ray model trainer) and checkpoints ---
    def weights(self) -> Dict[str, Any]:
        return {"classifier": cpu_weights(self.classifier),
                "active": self.active}

    def load_weights(self, weights: Dict[str, Any]) -> None:
        self.classifier.load_state_dict(weights["classifier"])
        self.active = bool(weights["active"])

    def state_dict(self) -> Dict[str, Any]:
        return {**self.weights(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.load_weights(state)
        self.optimizer.load_state_dict(state["optimizer"])
