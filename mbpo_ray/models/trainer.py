"""Fitting the ensemble: Gaussian NLL, per-layer weight decay, bootstrap resampling, holdout
early stopping with per-member snapshots, and elite selection (the MBPO paper's model training,
as its released code does it; every setting and its default in docs/hyperparameters.md).

``fit_buffer`` (all of a ReplayBuffer, e.g. D_env) and ``fit_rows`` (transition rows, e.g. from
a Ray buffer actor) build the inputs and targets with ``mbpo_ray.models.targets``; ``fit`` takes
them ready-made."""
from __future__ import annotations

import copy
import math
import time
from typing import Dict, Optional

import torch

from mbpo_ray.config import ModelConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.data.rows import RowLayout
from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.targets import fit_data, fit_data_from_rows
from mbpo_ray.nn import make_adam


class EnsembleTrainer:
    def __init__(self, model: ProbabilisticEnsemble, cfg: ModelConfig):
        self.model, self.cfg = model, cfg
        self.optimizer = make_adam(model.parameters(), cfg.learning_rate)
        # model.compile: the step's loss compiled (its backward too, by torch.compile's autograd
        # support); the batch size varies only in each fit's last batch, so after the first
        # fits torch.compile settles on a shape-generic graph instead of recompiling.
        self._compiled_loss = torch.compile(self.loss) if cfg.compile else None

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """inputs [E, B, in], targets [E, B, out] (each member its own bootstrap batch)."""
        model, cfg = self.model, self.cfg
        mean, logvar = model(inputs)
        nll = ((mean - targets) ** 2 * torch.exp(-logvar)).mean(dim=(1, 2)) + logvar.mean(dim=(1, 2))
        loss = nll.sum()
        # tf.nn.l2_loss convention of the released code: decay * sum(w^2) / 2, weights only.
        for decay, w in zip(cfg.weight_decays, model.net.weights):
            loss = loss + decay * 0.5 * (w ** 2).sum()
        loss = loss + cfg.logvar_bound_penalty * (model.max_logvar.sum() - model.min_logvar.sum())
        return loss

    @torch.no_grad()
    def member_mse(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """MSE of each member's mean on the same data -> [E]."""
        mean, _ = self.model(inputs)
        return ((mean - targets) ** 2).mean(dim=(1, 2))

    def fit_buffer(self, buffer: ReplayBuffer) -> Dict[str, float]:
        """Fit on every transition stored in ``buffer`` (in its storage order)."""
        obs, act, rew, next_obs, _ = buffer.all()
        return self.fit(*fit_data(obs, act, rew, next_obs))

    def fit_rows(self, rows: torch.Tensor, layout: Optional[RowLayout] = None) -> Dict[str, float]:
        """Fit on transition rows [N, width] (``layout`` defaults to the model's dims); the rows
        should already be on the model's device."""
        if layout is None:
            layout = RowLayout(self.model.obs_dim, self.model.act_dim)
        return self.fit(*fit_data_from_rows(rows, layout))

    def fit(self, inputs: torch.Tensor, targets: torch.Tensor) -> Dict[str, float]:
        """Fit on all of D_env: inputs [N, obs+act], targets [N, 1 + obs] ([reward, delta])."""
        model, cfg = self.model, self.cfg
        start_time = time.perf_counter()
        n = inputs.shape[0]
        num_holdout = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
        perm = torch.randperm(n, device=inputs.device)
        holdout_in, holdout_tg = inputs[perm[:num_holdout]], targets[perm[:num_holdout]]
        train_in, train_tg = inputs[perm[num_holdout:]], targets[perm[num_holdout:]]
        if num_holdout == 0:  # no holdout split: early-stop on the training data itself
            holdout_in, holdout_tg = train_in, train_tg
        n_train = train_in.shape[0]

        good_state = {k: v.clone() for k, v in model.state_dict().items()}
        good_opt = copy.deepcopy(self.optimizer.state_dict())  # a copy: the live state mutates
        model.set_normalizer(train_in)

        E = model.num_members
        bootstrap = torch.randint(n_train, (E, n_train), device=inputs.device)
        snapshot = [w.detach().clone() for w in model.net.member_parameters()]
        best = torch.full((E,), math.inf)
        epochs_since_improvement, epoch, train_loss = 0, 0, float("nan")
        num_batches = max(1, math.ceil(n_train / cfg.batch_size))
        step_loss = self.loss if self._compiled_loss is None else self._compiled_loss
        while True:
            # Each member sees its own bootstrap resample, freshly shuffled every epoch.
            shuffle = torch.argsort(torch.rand(E, n_train, device=inputs.device), dim=1)
            idx = torch.gather(bootstrap, 1, shuffle)
            loss_sum = torch.zeros((), device=inputs.device)
            for b in range(num_batches):
                batch = idx[:, b * cfg.batch_size:(b + 1) * cfg.batch_size]
                loss = step_loss(train_in[batch], train_tg[batch])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.detach()
            epoch += 1
            train_loss = (loss_sum / num_batches).item()

            mse = self.member_mse(holdout_in, holdout_tg).cpu()
            improved = (best - mse) / best > cfg.improvement_threshold
            improved |= ~torch.isfinite(best) & torch.isfinite(mse)
            if bool(improved.any()):
                best = torch.where(improved, mse, best)
                members = improved.nonzero().flatten().tolist()
                with torch.no_grad():
                    for snap, param in zip(snapshot, model.net.member_parameters()):
                        snap[members] = param[members]
                epochs_since_improvement = 0
            else:
                epochs_since_improvement += 1
            if epochs_since_improvement >= cfg.early_stop_patience:
                break
            if cfg.max_fit_epochs is not None and epoch >= cfg.max_fit_epochs:
                break
            if cfg.max_fit_seconds is not None and time.perf_counter() - start_time >= cfg.max_fit_seconds:
                break
            if not math.isfinite(train_loss):
                break

        # Each member goes back to its own best epoch.
        with torch.no_grad():
            for snap, param in zip(snapshot, model.net.member_parameters()):
                param.copy_(snap)
        holdout_mse = self.member_mse(holdout_in, holdout_tg)
        fit_failed = not (math.isfinite(train_loss) and bool(torch.isfinite(holdout_mse).all())
                          and all(bool(torch.isfinite(p).all()) for p in model.parameters()))
        if fit_failed:
            # A NaN or exploding fit is discarded: the last good weights (and optimiser state)
            # stay, and model/fit_failed reports it.
            model.load_state_dict(good_state)
            self.optimizer.load_state_dict(good_opt)
            holdout_mse = self.member_mse(holdout_in, holdout_tg)
        else:
            model.elite_idx.copy_(torch.argsort(holdout_mse)[: model.num_elites])
        elite_mse = holdout_mse[model.elite_idx]
        return {
            "model/train_loss": train_loss,
            "model/holdout_mse": float(elite_mse.mean()),
            "model/holdout_mse_all": float(holdout_mse.mean()),
            "model/epochs": epoch,
            "model/num_train": n_train,
            "model/num_holdout": num_holdout,
            "model/fit_seconds": time.perf_counter() - start_time,
            "model/fit_failed": int(fit_failed),
        }

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
