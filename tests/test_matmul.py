"""mbpo_ray.matmul: the float32 CPU matmuls on oneDNN (issue 25) give torch's results and gradients,
and are taken where they should be and nowhere else."""
import pytest
import torch

from mbpo_ray import matmul
from mbpo_ray.nn import StackedMLP

pytestmark = pytest.mark.usefixtures("single_thread")

# float32 products of width <= 256 summed in another order: differences of a few ulps of the
# sums' magnitude (~16 for these draws), far below 1e-4
ATOL, RTOL = 1e-4, 1e-5


def test_onednn_is_there_on_every_x86_torch():
    # torch's x86 wheels ship oneDNN; were it missing, the fast path would silently be off
    assert torch.backends.mkldnn.is_available()
    assert matmul.ONEDNN


@pytest.mark.parametrize("n,m,k,p", [(1, 512, 256, 256), (2, 256, 14, 256), (3, 64, 256, 6), (2, 512, 256, 1),
                                     (2, 100, 256, 3), (1, 7, 3, 9)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_results_equal_torch(n, m, k, p, with_bias):
    torch.manual_seed(0)
    a, b, bias = torch.randn(n, m, k), torch.randn(n, k, p), torch.randn(n, 1, p)
    want = torch.baddbmm(bias, a, b) if with_bias else torch.bmm(a, b)
    got = matmul.baddbmm(bias if with_bias else None, a, b)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    # transposed views (the update's weight gradients and backward products)
    got_t = matmul.bmm(a.transpose(1, 2).contiguous().transpose(1, 2), b.transpose(1, 2).contiguous().transpose(1, 2))
    torch.testing.assert_close(got_t, torch.bmm(a, b), atol=ATOL, rtol=RTOL)


def test_kernel_choice():
    a, b = torch.randn(2, 64, 32), torch.randn(2, 32, 48)
    assert matmul.uses_onednn(a, b)
    assert not matmul.uses_onednn(a, torch.randn(2, 32, 1))  # one column: matrix-vector products
    # thin products stay on torch's kernel: few inputs (a first layer), few rows (its weight
    # gradient), a thin output over few rows; a thin output over many rows goes to oneDNN
    assert not matmul.uses_onednn(torch.randn(2, 512, 14), torch.randn(2, 14, 256))
    assert not matmul.uses_onednn(torch.randn(2, 14, 512), torch.randn(2, 512, 256))
    assert not matmul.uses_onednn(torch.randn(7, 256, 200), torch.randn(7, 200, 24))
    assert matmul.uses_onednn(torch.randn(1, 512, 256), torch.randn(1, 256, 6))
    assert not matmul.uses_onednn(a.double(), b.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not matmul.uses_onednn(a, b)  # bf16 autocast: torch's own (oneDNN's bf16 kernels)
        assert matmul.baddbmm(None, a, b).dtype == torch.bfloat16


def test_gradients_equal_autograd_of_torch():
    """Inside a graph (the ensemble's fit): the gradients of bias, input and weight, with the input
    shared by all members (an expanded view, as StackedMLP feeds it)."""
    torch.manual_seed(0)
    x = torch.randn(96, 14, requires_grad=True)
    w, bias = torch.randn(3, 14, 40, requires_grad=True), torch.randn(3, 1, 40, requires_grad=True)
    upstream = torch.randn(3, 96, 40)
    grads = []
    for fn in (torch.baddbmm, matmul.baddbmm):
        out = fn(bias, x.unsqueeze(0).expand(3, -1, -1), w)
        grads.append(torch.autograd.grad((out * upstream).sum(), [x, w, bias]))
    for want, got in zip(*grads):
        torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_stacked_mlp_fit_step_equals_torch_kernels(monkeypatch):
    """One fit step of a dynamics-ensemble-shaped StackedMLP with oneDNN against the same step on
    torch's kernels: same loss, same gradients (float32 tolerance)."""
    def step():
        torch.manual_seed(0)
        net = StackedMLP(7, 14, [200] * 2, 24, "silu", "truncated_normal")
        x, y = torch.randn(7, 64, 14), torch.randn(7, 64, 24)
        loss = ((net(x) - y) ** 2).mean()
        loss.backward()
        return loss.detach(), [p.grad for p in net.parameters()]

    loss_fast, grads_fast = step()
    monkeypatch.setattr(matmul, "ONEDNN", False)
    loss_torch, grads_torch = step()
    torch.testing.assert_close(loss_fast, loss_torch, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads_fast, grads_torch):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_sac_update_and_ensemble_fit_take_the_onednn_kernel(monkeypatch):
    """The learner's update and a fit step run their wide products on oneDNN (a change that
    bypassed mbpo_ray.matmul would fall back to MKL silently)."""
    from mbpo_ray.agents.sac import SAC
    from mbpo_ray.config import SACConfig

    calls = []
    original = matmul._onednn_baddbmm

    def counted(bias, a, b):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return original(bias, a, b)

    monkeypatch.setattr(matmul, "_onednn_baddbmm", counted)
    torch.manual_seed(0)
    agent = SAC(11, 3, SACConfig(), torch.device("cpu"))
    agent.update(torch.randn(256, 11), torch.rand(256, 3) * 2 - 1, torch.randn(256), torch.randn(256, 11),
                 torch.zeros(256))
    # the 256-unit layers' products: policy, target and online critics forward, their backward
    wide = [c for c in calls if c[0][-1] == 256 and c[1][-1] == 256]
    assert len(wide) >= 6, calls
    calls.clear()
    net = StackedMLP(7, 14, [200] * 2, 24, "silu")
    net(torch.randn(7, 600, 14)).sum().backward()
    # forward: the 200x200 layer and the output layer (24 wide, over 600 rows); backward: the
    # 200x200 layer's weight gradient and the gradient into its input. On torch's kernel: the
    # first layer (14 inputs), its weight gradient (14 rows), the output layer's weight gradient
    # (24 wide over 200 rows) and the gradient through it (24 to reduce).
    assert sorted(calls) == sorted([((7, 600, 200), (7, 200, 200)), ((7, 600, 200), (7, 200, 24)),
                                    ((7, 200, 600), (7, 600, 200)), ((7, 600, 200), (7, 200, 200))]), calls
