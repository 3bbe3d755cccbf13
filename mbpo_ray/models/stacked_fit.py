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
        # The stack of all seeds is kept between fits and loaded in place at each fit's start, so
        # that its step's graph (model.cuda_graph) is captured once for the run; a stack of the
        # seeds left after some stopped is a new one, with a graph of its own.
        self._full: Optional[_Stack] = None
        self._full_graph: Optional[GraphedStep] = None
        self._other_captures = 0

    @property
    def captures(self) -> int:
        """How many times a step was captured (model.cuda_graph): once for the stack of all seeds,
        plus once for each stack of the seeds left after some stopped."""
        return self._other_captures + (self._full_graph.captures if self._full_graph is not None else 0)

    def _graph(self, stack: "_Stack") -> Optional[GraphedStep]:
        return GraphedStep(partial(self._step, stack), stack.tensors) if self.cuda_graph else None

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
        if self._full is None:
            self._full = _Stack(self, trainers)
            self._full_graph = self._graph(self._full)
        else:
            self._full.load(trainers)
        # model.cuda_graph: each full batch's step replayed from a graph of the stack
        stack, graphed = self._full, self._full_graph
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
                step = graphed if graphed is not None and full else partial(self._step, stack)
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
                active = [i for row, i in enumerate(active) if row not in stopped]
                if active:
                    if graphed is not None and graphed is not self._full_graph:
                        self._other_captures += graphed.captures
                    stack = stack.without(stopped)
                    graphed = self._graph(stack)
        if graphed is not None and graphed is not self._full_graph:
            self._other_captures += graphed.captures
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

    def __init__(self, fit: StackedFit, trainers: Optional[Sequence[EnsembleTrainer]]):
        self.fit = fit
        if trainers is None:  # filled in by ``without``
            return
        self.shapes, self.params, self.buffers, self.exp_avg, self.exp_avg_sq, self.step = self._values(trainers)
        for p in self.params.values():
            p.requires_grad_()

    def _values(self, trainers: Sequence[EnsembleTrainer]):
        fit = self.fit
        models = [t.model for t in trainers]
        tables = [dict(m.named_parameters()) for m in models]
        buffer_tables = [dict(m.named_buffers()) for m in models]
        shapes = {n: tuple(tables[0][n].shape) for n in fit.names}
        params = {n: self._stack([t[n] for t in tables], n in fit.member_names) for n in fit.names}
        buffers = {n: self._stack([t[n] for t in buffer_tables], False) for n in fit.buffer_names}
        exp_avg, exp_avg_sq = {}, {}
        steps = []
        for trainer, table in zip(trainers, tables):
            first = trainer.optimizer.state.get(table[fit.names[0]])
            steps.append(float(first["step"]) if first else 0.0)
        for n in fit.names:
            states = [t.optimizer.state.get(table[n]) for t, table in zip(trainers, tables)]
            for key, out in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
                out[n] = self._stack([s[key] if s else torch.zeros_like(table[n]) for s, table in zip(states, tables)],
                                     n in fit.member_names)
        device = params[fit.names[0]].device
        step = torch.tensor(steps, dtype=torch.float64, device=device)  # each seed's Adam steps
        return shapes, params, buffers, exp_avg, exp_avg_sq, step

    def load(self, trainers: Sequence[EnsembleTrainer]) -> None:
        """The trainers' current weights, normaliser and Adam state, written into this stack's
        own tensors (a graph of its step stays valid)."""
        _, params, buffers, exp_avg, exp_avg_sq, step = self._values(trainers)
        with torch.no_grad():
            for mine, theirs in ((self.params, params), (self.buffers, buffers), (self.exp_avg, exp_avg),
                                 (self.exp_avg_sq, exp_avg_sq)):
                for n, t in theirs.items():
                    mine[n].copy_(t)
            self.step.copy_(step)

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

    def without(self, rows: List[int]) -> "_Stack":
        """A new stack of the other rows (copies; this one is left as it is)."""
        keep = [r for r in range(self.step.shape[0]) if r not in rows]
        index = torch.tensor(keep, device=self.step.device)
        out = _Stack(self.fit, None)
        out.shapes = self.shapes
        with torch.no_grad():
            out.params, out.buffers, out.exp_avg, out.exp_avg_sq = (
                {n: t.index_select(0, index) for n, t in table.items()}
                for table in (self.params, self.buffers, self.exp_avg, self.exp_avg_sq))
        for p in out.params.values():
            p.requires_grad_()
        out.step = self.step.index_select(0, index)
        return out


def _write_back(trainer: EnsembleTrainer, names: List[str], params: Dict[str, torch.Tensor],
                adam: Dict[str, Tuple]) -> None:
    """A seed's weights and Adam state at the epoch it stopped, into its own model and optimiser
    (the state a single fit leaves, so that its checkpoint is a single run's). Written into the
    tensors the trainer has, so that a graph of its own step (model.cuda_graph) stays valid; an
    optimiser state it did not have yet is created, and its graph is captured anew."""
    named = dict(trainer.model.named_parameters())
    fused = bool(trainer.optimizer.defaults.get("fused"))
    created = False
    with torch.no_grad():
        for n in names:
            p = named[n]
            p.copy_(params[n])
            step, exp_avg, exp_avg_sq = adam[n]
            old = trainer.optimizer.state.get(p)
            if old:
                old["step"].fill_(step)
                old["exp_avg"].copy_(exp_avg)
                old["exp_avg_sq"].copy_(exp_avg_sq)
            else:  # as torch.optim.Adam initialises it: on the device when fused, else on the host
                step_t = torch.tensor(step, dtype=torch.float32, device=p.device if fused else "cpu")
                trainer.optimizer.state[p] = {"step": step_t, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
                created = True
    if created:
        trainer.state_replaced()
