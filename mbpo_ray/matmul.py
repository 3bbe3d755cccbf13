"""The stacked networks' batched matmuls, on the fastest float32 kernel the CPU has (issue 25;
docs/precision.md#float32-matmul-kernels).

torch's float32 ``bmm``/``baddbmm`` on a CPU call MKL's sgemm, which on an AMD EPYC with AVX-512
(Zen 5) ran a 256x256x256 product at 93 GFLOP/s on one core, the rate of AVX2 code, against 160
GFLOP/s for oneDNN's kernel (MKL picks its code by vendor; benchmarks/results/RESULTS.md, "Issue
25 on an AMD EPYC with Zen 5 cores"). oneDNN, which torch also
ships (its bf16 matmuls and inductor's linear layers use it), picks its kernels by the CPU's
instruction sets. So on a CPU, in float32, outside autocast and compilation, ``bmm`` and
``baddbmm`` here run one oneDNN linear per batch member (inside an autograd
graph too: their gradients take the same kernel); everywhere else (CUDA, bf16 autocast,
``torch.compile``, a torch without oneDNN, thin products where the per-call overhead dominates:
``MIN_SIDE``) they are torch's own, but for one-column products, which run as matrix-vector
products (``baddbmm``). Both compute the same float32 products; only the order of
the sums differs (float32 rounding). Users: the written-out SAC update
(mbpo_ray.agents.sac_update) and every StackedMLP (the dynamics ensemble's fit and rollouts,
critics, STEVE's models).
"""
from __future__ import annotations

from typing import Optional

import torch

# Which products oneDNN takes (``_wide``): every side at least MIN_SIDE, or a thin output (a
# network's last layer, at least MIN_OUTPUT wide) with at least MANY_ROWS rows. One oneDNN call
# per member costs ~10-20 us beyond its arithmetic, and MKL's batched sgemm was as fast or faster
# for products thin in the reduced side or the rows (a first layer's 11-14 inputs, a weight
# gradient's 6-14 rows: up to 3.3x faster with two threads), but 1.6-2.9x slower for a thin
# output over many rows (benchmarks/results/cpu_amd_zen5/malloc/matmul_kernels.json, "products").
MIN_SIDE = 32
MIN_OUTPUT = 4
MANY_ROWS = 512


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


ONEDNN = _onednn_available()


def _plain_cpu_float32(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Float32 CPU tensors outside autocast and compilation."""
    return (a.device.type == "cpu" and a.dtype == torch.float32 and b.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


def _wide(a: torch.Tensor, b: torch.Tensor) -> bool:
    rows, inner, out = a.shape[-2], a.shape[-1], b.shape[-1]
    return ONEDNN and rows >= MIN_SIDE and inner >= MIN_SIDE and (
        out >= MIN_SIDE or (out >= MIN_OUTPUT and rows >= MANY_ROWS))


def uses_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``bmm(a, b)`` takes oneDNN's float32 kernel (module docstring)."""
    return _wide(a, b) and _plain_cpu_float32(a, b)


def _torch_baddbmm(bias: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)


def _onednn_baddbmm(bias: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    linear = torch.ops.mkldnn._linear_pointwise
    outs = [linear(a[i], b[i].t(), None if bias is None else bias[i].reshape(-1), "none", [], "")
            for i in range(a.shape[0])]
    return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)


class _OneDNNBaddbmm(torch.autograd.Function):
    """``_onednn_baddbmm`` inside an autograd graph (the ensemble's fit): its gradients are
    products of the same kind, on the same kernel."""

    @staticmethod
    def forward(ctx, bias, a, b):
        ctx.save_for_backward(a, b)
        return _onednn_baddbmm(bias, a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_bias = grad.sum(1, keepdim=True) if ctx.needs_input_grad[0] else None
        grad_a = baddbmm(None, grad, b.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        grad_b = baddbmm(None, a.transpose(1, 2), grad) if ctx.needs_input_grad[2] else None
        return grad_bias, grad_a, grad_b


def baddbmm(bias: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``bias + a @ b`` for a [N, M, K], b [N, K, P] and bias [N, 1, P] (or None): torch.baddbmm's
    (torch.bmm's) result and gradients, on oneDNN where ``uses_onednn``. A one-column product
    (P = 1) on the CPU in float32 outside autograd runs as one matrix-vector product per member:
    MKL's batched sgemm takes 5-7x longer for it (a critic's output layer, measured on an AMD EPYC)."""
    if not _plain_cpu_float32(a, b) or (bias is not None and bias.shape != (a.shape[0], 1, b.shape[-1])):
        return _torch_baddbmm(bias, a, b)
    graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (bias, a, b))
    if _wide(a, b):
        return _OneDNNBaddbmm.apply(bias, a, b) if graph else _onednn_baddbmm(bias, a, b)
    if b.shape[-1] == 1 and not graph:
        outs = [torch.mv(a[i], b[i, :, 0]) if bias is None else torch.addmv(bias[i].reshape(()), a[i], b[i, :, 0])
                for i in range(a.shape[0])]
        return torch.stack(outs).unsqueeze(-1)
    return _torch_baddbmm(bias, a, b)


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for a [N, M, K], b [N, K, P]: ``baddbmm`` without a bias."""
    return baddbmm(None, a, b)
