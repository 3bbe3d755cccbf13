"""ProbabilisticEnsemble and EnsembleTrainer (the MBPO paper's model; defaults in docs/hyperparameters.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbpo_ray.config import ModelConfig
from mbpo_ray.data import ReplayBuffer, RowLayout
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble, fit_data, fit_data_from_rows

OBS, ACT = 3, 2
PAPER_DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


pytestmark = pytest.mark.usefixtures("single_thread")


def small_cfg(**kw) -> ModelConfig:
    base = dict(num_members=5, num_elites=3, hidden_width=32, num_hidden_layers=2,
                weight_decays=(2.5e-5, 5e-5, 1e-4))
    base.update(kw)
    return ModelConfig(**base)


def dynamics(n: int, generator: torch.Generator | None = None):
    """next = obs + 0.1 * act (obs dims 0, 1 use act dims 0, 1; dim 2 uses act 0), reward = sum(obs)."""
    obs = torch.randn(n, OBS, generator=generator)
    act = torch.rand(n, ACT, generator=generator) * 2 - 1
    delta = 0.1 * torch.stack([act[:, 0], act[:, 1], act[:, 0]], dim=1)
    rew = obs.sum(dim=1, keepdim=True)
    return torch.cat([obs, act], 1), torch.cat([rew, delta], 1)


def spy_member_mse(trainer, monkeypatch):
    """Record every (inputs, targets, result) the trainer evaluates as 'holdout'."""
    calls = []
    orig = trainer.member_mse

    def spy(inputs, targets):
        out = orig(inputs, targets)
        calls.append((inputs.clone(), targets.clone(), out.clone()))
        return out

    monkeypatch.setattr(trainer, "member_mse", spy)
    return calls


def own_member_mse(model, inputs, targets):
    with torch.no_grad():
        mean, _ = model(inputs)
    return ((mean - targets) ** 2).mean(dim=(1, 2))


# --- shapes and parameters --------------------------------------------------------------------

def test_forward_shapes_and_stacked_weights():
    torch.manual_seed(0)
    cfg = small_cfg(num_members=7, num_elites=5, num_hidden_layers=4, weight_decays=PAPER_DECAYS)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    x = torch.randn(11, OBS + ACT)
    mean, logvar = model(x)
    assert mean.shape == (7, 11, OBS + 1) and logvar.shape == (7, 11, OBS + 1)

    xe = torch.randn(7, 11, OBS + ACT)
    mean_e, logvar_e = model(xe)
    assert mean_e.shape == (7, 11, OBS + 1) and logvar_e.shape == (7, 11, OBS + 1)
    # [E, B, in]: member e sees only its own rows x[e].
    for e in (0, 3, 6):
        m2, lv2 = model(xe[e])
        assert torch.allclose(mean_e[e], m2[e], atol=1e-6)
        assert torch.allclose(logvar_e[e], lv2[e], atol=1e-6)

    dims = [OBS + ACT, 32, 32, 32, 32, 2 * (OBS + 1)]
    assert len(model.net.weights) == 5
    for w, b, fi, fo in zip(model.net.weights, model.net.biases, dims[:-1], dims[1:]):
        assert w.shape == (7, fi, fo)
        assert b.shape[0] == 7 and b.shape[-1] == fo
    # One parameter per layer (weights + biases) plus the two logvar bounds; none per member.
    assert len(list(model.parameters())) == 2 * 5 + 2


def test_logvar_soft_bounds_hold_for_huge_inputs():
    torch.manual_seed(1)
    model = ProbabilisticEnsemble(OBS, ACT, small_cfg())
    with torch.no_grad():
        model.max_logvar.copy_(torch.tensor([0.5, 0.2, -0.1, 0.7]))
        model.min_logvar.copy_(torch.tensor([-10.0, -8.0, -6.0, -9.0]))
    x = torch.cat([torch.randn(64, OBS + ACT) * 1e6, -torch.randn(64, OBS + ACT) * 1e6,
                   torch.randn(64, OBS + ACT)])
    _, logvar = model(x)
    assert torch.isfinite(logvar).all()
    # The paper's formula applies the lower soft bound after the upper one, so the result may
    # exceed max_logvar by at most log(1 + exp(-(max - min))) per dim (exp(-10.5) ~ 3e-5 at
    # the paper's init; ~3e-3 for the narrow dim 2 here).
    slack = torch.log1p(torch.exp(-(model.max_logvar - model.min_logvar))).detach() + 1e-6
    assert (logvar <= model.max_logvar + slack).all()
    assert (logvar >= model.min_logvar - 1e-6).all()
    # Huge inputs really push to the bounds (otherwise the test would not test the bounds).
    assert (logvar.amax(dim=(0, 1)) > model.max_logvar - 0.05).any() or \
        (logvar.amin(dim=(0, 1)) < model.min_logvar + 0.05).any()


def test_logvar_bounds_are_learnable_and_get_gradients():
    torch.manual_seed(2)
    cfg = small_cfg()
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    trainer = EnsembleTrainer(model, cfg)
    assert isinstance(model.max_logvar, torch.nn.Parameter) and model.max_logvar.requires_grad
    assert isinstance(model.min_logvar, torch.nn.Parameter) and model.min_logvar.requires_grad
    assert torch.allclose(model.max_logvar, torch.full((OBS + 1,), 0.5))
    assert torch.allclose(model.min_logvar, torch.full((OBS + 1,), -10.0))
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(model.max_logvar) in opt_params and id(model.min_logvar) in opt_params
    inputs = torch.randn(5, 8, OBS + ACT)
    targets = torch.randn(5, 8, OBS + 1)
    trainer.loss(inputs, targets).backward()
    for p in (model.max_logvar, model.min_logvar):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# --- forward_members ---------------------------------------------------------------------------

def test_forward_members_matches_full_forward_row_by_row():
    torch.manual_seed(3)
    model = ProbabilisticEnsemble(OBS, ACT, small_cfg(num_members=7))
    with torch.no_grad():
        model.input_mean.copy_(torch.randn(OBS + ACT))
        model.input_std.copy_(torch.rand(OBS + ACT) + 0.5)
    x = torch.randn(40, OBS + ACT)
    member = torch.randint(0, 4, (40,))  # members 4, 5, 6 get zero rows
    member[:3] = torch.tensor([3, 0, 3])
    assert set(member.tolist()) == {0, 1, 2, 3}
    mean, logvar = model.forward_members(x, member)
    full_mean, full_logvar = model(x)
    rows = torch.arange(40)
    assert mean.shape == (40, OBS + 1)
    assert torch.allclose(mean, full_mean[member, rows], atol=1e-5)
    assert torch.allclose(logvar, full_logvar[member, rows], atol=1e-5)
    # A member with zero rows may be the first or the last: still right.
    member2 = torch.full((40,), 6)
    member2[::2] = 1
    mean2, _ = model.forward_members(x, member2)
    assert torch.allclose(mean2, full_mean[member2, rows], atol=1e-5)


def test_forward_members_evaluates_only_the_chosen_member():
    torch.manual_seed(4)
    model = ProbabilisticEnsemble(OBS, ACT, small_cfg(num_members=5))
    with torch.no_grad():
        model.net.weights[0][3].fill_(float("nan"))
    x = torch.randn(50, OBS + ACT)
    member = torch.arange(50) % 5
    mean, logvar = model.forward_members(x, member)
    others = member != 3
    assert torch.isfinite(mean[others]).all() and torch.isfinite(logvar[others]).all()
    assert torch.isnan(mean[~others]).all()  # member 3 really was the one used for its rows
    # And the full forward (every member on every row) is poisoned only in member 3.
    full_mean, _ = model(x)
    assert torch.isnan(full_mean[3]).all() and torch.isfinite(full_mean[[0, 1, 2, 4]]).all()


# --- init and normaliser ---------------------------------------------------------------------

def test_truncated_normal_init_and_zero_biases():
    torch.manual_seed(5)
    cfg = small_cfg(num_members=7, hidden_width=200, num_hidden_layers=4, weight_decays=PAPER_DECAYS)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    # The released code calls tf.truncated_normal(stddev=s), cut at 2 s: s is the std of the
    # normal before truncation; the truncated variable's std is s * sqrt(1 - 2*2*phi(2)/Z).
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    z = math.erf(2 / math.sqrt(2))
    trunc_factor = math.sqrt(1 - 4 * phi2 / z)  # ~0.8796
    for w in model.net.weights:
        fan_in = w.shape[1]
        s = 1.0 / (2.0 * math.sqrt(fan_in))
        assert w.abs().max() <= 2 * s + 1e-7
        if w.numel() > 100_000:  # the hidden 200x200 layers: tight statistics
            assert abs(w.std().item() - s * trunc_factor) < 0.03 * s * trunc_factor
            assert abs(w.mean().item()) < 0.02 * s
        else:
            assert abs(w.std().item() - s * trunc_factor) < 0.15 * s * trunc_factor
    for b in model.net.biases:
        assert torch.count_nonzero(b) == 0
    # Members are initialised independently (not copies of one another).
    w = model.net.weights[1]
    assert not torch.allclose(w[0], w[1])


def test_set_normalizer_mean_std_and_constant_column():
    torch.manual_seed(6)
    model = ProbabilisticEnsemble(OBS, ACT, small_cfg())
    inputs = torch.randn(300, OBS + ACT) * torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0]) + 4.0
    inputs[:, 2] = 7.25  # constant column
    model.set_normalizer(inputs)
    arr = inputs.numpy().astype(np.float64)
    assert np.allclose(model.input_mean.numpy(), arr.mean(0), atol=1e-5)
    expected_std = arr.std(0)
    expected_std[2] = 1.0
    assert np.allclose(model.input_std.numpy(), expected_std, rtol=1e-4)
    assert model.input_std[2].item() == 1.0
    # The forward uses the standardised inputs.
    with torch.no_grad():
        direct = model.net((inputs - model.input_mean) / model.input_std)
        mean, _ = model(inputs)
    assert torch.allclose(mean, direct[..., : OBS + 1], atol=1e-5)
    assert torch.isfinite(mean).all()


# --- loss --------------------------------------------------------------------------------------

def test_loss_equals_hand_computation():
    torch.manual_seed(7)
    cfg = ModelConfig(num_members=2, num_elites=1, hidden_width=4, num_hidden_layers=4)
    assert tuple(cfg.weight_decays) == PAPER_DECAYS
    model = ProbabilisticEnsemble(2, 1, cfg)
    with torch.no_grad():
        model.max_logvar.copy_(torch.tensor([0.3, 0.5, 0.1]))
        model.min_logvar.copy_(torch.tensor([-5.0, -10.0, -7.0]))
        model.input_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        model.input_std.copy_(torch.tensor([2.0, 0.5, 1.0]))
        for b in model.net.biases:
            b.normal_(0, 0.3)
    trainer = EnsembleTrainer(model, cfg)
    inputs = torch.randn(2, 3, 3)
    targets = torch.randn(2, 3, 3)
    got = trainer.loss(inputs, targets)

    W = [w.detach().double() for w in model.net.weights]
    B = [b.detach().double().reshape(2, -1) for b in model.net.biases]
    mx, mn = model.max_logvar.detach().double(), model.min_logvar.detach().double()
    x_all = ((inputs.double() - model.input_mean.double()) / model.input_std.double())
    total = 0.0
    for e in range(2):
        for i in range(3):
            h = x_all[e, i]
            for layer in range(5):
                h = h @ W[layer][e] + B[layer][e]
                if layer < 4:
                    h = h * torch.sigmoid(h)
            mu, lv = h[:3], h[3:]
            lv = mx - F.softplus(mx - lv)
            lv = mn + F.softplus(lv - mn)
            y = targets[e, i].double()
            # NLL: mean over batch and output dims, per member; summed over members.
            total += (((mu - y) ** 2) * torch.exp(-lv)).sum().item() / 9
            total += lv.sum().item() / 9
    for decay, w in zip(PAPER_DECAYS, W):
        total += decay * 0.5 * (w ** 2).sum().item()
    total += 0.01 * (mx.sum().item() - mn.sum().item())
    assert got.item() == pytest.approx(total, rel=1e-5, abs=1e-5)


# --- fit ---------------------------------------------------------------------------------------

def test_fit_learns_and_picks_elites_on_holdout(monkeypatch):
    torch.manual_seed(8)
    cfg = small_cfg(max_fit_epochs=30)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    trainer = EnsembleTrainer(model, cfg)
    inputs, targets = dynamics(2000)
    fresh_in, fresh_tg = dynamics(4000, torch.Generator().manual_seed(123))
    mse_before = own_member_mse(model, fresh_in, fresh_tg)

    calls = spy_member_mse(trainer, monkeypatch)
    trained_rows = []
    orig_loss = trainer.loss

    def loss_spy(inp, tg):
        trained_rows.append(inp.reshape(-1, inp.shape[-1]).detach().clone())
        return orig_loss(inp, tg)

    monkeypatch.setattr(trainer, "loss", loss_spy)
    metrics = trainer.fit(inputs, targets)

    assert metrics["model/fit_failed"] == 0
    assert metrics["model/num_holdout"] == 400 and metrics["model/num_train"] == 1600
    mse_after = own_member_mse(model, fresh_in, fresh_tg)
    assert mse_after.max() < 0.05 * mse_before.min()

    # The final holdout evaluation: 400 rows of the data, never trained on.
    hold_in, hold_tg, _ = calls[-1]
    assert hold_in.shape == (400, OBS + ACT)
    data_keys = {tuple(r) for r in inputs.tolist()}
    hold_keys = {tuple(r) for r in hold_in.tolist()}
    assert len(hold_keys) == 400 and hold_keys <= data_keys
    # Rows are keyed by their first coordinate (random floats: all distinct here).
    assert torch.unique(inputs[:, 0]).numel() == inputs.shape[0]
    trained_keys = torch.cat(trained_rows)[:, 0]
    assert not torch.isin(hold_in[:, 0], trained_keys).any()
    assert torch.isin(trained_keys, inputs[:, 0]).all()
    # Normaliser from the training split (all data minus holdout).
    train_mask = torch.tensor([tuple(r) not in hold_keys for r in inputs.tolist()])
    train_in = inputs[train_mask]
    assert torch.allclose(model.input_mean, train_in.mean(0), atol=1e-5)
    assert torch.allclose(model.input_std, train_in.std(0, unbiased=False), rtol=1e-4)

    # Elites: the num_elites members with the lowest holdout MSE of the restored weights.
    holdout_mse = own_member_mse(model, hold_in, hold_tg)
    elites = model.elite_idx.tolist()
    assert len(elites) == cfg.num_elites == len(set(elites))
    assert sorted(elites) == sorted(torch.argsort(holdout_mse)[: cfg.num_elites].tolist())
    non_elites = [m for m in range(cfg.num_members) if m not in elites]
    assert holdout_mse[elites].max() <= holdout_mse[non_elites].min()
    assert metrics["model/holdout_mse"] == pytest.approx(holdout_mse[elites].mean().item(), rel=1e-4)
    assert metrics["model/holdout_mse_all"] == pytest.approx(holdout_mse.mean().item(), rel=1e-4)


@pytest.mark.parametrize("n, holdout", [(1000, 200), (30000, 5000)])
def test_holdout_size(n, holdout):
    torch.manual_seed(9)
    cfg = small_cfg(num_members=2, num_elites=1, hidden_width=8, max_fit_epochs=1, batch_size=1024)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    inputs, targets = dynamics(n)
    metrics = EnsembleTrainer(model, cfg).fit(inputs, targets)
    assert metrics["model/num_holdout"] == holdout
    assert metrics["model/num_train"] == n - holdout
    assert metrics["model/epochs"] == 1


def _fit_metrics(seed=10, n=600, **kw):
    torch.manual_seed(seed)
    cfg = small_cfg(num_members=3, num_elites=2, hidden_width=16, **kw)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    inputs, targets = dynamics(n)
    return EnsembleTrainer(model, cfg).fit(inputs, targets)


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_patience(patience):
    # A relative-improvement threshold above 1 can never be met after the first epoch (which
    # always "improves" from +inf), so the fit runs exactly 1 + patience epochs.
    m = _fit_metrics(early_stop_patience=patience, improvement_threshold=2.0)
    assert m["model/epochs"] == 1 + patience


def test_max_fit_epochs_and_max_fit_seconds():
    assert _fit_metrics(early_stop_patience=1000, max_fit_epochs=3)["model/epochs"] == 3
    assert _fit_metrics(early_stop_patience=1000, max_fit_seconds=1e-9)["model/epochs"] == 1


def test_fit_stops_by_itself_without_caps():
    # Paper settings (patience 5, 1 % threshold, no caps) with a learning rate so small that
    # no epoch improves the holdout MSE by 1 %: the fit stops after 1 + 5 epochs on its own.
    m = _fit_metrics(n=400, learning_rate=1e-6)
    assert m["model/epochs"] == 6
    assert m["model/fit_failed"] == 0


def test_per_member_snapshots_restore_each_members_best(monkeypatch):
    """Member 1 is damaged by noise injected after each optimizer step from epoch 4 on: its
    holdout MSE rises in the late epochs while the others keep improving. After the fit every
    member must hold the weights of its own best epoch (improvement_threshold=0)."""
    torch.manual_seed(11)
    cfg = small_cfg(num_members=3, num_elites=2, hidden_width=16, max_fit_epochs=8,
                    early_stop_patience=100, improvement_threshold=0.0)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    trainer = EnsembleTrainer(model, cfg)
    inputs, targets = dynamics(640)  # 512 train rows, 2 batches per epoch
    calls = spy_member_mse(trainer, monkeypatch)
    orig_step = trainer.optimizer.step
    steps = {"n": 0}

    def noisy_step(*a, **kw):
        out = orig_step(*a, **kw)
        steps["n"] += 1
        if steps["n"] > 6:  # from epoch 4 on
            with torch.no_grad():
                for w in model.net.weights:
                    w[1] += 0.3 * torch.randn_like(w[1])
        return out

    monkeypatch.setattr(trainer.optimizer, "step", noisy_step)
    metrics = trainer.fit(inputs, targets)
    assert metrics["model/epochs"] == 8 and metrics["model/fit_failed"] == 0

    per_epoch = torch.stack([c[2] for c in calls[:-1]])  # [epochs, E]
    assert per_epoch.shape == (8, 3)
    final = calls[-1][2]
    # Preconditions: member 1 ends worse than its best, members 0 and 2 end at their best.
    assert per_epoch[-1, 1] > 1.5 * per_epoch[:, 1].min()
    # Each member is restored to exactly its own best epoch.
    assert torch.allclose(final, per_epoch.min(dim=0).values, rtol=1e-5)
    assert final[1] < per_epoch[-1, 1]
    assert torch.allclose(final[[0, 2]], per_epoch[-1, [0, 2]], rtol=1e-5)
    assert sorted(model.elite_idx.tolist()) == sorted(torch.argsort(final)[:2].tolist())


def _fitted_model_and_data(seed):
    torch.manual_seed(seed)
    cfg = small_cfg(num_members=3, num_elites=2, hidden_width=16, max_fit_epochs=3)
    model = ProbabilisticEnsemble(OBS, ACT, cfg)
    trainer = EnsembleTrainer(model, cfg)
    inputs, targets = dynamics(500)
    assert trainer.fit(inputs, targets)["model/fit_failed"] == 0
    return model, trainer, inputs, targets


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_fit_fails_and_keeps_last_good_weights(bad):
    model, trainer, inputs, targets = _fitted_model_and_data(12)
    with torch.no_grad():
        model.elite_idx.copy_(torch.tensor([2, 0]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad_targets = targets.clone()
    bad_targets[::3, 1] = bad  # in the training split and the holdout split alike
    metrics = trainer.fit(inputs, bad_targets)
    assert metrics["model/fit_failed"] == 1
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_fit_after_a_failed_fit_works_again():
    model, trainer, inputs, targets = _fitted_model_and_data(13)
    bad_targets = targets.clone()
    bad_targets[::3, 1] = float("nan")
    assert trainer.fit(inputs, bad_targets)["model/fit_failed"] == 1
    for state in trainer.optimizer.state_dict()["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.isfinite(state[key]).all()
    metrics = trainer.fit(inputs, targets)
    assert metrics["model/fit_failed"] == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- fit targets -----------------------------------------------------------------------------------

def test_fit_data_is_obs_act_to_reward_and_delta():
    g = torch.Generator().manual_seed(0)
    obs, act, rew, next_obs = (torch.randn(6, OBS, generator=g), torch.randn(6, ACT, generator=g),
                               torch.randn(6, generator=g), torch.randn(6, OBS, generator=g))
    inputs, targets = fit_data(obs, act, rew, next_obs)
    assert torch.equal(inputs, torch.cat([obs, act], dim=1))
    assert torch.equal(targets[:, 0], rew) and torch.equal(targets[:, 1:], next_obs - obs)
    layout = RowLayout(OBS, ACT)
    rows = layout.pack(obs, act, rew, next_obs, torch.zeros(6))
    for got, want in zip(fit_data_from_rows(rows, layout), (inputs, targets)):
        assert torch.equal(got, want)


def test_fit_buffer_and_fit_rows_equal_fit_on_fit_data():
    g = torch.Generator().manual_seed(1)
    inputs, targets = dynamics(300, g)
    obs, act, rew = inputs[:, :OBS], inputs[:, OBS:], targets[:, 0]
    buf = ReplayBuffer(OBS, ACT, 300)
    buf.add(obs, act, rew, obs + targets[:, 1:], torch.zeros(300))
    cfg = small_cfg(max_fit_epochs=2)
    results = []
    for how in ("fit", "fit_buffer", "fit_rows", "fit_rows_layout"):
        torch.manual_seed(2)
        model = ProbabilisticEnsemble(OBS, ACT, cfg)
        trainer = EnsembleTrainer(model, cfg)
        if how == "fit":
            metrics = trainer.fit(*fit_data(*buf.all()[:4]))
        elif how == "fit_buffer":
            metrics = trainer.fit_buffer(buf)
        elif how == "fit_rows":
            metrics = trainer.fit_rows(buf.rows_in_order())
        else:
            metrics = trainer.fit_rows(buf.rows_in_order(), RowLayout(OBS, ACT))
        results.append((metrics["model/holdout_mse_all"], model.state_dict()))
    for mse, state in results[1:]:
        assert mse == results[0][0]
        assert all(torch.equal(state[k], results[0][1][k]) for k in state)
