"""Many seeds' ensemble fits run as one (issue 13; docs/seed_groups.md): the parameters of the
seeds' ensembles stacked along a leading seed dimension and one step for all of them, through
the trainer's own loss (``EnsembleTrainer.seed_losses``, the function a single fit uses, with
the stacked tensors swapped in by ``torch.func.functional_call``): each layer is one batched
matmul over all seeds and ensemble members (``StackedMLP`` runs S x E members), one backward,
then one Adam step.

Each seed keeps its own fit: its holdout split, bootstrap and per-epoch shuffles (drawn from its
own random stream, in the order a single fit draws them), its per-member snapshots, its early
stopping (``FitRun``) and its elites. A seed that stops leaves the stack with the weights and
Adam state it has at that epoch, so it ends the fit as it would alone; the others go on. The Adam
step counts the seeds' own steps (their earlier fits stopped at different epochs), so the bias
corrections are per seed.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call

from mbpo_ray.cuda_graph import GraphedStep
from mbpo_ray.models.trainer import EnsembleTrainer, FitRun

RandomStream = Callable[[], ContextManager]


class _Calls(nn.Module):
    """The trainer's losses and holdout MSE as a module's forward, so that ``functional_call``
    can swap the stacked tensors in for the model's own."""

    def __init__(self, trainer: EnsembleTrainer):
        super().__init__()
        self.model = trainer.model  # the parameters' and buffers' names: "model.<name>"
        self.trainer = [trainer]  # not a submodule

    def forward(self, what: str, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        trainer = self.trainer[0]
        if what == "loss":
            return type(trainer).seed_losses(trainer, inputs, targets)
        return type(trainer).member_mse(trainer, inputs, targets)


class StackedFit:
    """The fits of ``trainers`` (one per seed, ensembles of one shape and one model config)."""

    def __init__(self, trainers: Sequence[EnsembleTrainer]):
        if not trainers:
            raise ValueError("StackedFit needs at least one trainer")
        self.trainers = list(trainers)
        template = self.trainers[0]
        shapes = [tuple(p.shape) for p in template.model.parameters()]
        for t in self.trainers[1:]:
            if [tuple(p.shape) for p in t.model.parameters()] != shapes or t.cfg != template.cfg:
                raise ValueError("StackedFit needs ensembles of one shape and one model config")
        self.batch_size, self.cuda_graph = template.cfg.batch_size, template.cfg.cuda_graph
        group = template.optimizer.param_groups[0]
        self.lr, (self.beta1, self.beta2), self.eps = group["lr"], group["betas"], group["eps"]
        named = dict(template.model.named_parameters())
        by_id = {id(p): n for n, p in named.items()}
        self.names = [by_id[id(p)] for p in group["params"]]  # the optimiser's order
        self.member_names = [by_id[id(p)] for p in template.model.net.member_parameters()]
        # the normaliser (the elites are not used by the loss or the MSE)
        self.buffer_names = [n for n, b in template.model.named_buffers() if b.is_floating_point()]
        self._calls = _Calls(template)

    def _call(self, what: str, stack: "_Stack", inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        tensors = {f"model.{n}": t for table in (stack.params, stack.buffers) for n, t in table.items()}
        return functional_call(self._calls, tensors, (what, inputs, targets))

    def fit(self, data: Sequence[Tuple[torch.Tensor, torch.Tensor]],
            streams: Optional[Sequence[RandomStream]] = None) -> List[Dict[str, float]]:
        """Fit seed i's ensemble on ``data[i]`` (inputs [N, in], targets [N, out]; one N for all),
        drawing its random numbers inside ``streams[i]()`` (its random stream made current).
        Returns each seed's fit metrics, as ``EnsembleTrainer.fit`` returns them."""
        trainers = self.trainers
        streams = list(streams) if streams is not None else [nullcontext] * len(trainers)
        if len(data) != len(trainers) or len(streams) != len(trainers):
            raise ValueError("StackedFit.fit needs one dataset and one random stream per trainer")
        if len({inputs.shape[0] for inputs, _ in data}) != 1:
            raise ValueError("the seeds of a stacked fit need the same number of transitions")
        runs: List[FitRun] = []
        for trainer, (inputs, targets), stream in zip(trainers, data, streams):
            with stream():
                runs.append(trainer.begin(inputs, targets))
        stack = _Stack(self, trainers)
        # model.cuda_graph: each full batch's step replayed from a graph of this stack (captured
        # anew when seeds leave it: its tensors are new ones then)
        eager = partial(self._step, stack)
        graphed = GraphedStep(eager, stack.tensors) if self.cuda_graph else None
        finals: Dict[int, Tuple[Dict[str, torch.Tensor], Dict[str, Tuple]]] = {}
        active = list(range(len(trainers)))  # seeds still fitting: the stack's rows, in order
        device = runs[0].train_in.device
        num_batches = runs[0].num_batches
        while active:
            orders = []
            for i in active:
                with streams[i]():
                    orders.append(runs[i].epoch_order())
            loss_sum = torch.zeros(len(active), device=device)
            for b in range(num_batches):
                inputs = torch.stack([runs[i].train_in[runs[i].batch(o, b)] for i, o in zip(active, orders)])
                targets = torch.stack([runs[i].train_tg[runs[i].batch(o, b)] for i, o in zip(active, orders)])
                full = inputs.shape[2] == self.batch_size
                step = graphed if graphed is not None and full else eager
                loss_sum += step(inputs, targets)
            train_loss = (loss_sum / num_batches).tolist()
            num_members = runs[0].num_members  # each seed's holdout [N, in], the same for all its members
            holdout_in = torch.stack([runs[i].holdout_in for i in active]).unsqueeze(1).expand(-1, num_members, -1, -1)
            mse = self._call("mse", stack, holdout_in, torch.stack([runs[i].holdout_tg for i in active])[:, None]).cpu()
            stopped = []
            for row, i in enumerate(active):
                members = [stack.params[n][row] for n in self.member_names]
                if runs[i].end_epoch(train_loss[row], mse[row], members):
                    finals[i] = stack.take(row)
                    stopped.append(row)
            if stopped:
                stack.drop(stopped)
                if graphed is not None:
                    graphed.reset()
                active = [i for row, i in enumerate(active) if row not in stopped]
        for i, trainer in enumerate(trainers):
            _write_back(trainer, self.names, *finals[i])
        return [trainer.finish(run) for trainer, run in zip(trainers, runs)]


    def _step(self, stack: "_Stack", inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One gradient step of every seed in the stack (inputs [S, E, B, in]); their losses [S]."""
        losses = self._call("loss", stack, inputs, targets)
        losses.sum().backward()  # the seeds' losses are independent: each gets its own gradient
        stack.adam_step()
        return losses.detach()


class _Stack:
    """The parameters, normaliser and Adam state of the seeds still fitting, stacked along a
    leading seed dimension (row r is the r-th of them). A member's tensor [E, ...] becomes
    [S, E, ...]; a tensor that the members share (the log-variance bounds, the normaliser) [d]
    becomes [S, 1, 1, d], so that it broadcasts over the members and the batch of its seed."""

    def __init__(self, fit: StackedFit, trainers: Sequence[EnsembleTrainer]):
        self.fit = fit
        models = [t.model for t in trainers]
        tables = [dict(m.named_parameters()) for m in models]
        buffer_tables = [dict(m.named_buffers()) for m in models]
        self.shapes = {n: tuple(tables[0][n].shape) for n in fit.names}
        self.params = {n: self._stack([t[n] for t in tables], n in fit.member_names).requires_grad_()
                       for n in fit.names}
        self.buffers = {n: self._stack([t[n] for t in buffer_tables], False) for n in fit.buffer_names}
        self.exp_avg, self.exp_avg_sq = {}, {}
        steps = []
        for trainer, table in zip(trainers, tables):
            first = trainer.optimizer.state.get(table[fit.names[0]])
            steps.append(float(first["step"]) if first else 0.0)
        for n in fit.names:
            states = [t.optimizer.state.get(table[n]) for t, table in zip(trainers, tables)]
            for key, out in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                out[n] = self._stack([s[key] if s else torch.zeros_like(table[n]) for s, table in zip(states, tables)],
                                     n in fit.member_names)
        device = self.params[fit.names[0]].device
        self.step = torch.tensor(steps, dtype=torch.float64, device=device)  # each seed's Adam steps

    @staticmethod
    def _stack(tensors: List[torch.Tensor], per_member: bool) -> torch.Tensor:
        with torch.no_grad():
            stacked = torch.stack([t.detach() for t in tensors])
        return stacked if per_member else stacked.unflatten(0, (-1, 1, 1))

    def adam_step(self) -> None:
        """Adam (torch.optim.Adam's arithmetic, no weight decay) on the gradients in ``.grad``,
        with each seed's own step count."""
        fit = self.fit
        self.step += 1
        step_size = (fit.lr / (1 - fit.beta1 ** self.step)).float()
        correction2 = (1 - fit.beta2 ** self.step).sqrt().float()
        with torch.no_grad():
            for n, p in self.params.items():
                g, p.grad = p.grad, None
                shape = (-1,) + (1,) * (g.dim() - 1)
                m, v = self.exp_avg[n], self.exp_avg_sq[n]
                m.lerp_(g, 1 - fit.beta1)
                v.mul_(fit.beta2).addcmul_(g, g, value=1 - fit.beta2)
                denom = (v.sqrt() / correction2.view(shape)).add_(fit.eps)
                p.sub_(m / denom * step_size.view(shape))

    def tensors(self) -> List[torch.Tensor]:
        """Everything a step changes: parameters, normaliser, Adam state, step counts."""
        return [*self.params.values(), *self.buffers.values(), *self.exp_avg.values(),
                *self.exp_avg_sq.values(), self.step]

    def take(self, row: int) -> Tuple[Dict[str, torch.Tensor], Dict[str, Tuple]]:
        """Row ``row``'s parameters and Adam state (copies, in the model's own shapes)."""
        params = {n: t[row].detach().reshape(self.shapes[n]).clone() for n, t in self.params.items()}
        adam = {n: (float(self.step[row]), self.exp_avg[n][row].reshape(self.shapes[n]).clone(),
                    self.exp_avg_sq[n][row].reshape(self.shapes[n]).clone()) for n in self.params}
        return params, adam

    def drop(self, rows: List[int]) -> None:
        keep = [r for r in range(self.step.shape[0]) if r not in rows]
        if not keep:
            return
        index = torch.tensor(keep, device=self.step.device)
        with torch.no_grad():
            for table in (self.params, self.buffers, self.exp_avg, self.exp_avg_sq):
                for n in table:
                    table[n] = table[n].index_select(0, index)
        for n in self.params:
            self.params[n].requires_grad_()
        self.step = self.step.index_select(0, index)


def _write_back(trainer: EnsembleTrainer, names: List[str], params: Dict[str, torch.Tensor],
                adam: Dict[str, Tuple]) -> None:
    """A seed's weights and Adam state at the epoch it stopped, into its own model and optimiser
    (the state a single fit leaves, so that its checkpoint is a single run's)."""
    named = dict(trainer.model.named_parameters())
    fused = bool(trainer.optimizer.defaults.get("fused"))
    with torch.no_grad():
        for n in names:
            p = named[n]
            p.copy_(params[n])
            step, exp_avg, exp_avg_sq = adam[n]
            old = trainer.optimizer.state.get(p)
            if old:
                step_t = torch.full_like(old["step"], step)
            else:  # as torch.optim.Adam initialises it: on the device when fused, else on the host
                step_t = torch.tensor(step, dtype=torch.float32, device=p.device if fused else "cpu")
            trainer.optimizer.state[p] = {"step": step_t, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
