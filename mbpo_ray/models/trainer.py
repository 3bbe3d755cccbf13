"""Fitting the ensemble: Gaussian NLL, per-layer weight decay, bootstrap resampling, holdout
early stopping with per-member snapshots, and elite selection (the MBPO paper's model training,
as its released code does it; every setting and its default in docs/hyperparameters.md).

``fit_buffer`` (all of a ReplayBuffer, e.g. D_env) and ``fit_rows`` (transition rows, e.g. from
a Ray buffer actor) build the inputs and targets with ``mbpo_ray.models.targets``; ``fit`` takes
them ready-made. A fit is three parts, so that a seed group can run the epochs of many seeds'
fits as one (``mbpo_ray.models.stacked_fit``): ``begin`` (the holdout split, the bootstrap, the
normaliser), the epochs (each ends with ``FitRun.end_epoch``, the early-stopping bookkeeping),
``finish`` (each member back to its best epoch, the elites, the metrics)."""
from __future__ import annotations

import copy
import math
import time
from typing import Dict, List, Optional

import torch

from mbpo_ray.config import ModelConfig
from mbpo_ray.cuda_graph import GraphedStep
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.data.rows import RowLayout
from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.targets import fit_data_from_buffer, fit_data_from_rows
from mbpo_ray.nn import make_adam


class FitRun:
    """One fit's data and early-stopping state (``EnsembleTrainer.begin`` makes it)."""

    def __init__(self, cfg: ModelConfig, inputs: torch.Tensor, targets: torch.Tensor, num_members: int,
                 member_params: List[torch.Tensor]):
        self.cfg, self.start_time = cfg, time.perf_counter()
        n = inputs.shape[0]
        self.num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        perm = torch.randperm(n, device=inputs.device)
        self.holdout_in, self.holdout_tg = inputs[perm[:self.num_holdout]], targets[perm[:self.num_holdout]]
        self.train_in, self.train_tg = inputs[perm[self.num_holdout:]], targets[perm[self.num_holdout:]]
        if self.num_holdout == 0:  # no holdout split: early-stop on the training data itself
            self.holdout_in, self.holdout_tg = self.train_in, self.train_tg
        self.n_train = self.train_in.shape[0]
        self.num_members = num_members
        self.bootstrap = torch.randint(self.n_train, (num_members, self.n_train), device=inputs.device)
        self.num_batches = max(1, math.ceil(self.n_train / cfg.batch_size))
        self.snapshot = [w.detach().clone() for w in member_params]
        self.best = torch.full((num_members,), math.inf)
        self.epochs_since_improvement, self.epoch, self.train_loss = 0, 0, float("nan")
        self.fallback: tuple = ()  # the weights and optimiser state the fit began with (``begin``)

    def epoch_order(self) -> torch.Tensor:
        """[E, n_train] sample indices: each member's own bootstrap resample, freshly shuffled."""
        shuffle = torch.argsort(torch.rand(self.num_members, self.n_train, device=self.bootstrap.device), dim=1)
        return torch.gather(self.bootstrap, 1, shuffle)

    def batch(self, order: torch.Tensor, b: int) -> torch.Tensor:
        """The indices [E, <=batch_size] of batch ``b`` of an epoch's ``order``."""
        size = self.cfg.batch_size
        return order[:, b * size:(b + 1) * size]

    def end_epoch(self, train_loss: float, holdout_mse: torch.Tensor, member_params: List[torch.Tensor]) -> bool:
        """Book an epoch (its mean training loss, each member's holdout MSE [E] on the host, the
        members' weights now); snapshot each member that improved. True when the fit stops."""
        cfg = self.cfg
        self.epoch += 1
        self.train_loss = train_loss
        improved = (self.best - holdout_mse) / self.best > cfg.improvement_threshold
        improved |= ~torch.isfinite(self.best) & torch.isfinite(holdout_mse)
        if bool(improved.any()):
            self.best = torch.where(improved, holdout_mse, self.best)
            members = improved.nonzero().flatten().tolist()
            with torch.no_grad():
                for snap, param in zip(self.snapshot, member_params):
                    snap[members] = param[members]
            self.epochs_since_improvement = 0
        else:
            self.epochs_since_improvement += 1
        return (self.epochs_since_improvement >= cfg.early_stop_patience
                or (cfg.max_fit_epochs is not None and self.epoch >= cfg.max_fit_epochs)
                or (cfg.max_fit_seconds is not None and time.perf_counter() - self.start_time >= cfg.max_fit_seconds)
                or not math.isfinite(train_loss))


class EnsembleTrainer:
    def __init__(self, model: ProbabilisticEnsemble, cfg: ModelConfig):
        self.model, self.cfg = model, cfg
        self.optimizer = make_adam(model.parameters(), cfg.learning_rate)
        # model.compile: the step's loss compiled (its backward too, by torch.compile's autograd
        # support); the batch size varies only in each fit's last batch, so after the first
        # fits torch.compile settles on a shape-generic graph instead of recompiling.
        self._compiled_loss = torch.compile(self.loss) if cfg.compile else None
        # model.cuda_graph: each full batch's step replayed from one graph (mbpo_ray.cuda_graph);
        # an epoch's last, smaller batch runs eagerly.
        self._graphed = (GraphedStep(self._step, lambda: [*model.parameters(), *model.buffers()], [self.optimizer])
                         if cfg.cuda_graph else None)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """inputs [E, B, in], targets [E, B, out] (each member its own bootstrap batch) -> the
        training loss (0-d)."""
        return self.seed_losses(inputs, targets).sum()

    def seed_losses(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss, one per leading seed index: inputs [E, B, in] -> 0-d; with a
        stacked fit's leading seed dimension on the data and the model's tensors
        (``mbpo_ray.models.stacked_fit``), inputs [S, E, B, in] -> [S], each seed's own loss."""
        model, cfg = self.model, self.cfg
        mean, logvar = model.forward_scaled(inputs)
        targets = model.scale_targets(targets)
        nll = ((mean - targets) ** 2 * torch.exp(-logvar)).mean(dim=(-2, -1)) + logvar.mean(dim=(-2, -1))
        loss = nll.sum(dim=-1)
        # tf.nn.l2_loss convention of the released code: decay * sum(w^2) / 2, weights only.
        for decay, w in zip(cfg.weight_decays, model.net.weights):
            loss = loss + decay * 0.5 * (w ** 2).sum(dim=(-3, -2, -1))
        bounds = model.max_logvar.sum(dim=-1) - model.min_logvar.sum(dim=-1)
        return loss + cfg.logvar_bound_penalty * bounds.reshape(loss.shape)

    @torch.no_grad()
    def member_mse(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """MSE of each member's mean on the same data -> [E] ([S, E] with a leading seed dimension),
        in the units the members predict: what early stopping and the elites go by."""
        mean, _ = self.model.forward_scaled(inputs)
        return ((mean - self.model.scale_targets(targets)) ** 2).mean(dim=(-2, -1))

    @torch.no_grad()
    def member_errors(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Each member's mean squared error of each target dimension, in env units -> [E, out]."""
        mean, _ = self.model(inputs)
        return ((mean - targets) ** 2).mean(dim=-2)

    def reset(self) -> None:
        """A fresh ensemble (``ProbabilisticEnsemble.reset_parameters``) and a fresh Adam state
        (mbpo.model_reset_every, docs/mbpo_plus.md#resets)."""
        self.model.reset_parameters()
        self.optimizer.state.clear()
        self.state_replaced()

    def fit_buffer(self, buffer: ReplayBuffer) -> Dict[str, float]:
        """Fit on every transition stored in ``buffer`` (in its storage order)."""
        return self.fit(*fit_data_from_buffer(buffer))

    def fit_rows(self, rows: torch.Tensor, layout: Optional[RowLayout] = None) -> Dict[str, float]:
        """Fit on transition rows [N, width] (``layout`` defaults to the model's dims); the rows
        should already be on the model's device."""
        if layout is None:
            layout = RowLayout(self.model.obs_dim, self.model.act_dim)
        return self.fit(*fit_data_from_rows(rows, layout))

    def fit(self, inputs: torch.Tensor, targets: torch.Tensor) -> Dict[str, float]:
        """Fit on all of D_env: inputs [N, obs+act], targets [N, 1 + obs] ([reward, delta])."""
        run = self.begin(inputs, targets)
        while True:
            order = run.epoch_order()
            loss_sum = torch.zeros((), device=inputs.device)
            for b in range(run.num_batches):
                batch = run.batch(order, b)
                full = batch.shape[1] == self.cfg.batch_size
                step = self._graphed if self._graphed is not None and full else self._step
                loss_sum += step(run.train_in[batch], run.train_tg[batch])
            mse = self.member_mse(run.holdout_in, run.holdout_tg).cpu()
            if run.end_epoch((loss_sum / run.num_batches).item(), mse, self.model.net.member_parameters()):
                break
        return self.finish(run)

    def _step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One gradient step on a batch (inputs [E, B, in], targets [E, B, out]); its loss."""
        loss = (self.loss if self._compiled_loss is None else self._compiled_loss)(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def begin(self, inputs: torch.Tensor, targets: torch.Tensor) -> FitRun:
        """A fit's start: the random holdout split and bootstrap (in this order, from torch's
        global stream), the weights and optimiser state to fall back to, the normaliser."""
        run = FitRun(self.cfg, inputs, targets, self.model.num_members, self.model.net.member_parameters())
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        run.fallback = (state, copy.deepcopy(self.optimizer.state_dict()))  # a copy: the live state mutates
        self.model.set_normalizer(run.train_in)
        if self.model.normalize_targets:
            self.model.set_target_normalizer(run.train_tg)
        return run

    def finish(self, run: FitRun) -> Dict[str, float]:
        """A fit's end: each member back to its best epoch's weights; a failed fit (NaN or
        exploding) discarded for the weights and optimiser state it began with; the elites; the
        fit's metrics."""
        model = self.model
        with torch.no_grad():
            for snap, param in zip(run.snapshot, model.net.member_parameters()):
                param.copy_(snap)
        holdout_mse = self.member_mse(run.holdout_in, run.holdout_tg)
        fit_failed = not (math.isfinite(run.train_loss) and bool(torch.isfinite(holdout_mse).all())
                          and all(bool(torch.isfinite(p).all()) for p in model.parameters()))
        good_state, good_opt = run.fallback
        if fit_failed:
            # The last good weights (and optimiser state) stay, and model/fit_failed reports it.
            model.load_state_dict(good_state)
            self.load_state_dict({"optimizer": good_opt})
            holdout_mse = self.member_mse(run.holdout_in, run.holdout_tg)
        else:
            model.elite_idx.copy_(torch.argsort(holdout_mse)[: model.num_elites])
        # the elites' error per dimension over that dimension's variance, averaged over the
        # dimensions that vary on the holdout: a scale-free error that compares fits with and
        # without model.normalize_targets
        member_errors = self.member_errors(run.holdout_in, run.holdout_tg)
        errors = member_errors[model.elite_idx].mean(dim=0)
        variance = run.holdout_tg.var(dim=0, unbiased=False)
        varies = variance > 1e-10
        return {
            "model/train_loss": run.train_loss,
            "model/holdout_mse": float(errors.mean()),
            "model/holdout_nmse": float((errors[varies] / variance[varies]).mean()) if bool(varies.any()) else 0.0,
            "model/holdout_mse_all": float(member_errors.mean()),
            "model/epochs": run.epoch,
            "model/num_train": run.n_train,
            "model/num_holdout": run.num_holdout,
            "model/fit_seconds": time.perf_counter() - run.start_time,
            "model/fit_failed": int(fit_failed),
        }

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.state_replaced()

    def state_replaced(self) -> None:
        """The optimiser's state tensors were replaced by new ones (not written into): a graph of
        the step (model.cuda_graph) is captured anew at the next step."""
        if self._graphed is not None:
            self._graphed.reset()
