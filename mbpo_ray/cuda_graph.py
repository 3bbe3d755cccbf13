"""Training steps replayed from CUDA graphs (issue 13: ``sac.cuda_graph``, ``model.cuda_graph``).

A training step on a GPU at MBPO's sizes (batch 256, 256-unit layers) is bound by kernel launches,
not by arithmetic: the SAC update is a few hundred small kernels, each launched from Python. A
CUDA graph records the whole step once (forward, backward, the Adam step, the target lerp) and
then launches it as one unit: ``GraphedStep`` does that for any step that

- takes tensors of fixed shapes and returns one tensor (its metrics or loss),
- changes its state (parameters, buffers, optimiser state) only in place,
- draws no random numbers and never waits for the host (no ``.item()``, no data-dependent
  shapes): the SAC update takes its noise as an input (``ActorCritic.draw_noise``) for this reason.

Capture follows PyTorch's whole-network recipe: a few warm-up steps on a side stream, then the
step recorded under ``torch.cuda.graph`` with the optimiser's ``capturable`` flag set for the
recording (fused Adam's arithmetic is the same either way; the flag is put back afterwards, so a
checkpoint's optimiser state loads on any device). The warm-up steps really train, so the state
they changed is put back afterwards (an optimiser state that the warm-up created is zeroed: the
fresh state of Adam), and the first replay is the run's own first step: a graphed run takes the
same steps as an eager one. Anything that replaces a state tensor rather than writing into it (an
optimiser's ``load_state_dict``, a checkpoint) must call ``reset``: the next step captures anew.

On a CPU there is nothing to capture: the step runs eagerly through the same static inputs, after
the same warm-up and restore, which is what CI exercises (a run with the graph on equals the run
without it, bit for bit; tests/test_cuda_graph.py).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

WARMUP_STEPS = 3  # PyTorch's recipe: a few eager steps on a side stream before capture


class GraphedStep:
    def __init__(self, step: Callable[..., torch.Tensor], state: Callable[[], List[torch.Tensor]],
                 optimizers: Sequence[torch.optim.Optimizer] = ()):
        """``step(*inputs)`` is one training step; ``state()`` lists the tensors it changes in
        place besides the ``optimizers``' state (parameters, buffers, hand-kept optimiser state)."""
        self.step, self.state, self.optimizers = step, state, list(optimizers)
        self.captures = 0  # how many times a step was captured (once, unless reset)
        self.reset()

    def reset(self) -> None:
        """Forget the graph: the next call captures the step again."""
        self._graph: Optional["torch.cuda.CUDAGraph"] = None
        self._inputs: Optional[List[torch.Tensor]] = None
        self._output: Optional[torch.Tensor] = None

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self._inputs is None or any(s.shape != x.shape for s, x in zip(self._inputs, inputs)):
            self._capture(inputs)
        with torch.no_grad():
            torch._foreach_copy_(self._inputs, [x.detach() for x in inputs])
        if self._graph is None:  # no CUDA: the step itself, on the static inputs
            return self.step(*self._inputs)
        self._graph.replay()
        return self._output.clone()  # the graph overwrites its output at the next replay

    # --- capture ---
    def _optimizer_tensors(self) -> List[torch.Tensor]:
        return [t for opt in self.optimizers for per_param in opt.state.values()
                for t in per_param.values() if torch.is_tensor(t)]

    def _capture(self, inputs: Sequence[torch.Tensor]) -> None:
        self.reset()
        static = [x.detach().clone() for x in inputs]
        tensors = list(self.state()) + self._optimizer_tensors()
        saved = [t.detach().clone() for t in tensors]
        known = {id(t) for t in tensors}
        graph, output = None, None
        if static[0].is_cuda:
            device = static[0].device
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self.step(*static)
            torch.cuda.current_stream(device).wait_stream(side)
            for t in self.state():  # as the recipe: the captured backward allocates the gradients
                if t.is_leaf and t.grad is not None:
                    t.grad = None
            graph = torch.cuda.CUDAGraph()
            flags = [(group, group.get("capturable", False)) for opt in self.optimizers for group in opt.param_groups]
            for group, _ in flags:
                group["capturable"] = True
            try:
                with torch.cuda.graph(graph):
                    output = self.step(*static)
            finally:
                for group, flag in flags:
                    group["capturable"] = flag
        else:
            for _ in range(WARMUP_STEPS):
                self.step(*static)
        with torch.no_grad():  # back to the state before the warm-up
            torch._foreach_copy_([t.detach() for t in tensors], saved)
            for t in self._optimizer_tensors():
                if id(t) not in known:  # created by the warm-up: Adam's fresh state is zeros
                    t.zero_()
        self._graph, self._inputs, self._output = graph, static, output
        self.captures += 1
