"""The diagnostics (docs/diagnostics.md): the live metrics that training logs, and
`mbpo-ray analyze KIND RUN_DIR` on a small Hopper-v5 run trained here (module fixture: tiny
networks, 600 env steps, every epoch's networks kept)."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from mbpo_ray.agents import TanhGaussianPolicy
from mbpo_ray.cli import main
from mbpo_ray.config import ConfigError, ModelConfig, make_config
from mbpo_ray.data import ReplayBuffer, RowLayout
from mbpo_ray.diagnostics import bound
from mbpo_ray.live_metrics import BehaviorLog, elite_mse, gaussian_kl
from mbpo_ray.diagnostics.params import KINDS
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.rollout import branched_rollout
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

EPOCH, WARMUP, TOTAL = 100, 200, 600


def small_hopper(**extra):
    overrides = {"total_steps": TOTAL, "seed": 3, "device": "cpu", "eval_episodes": 1,
                 "mbpo.epoch_length": EPOCH, "mbpo.init_random_steps": WARMUP, "mbpo.model_train_freq": 100,
                 "mbpo.rollout_batch_size": 400, "mbpo.updates_per_step": 1, "mbpo.rollout_schedule": [0, 2, 1, 3],
                 "model.hidden_width": 32, "model.num_hidden_layers": 2, "model.weight_decays": [1e-5, 1e-5, 1e-5],
                 "model.max_fit_epochs": 20, "sac.hidden_width": 32, "sac.batch_size": 64,
                 "keep_checkpoints_every": 1}
    overrides.update(extra)
    return make_config("Hopper-v5", overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("diag") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train(small_hopper(), str(path), progress=False)
    torch.set_num_threads(before)
    return path


# Small enough for a 2-core CI machine; every analysis still runs every code path.
TINY = ["compounding.episodes=2", "compounding.horizon=6", "compounding.starts=20", "compounding.particles=10",
        "shift.data_sizes=200,400", "shift.policies=3", "shift.updates_per_policy=30", "shift.eval_steps=200",
        "shift.fit_epochs=5", "exploitation.particles=20", "exploitation.horizon=100",
        "disagreement.episodes=2", "disagreement.probes=100", "disagreement.max_data=1000",
        # the epochs after the one in which SAC starts (at 256 real transitions, inside 200..300)
        "flow.epochs=3"]


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("diag") / "report"
    argv = ["analyze", "report", str(run_dir), "--out", str(out)]
    for p in TINY:
        argv += ["--param", p]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(argv) == 0
    torch.set_num_threads(before)
    return out


def numbers(out, kind):
    return json.loads((out / f"{kind}.json").read_text())


def fails(argv, capsys):
    """main(argv) exits 2 with one line on stderr; returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mbpo-ray: error: "), err
    return err


# --- the live metrics ---------------------------------------------------------------------------------

def test_training_logs_the_live_metrics(run_dir):
    records = RunDirectory(run_dir).read_metrics()
    fitted = [r for r in records if "model/holdout_mse" in r]
    assert len(fitted) == (TOTAL - WARMUP) // EPOCH
    # the first fit has no earlier model to score; every later one scores the previous model on
    # the 100 steps collected since
    assert "model/new_data_mse" not in fitted[0]
    assert all(r["model/new_data_mse"] > 0 for r in fitted[1:])
    for r in fitted:
        assert r["rollout/ended_nonfinite"] == 0
        assert r["rollout/start_disagreement"] > 0
        # each rollout ends at most once on a terminal transition: the same count two ways
        terminal = r["rollout/terminated_frac"] * r["rollout/transitions"]
        assert r["rollout/ended_terminated"] * r["rollout/start_states"] == pytest.approx(terminal)
        assert r["rollout/policy_kl"] > 0  # the policy was updated since it acted
    # the warm-up epochs act at random: no policy steps, no KL
    assert all("rollout/policy_kl" not in r for r in records if r["env_steps"] <= WARMUP)


def test_live_metrics_draw_no_random_numbers():
    torch.manual_seed(0)
    model = ProbabilisticEnsemble(3, 2, ModelConfig(num_members=4, num_elites=2, hidden_width=16,
                                                    num_hidden_layers=2, weight_decays=(1e-4,) * 3))
    policy = TanhGaussianPolicy(3, 2, 16, 2)
    obs, act = torch.randn(50, 3), torch.rand(50, 2) * 2 - 1
    rows = RowLayout(3, 2).pack(obs, act, torch.randn(50), obs + 0.1, torch.zeros(50))
    log = BehaviorLog(3, 2, capacity=8)
    state = torch.get_rng_state()
    model.disagreement(obs, act)
    elite_mse(model, rows, RowLayout(3, 2))
    log.add(obs[:10], *policy.gaussian(obs[:10]))
    log.take_kl(policy)
    assert torch.equal(torch.get_rng_state(), state)


def test_elite_mse_runs_the_ensemble_without_autograd():
    model = ProbabilisticEnsemble(3, 2, ModelConfig(num_members=4, num_elites=2, hidden_width=16,
                                                    num_hidden_layers=2, weight_decays=(1e-4,) * 3))
    obs, act = torch.randn(20, 3), torch.rand(20, 2) * 2 - 1
    rows = RowLayout(3, 2).pack(obs, act, torch.randn(20), obs + 0.1, torch.zeros(20))
    grad_enabled = []
    model.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    elite_mse(model, rows, RowLayout(3, 2))
    assert grad_enabled == [False]


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(1)
    mp, mq, sp, sq = torch.randn(4, 6, 3).unbind(0)
    ours = gaussian_kl(mp, sp, mq, sq)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mp, sp.exp()),
                                            torch.distributions.Normal(mq, sq.exp())).sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_behavior_log_kl_is_zero_for_the_same_policy_and_positive_after_a_change():
    torch.manual_seed(2)
    policy = TanhGaussianPolicy(3, 2, 16, 2)
    log = BehaviorLog(3, 2, capacity=5)
    obs = torch.randn(7, 3)
    for o in obs:  # one step at a time, as the runtime adds them: only the newest 5 stay
        log.add(o[None], *policy.gaussian(o[None]))
    assert len(log) == 5
    recorded = policy.gaussian(obs[2:])
    saved = log.state_dict()
    assert log.take_kl(policy) == pytest.approx(0.0, abs=1e-6) and len(log) == 0
    log.load_state_dict(saved)
    with torch.no_grad():
        policy.net[-1].bias += 0.5  # moves every mean and log std
    with torch.no_grad():
        expected = float(gaussian_kl(*policy.gaussian(obs[2:]), *recorded).mean())
    assert expected > 0 and log.take_kl(policy) == pytest.approx(expected, rel=1e-5)


def test_act_and_gaussian_is_act_with_the_gaussian_it_drew_from():
    # The runtimes record the acting policy's Gaussian from the same forward pass as the action
    # (no second pass): same action as act under the same seed, same Gaussian as gaussian().
    policy = TanhGaussianPolicy(3, 2, 16, 2)
    obs = torch.randn(5, 3)
    torch.manual_seed(4)
    action = policy.act(obs)
    torch.manual_seed(4)
    both, mean, log_std = policy.act_and_gaussian(obs)
    assert torch.equal(both, action)
    expected_mean, expected_log_std = policy.gaussian(obs)
    assert torch.equal(mean, expected_mean) and torch.equal(log_std, expected_log_std)
    assert not (mean.requires_grad or both.requires_grad)


def test_ensemble_disagreement_and_elite_mse_by_hand():
    torch.manual_seed(3)
    cfg = ModelConfig(num_members=4, num_elites=2, hidden_width=16, num_hidden_layers=2, weight_decays=(1e-4,) * 3)
    model = ProbabilisticEnsemble(3, 2, cfg)
    model.elite_idx.copy_(torch.tensor([3, 1]))
    obs, act = torch.randn(20, 3), torch.randn(20, 2)
    with torch.no_grad():
        mean, _ = model(torch.cat([obs, act], -1))
    elites = mean[[3, 1]]
    by_hand = ((elites - elites.mean(0)) ** 2).mean(0).mean(-1).mean()
    assert float(model.disagreement(obs, act)) == pytest.approx(float(by_hand), rel=1e-5)
    layout = RowLayout(3, 2)
    rew, next_obs = torch.randn(20), torch.randn(20, 3)
    rows = layout.pack(obs, act, rew, next_obs, torch.zeros(20))
    per_member = EnsembleTrainer(model, cfg).member_mse(torch.cat([obs, act], -1),
                                                        torch.cat([rew[:, None], next_obs - obs], -1))
    assert elite_mse(model, rows, layout) == pytest.approx(float(per_member[[3, 1]].mean()), rel=1e-5)


def test_rollout_reports_how_rollouts_ended():
    torch.manual_seed(4)
    cfg = ModelConfig(num_members=3, num_elites=2, hidden_width=16, num_hidden_layers=2, weight_decays=(1e-4,) * 3)
    model, policy = ProbabilisticEnsemble(3, 2, cfg), TanhGaussianPolicy(3, 2, 16, 2)
    start = torch.randn(40, 3)
    start[:10] = float("nan")  # these ten predictions are not finite: dropped at the first step

    def first_half_terminates(obs, act, next_obs):
        return next_obs[:, 0] > 0

    m = branched_rollout(model, policy, start, 4, first_half_terminates, ReplayBuffer(3, 2, 1000))
    assert m["rollout/ended_nonfinite"] == pytest.approx(10 / 40)
    assert m["rollout/ended_terminated"] * 40 == pytest.approx(m["rollout/terminated_frac"] * m["rollout/transitions"])
    assert 0 < m["rollout/ended_terminated"] < 30 / 40


# --- the bound -------------------------------------------------------------------------------------

def test_bound_equals_hand_computed_values():
    # gamma 0.5, r_max 1, eps_m 0.1, eps_pi 0.2, worked out on paper:
    #   Thm 4.1: 2*0.5*1*(0.1 + 0.4)/0.25 + 4*1*0.2/0.5 = 2.0 + 1.6 = 3.6
    #   Thm 4.2, k=0: 2*[0.5*0.2/0.25 + 3*0.2/0.5] = 2*[0.4 + 1.2] = 3.2
    #            k=1: 2*[0.25*0.2/0.25 + 2.5*0.2/0.5 + 1*0.5/0.5] = 2*[0.2 + 1.0 + 1.0] = 4.4
    #   Thm 4.3 with slope 0.5 (eps_m' = 0.1 + 0.2*0.5 = 0.2), k=1: 2*[0.2 + 1.0 + 0.2/0.5] = 3.2
    s = bound.series(0.1, 0.2, 0.5, 1.0, 0.5, k_max=3)
    assert s["theorem_4_1_penalty"] == pytest.approx(3.6)
    assert s["theorem_4_2_penalty"][:2] == pytest.approx([3.2, 4.4])
    assert s["theorem_4_3_penalty"][1] == pytest.approx(3.2)
    assert s["k_star_theorem_4_2"] == 0
    # k*: gamma 0.5, eps_pi 0.2, eps_m' = 0.01 + 0.2*0.1 = 0.03; the objective
    # 0.5^(k+1)*0.2/0.25 + 0.5^k*0.2/0.5 + k*0.03/0.5 = 0.8*0.5^k + 0.06k is
    # 0.8, 0.46, 0.32, 0.28, 0.29, 0.325 for k = 0..5: smallest at k = 3
    s = bound.series(0.01, 0.2, 0.5, 1.0, 0.1, k_max=10)
    assert s["k_star"] == 3 == s["k_star_in_range"]


@pytest.mark.parametrize("gamma", [0.9, 0.99, 0.999])
def test_k_star_is_the_argmin_of_the_objective(gamma):
    for eps_m, eps_pi in [(1e-3, 0.1), (0.01, 0.02), (0.05, 0.05), (0.3, 0.1), (1e-4, 1.0)]:
        objective = [gamma ** (k + 1) * eps_pi / (1 - gamma) ** 2 + gamma ** k * eps_pi / (1 - gamma)
                     + k * eps_m / (1 - gamma) for k in range(20000)]
        best, k = min(objective), bound.k_star(eps_m, eps_pi, gamma)
        # the smallest minimiser, up to the rounding of the sums (a tie, eps_m = eps_pi, takes k = 0)
        assert objective[k] <= best * (1 + 1e-12) and all(v > best * (1 + 1e-12) for v in objective[:k])


def test_penalty_grows_with_k_and_with_model_error():
    for gamma in (0.9, 0.99):
        low = bound.series(0.01, 0.05, gamma, 1.0, 1.0, k_max=50)
        high = bound.series(0.1, 0.05, gamma, 1.0, 1.0, k_max=50)
        literal = low["theorem_4_2_penalty"]
        assert all(b > a for a, b in zip(literal, literal[1:]))
        for key in ("theorem_4_2_penalty", "theorem_4_3_penalty"):
            assert all(h > lo for h, lo in zip(high[key][1:], low[key][1:])), key
        assert high["theorem_4_1_penalty"] > low["theorem_4_1_penalty"]


def test_k_star_is_zero_for_a_large_model_error_and_positive_for_a_small_one():
    assert bound.series(0.5, 0.1, 0.99, 1.0, 0.0, k_max=30)["k_star"] == 0  # eps_m' >= eps_pi
    small = bound.series(0.001, 0.1, 0.99, 1.0, 0.5, k_max=600)  # eps_m' = 0.051 < eps_pi
    assert small["k_star"] > 0
    # gamma^k* <= eps_m'/eps_pi < gamma^(k*-1)
    assert 0.99 ** small["k_star"] <= 0.51 < 0.99 ** (small["k_star"] - 1)


def test_bound_cli_without_a_run(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["analyze", "bound", "--eps-model", "0.1", "--eps-pi", "0.2", "--gamma", "0.5", "--r-max", "1",
                 "--slope", "0.5", "--out", str(out)]) == 0
    given = numbers(out, "bound")["series"]["given"]
    assert given["theorem_4_2_penalty"][:2] == pytest.approx([3.2, 4.4])  # as computed above
    assert (out / "bound.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for argv, says in [
        (["--eps-model", "0.1", "--eps-pi", "0.2", "--gamma", "1.5", "--r-max", "1"], "--gamma 1.5 is not allowed"),
        (["--eps-model", "-1", "--eps-pi", "0.2", "--gamma", "0.9", "--r-max", "1"], "--eps-model -1.0 is not allowed"),
        (["--eps-model", "0.1", "--eps-pi", "0.2", "--gamma", "0.9", "--r-max", "0"], "--r-max 0.0 is not allowed"),
        (["--eps-model", "0.1", "--eps-pi", "nan", "--gamma", "0.9", "--r-max", "1"], "--eps-pi nan is not allowed"),
        (["--eps-model", "0.1", "--gamma", "0.9"], "missing: --eps-pi, --r-max"),
    ]:
        assert says in fails(["analyze", "bound", "--out", str(tmp_path / "bad"), *argv], capsys)
    assert not (tmp_path / "bad").exists()


# --- the analyses on the small run ---------------------------------------------------------------

def test_every_kind_writes_png_and_json_and_the_report_shows_every_image(report):
    page = (report / "report.html").read_text()
    for kind in KINDS:
        assert (report / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", kind
        assert isinstance(numbers(report, kind), dict)
    for png in report.glob("*.png"):
        assert f'src="{png.name}"' in page
    assert "Not available" not in page
    # the compounding error's picture: the model's dream beside reality (docs/video.md), next to it
    assert (report / "dream.gif").read_bytes()[:6] == b"GIF89a" and (report / "dream.mp4").stat().st_size > 1000
    assert page.index('src="compounding.png"') < page.index('src="dream.gif"') < page.index('id="disagreement"')


def test_compounding_error_grows_with_k(report):
    c = numbers(report, "compounding")
    # open loop, every step adds the model's one-step error to a state that is already off
    for key in ("composition", "composition_mean"):
        assert c[key][-1] > c[key][0], key
    members = [m for m in c["members"] if None not in m]
    assert sum(m[-1] for m in members) > sum(m[0] for m in members)
    assert c["composition_fit"]["growth_per_step"] > 1
    # the real env restored to each start state replays the recorded episode: exact up to the
    # float32 rounding of the stored observations (|obs| < 20 here: well under 1e-5)
    assert c["real_replay_max_abs_diff"] < 1e-5
    assert c["scored_starts"][0] == c["start_states"]


def test_disagreement_is_higher_far_from_the_data(report):
    d = numbers(report, "disagreement")
    probe = d["probe"]
    # D_env rows moved 8 standardised units away: outside every input the members were fit on
    assert probe[-1]["shift"] == 8.0 and probe[-1]["mean_disagreement"] > probe[0]["mean_disagreement"]
    assert probe[-1]["mean_knn_distance"] > probe[0]["mean_knn_distance"]
    assert sum(b["states"] for b in d["bins"]) == d["trajectory_states"]


def test_flow_counts_follow_the_config(report):
    f = numbers(report, "flow")
    st = f["stages"]
    # 100 env steps, 1 fit, 1 rollout batch and 100 SAC updates (G = 1) per epoch after the warm-up
    assert st["env"]["per_epoch"] == EPOCH and st["model"]["per_epoch"] == 1
    assert st["sac"]["per_epoch"] == EPOCH and st["rollout"]["batches_per_epoch"] == 1
    assert st["env"]["rate"] > 0 and f["phases_measured"]


def test_shift_and_exploitation_numbers(report):
    s = numbers(report, "shift")
    assert s["kl"][0] == 0 and all(k > 0 for k in s["kl"][1:])  # later policies differ from the first
    assert [x["data"] for x in s["slopes"]] == [200, 400]
    e = numbers(report, "exploitation")
    # checkpoints after the warm-up only: 300 .. 600
    assert [c["env_steps"] for c in e["checkpoints"]] == [300, 400, 500, 600]
    assert all(math.isfinite(c["model_return"]["mean"]) for c in e["checkpoints"])


def test_bound_measured_on_the_run(report):
    m = numbers(report, "bound")["series"]["measured"]
    assert m["inputs"]["gamma"] == small_hopper().sac.discount
    assert m["inputs"]["eps_pi"] > 0 and m["inputs"]["r_max"] > 0
    assert "shift.json" in m["sources"]["slope"]  # report runs shift before bound


# --- kept checkpoints and bad input ------------------------------------------------------------------

def test_kept_checkpoints_hold_only_the_networks(run_dir):
    kept = RunDirectory(run_dir).snapshot_paths()
    assert [p.name for p in kept] == [f"step_{s}.pt" for s in range(EPOCH, TOTAL + 1, EPOCH)]
    state = torch.load(kept[-1], weights_only=False)
    assert set(state) == {"env_steps", "policy", "model"} and state["env_steps"] == TOTAL
    with pytest.raises(ConfigError, match="keep_checkpoints_every"):
        small_hopper(keep_checkpoints_every=-1)
    with pytest.raises(ConfigError, match="keep_checkpoints_every"):
        small_hopper(algo="sac")


def copy_run(run_dir, dest, keep_snapshots=False):
    shutil.copytree(run_dir, dest, ignore=None if keep_snapshots else shutil.ignore_patterns("checkpoints"))
    return dest


def test_bad_input_gets_a_one_line_error(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    plain = copy_run(run_dir, tmp_path / "plain")
    err = fails(["analyze", "exploitation", str(plain), "--out", str(out)], capsys)
    assert "keep_checkpoints_every=1" in err
    assert not (out / "exploitation.png").exists()
    assert "no such directory" in fails(["analyze", "flow", str(tmp_path / "missing")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no config.yaml" in fails(["analyze", "flow", str(tmp_path / "empty")], capsys)
    assert "allowed: compounding, bound" in fails(["analyze", "everything", str(plain)], capsys)
    assert "has no parameter 'horizn'" in fails(["analyze", "compounding", str(plain), "--param", "horizn=3"], capsys)
    assert "at least 1" in fails(["analyze", "compounding", str(plain), "--param", "horizon=0"], capsys)
    assert "name the analysis" in fails(["analyze", "report", str(plain), "--param", "horizon=3"], capsys)
    corrupt = copy_run(run_dir, tmp_path / "corrupt")
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "is not a readable checkpoint" in fails(["analyze", "compounding", str(corrupt), "--out", str(out)], capsys)
    bad_copy = copy_run(run_dir, tmp_path / "badcopy", keep_snapshots=True)
    (bad_copy / "checkpoints" / "step_600.pt").write_bytes(b"garbage")
    assert "step_600.pt is not a readable kept checkpoint" in fails(
        ["analyze", "exploitation", str(bad_copy), "--out", str(out)], capsys)
    sac = copy_run(run_dir, tmp_path / "sac")
    text = (sac / "config.yaml").read_text().replace("algo: mbpo", "algo: sac").replace(
        "keep_checkpoints_every: 1", "keep_checkpoints_every: 0")
    (sac / "config.yaml").write_text(text)
    assert "needs an mbpo run" in fails(["analyze", "disagreement", str(sac), "--out", str(out)], capsys)
    # nothing of the run directories was changed by the failures
    assert (plain / "checkpoint.pt").read_bytes() == (run_dir / "checkpoint.pt").read_bytes()


def test_docs_list_every_parameter_and_live_key():
    import dataclasses
    from pathlib import Path

    from mbpo_ray.diagnostics.params import PARAMS

    docs = Path(__file__).resolve().parents[1] / "docs"
    page, metrics = (docs / "diagnostics.md").read_text(), (docs / "metrics.md").read_text()
    for kind, cls in PARAMS.items():
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in page, (kind, f.name)
    for key in ("model/new_data_mse", "rollout/start_disagreement", "rollout/ended_terminated",
                "rollout/ended_nonfinite", "rollout/policy_kl"):
        assert f"| `{key}` |" in metrics and key in page, key
