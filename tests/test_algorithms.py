"""The algorithm choice (`--algo`): presets, the paper's ablations by config alone, and the
model-free SAC baseline (docs/baselines.md)."""
import pytest

from mbpo_ray.algos import make_algorithm
from mbpo_ray.cli import main
from mbpo_ray.config import ALGO_PRESETS, ALGOS, ConfigError, make_config
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.train import train


def test_every_algorithm_has_a_preset():
    assert set(ALGO_PRESETS) == set(ALGOS) == {"mbpo", "sac", "pets", "steve", "rllib-sac"}


def test_sac_is_mbpo_without_model_data_and_one_update_per_step():
    cfg = make_config("HalfCheetah-v5", {"algo": "sac"})
    assert cfg.mbpo.real_ratio == 1.0 and cfg.mbpo.updates_per_step == 1
    # everything SAC shares with MBPO stays the paper's (docs/hyperparameters.md, "Algorithm presets")
    mbpo = make_config("HalfCheetah-v5")
    assert cfg.sac == mbpo.sac and cfg.mbpo.init_random_steps == mbpo.mbpo.init_random_steps


def test_no_model_ablation_and_k1_ablation_are_config_only():
    # the paper's Figure 3: SAC at MBPO's update ratio with no model data ...
    no_model = make_config("Hopper-v5", {"algo": "sac", "mbpo.updates_per_step": 20})
    assert no_model.mbpo.real_ratio == 1.0 and no_model.mbpo.updates_per_step == 20
    # ... and MBPO with k fixed at 1
    k1 = make_config("Hopper-v5", {"mbpo.rollout_schedule": [0, 1, 1, 1]})
    assert k1.algo == "mbpo" and k1.mbpo.rollout_schedule == (0, 1, 1, 1)


def test_user_overrides_win_over_the_algorithm_preset():
    cfg = make_config("InvertedPendulum-v5", {"algo": "pets", "model.num_members": 7})
    assert cfg.model.num_members == 7 and cfg.model.num_elites == 5


def test_unknown_algorithm_is_refused_naming_the_allowed_ones(tmp_path, capsys):
    with pytest.raises(ConfigError, match="algo='ppo'.*mbpo, sac, pets, steve, rllib-sac"):
        make_config("Hopper-v5", {"algo": "ppo"})
    out = tmp_path / "run"
    assert main(["train", "--algo", "ppo", "--env", "Hopper-v5", "--out", str(out)]) == 2
    assert "rllib-sac" in capsys.readouterr().err
    assert not out.exists()


def test_resume_cannot_switch_algorithm(tiny_config, tmp_path, capsys, single_thread):
    out = tmp_path / "run"
    train(tiny_config(algo="sac", total_steps=300), str(out), progress=False, stop_at=250)
    before = (out / "checkpoint.pt").read_bytes()
    assert main(["train", "--resume", str(out), "--algo", "mbpo"]) == 2
    assert "algo" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_sac_run_fits_no_model_and_does_g_updates_per_step(tiny_config, tmp_path, single_thread):
    cfg = tiny_config(algo="sac", **{"mbpo.updates_per_step": 3})
    train(cfg, str(tmp_path / "run"), progress=False)
    records = RunDirectory(tmp_path / "run").read_metrics()
    assert [r["env_steps"] for r in records] == [200, 400, 600]
    for r in records:
        assert not [k for k in r if k.startswith(("model/", "rollout/"))]
        assert "eval/return_mean" in r
    # no updates during the 200 random warm-up steps, nor before D_env holds
    # min_real_before_updates (256) transitions; then 3 per env step
    assert "train/updates" not in records[0]
    assert [r["train/updates"] for r in records[1:]] == [(400 - 255) * 3, 200 * 3]


def test_algorithm_titles(tiny_config, tmp_path, single_thread):
    assert make_algorithm(tiny_config(), "cpu", tmp_path).title == "MBPO"
    assert make_algorithm(tiny_config(algo="sac"), "cpu", tmp_path).title == "SAC"


@pytest.mark.slow
def test_sac_learns_something_on_inverted_pendulum(tmp_path, single_thread):
    """Model-free SAC (G = 1) with the InvertedPendulum preset, seed 0, 3,000 env steps.

    Threshold 40: the untrained and the random policy hold the pole ~5-10 steps (eval return
    6-11 at the first epochs of seeds 0, 1, 2). On this config the best of the last four evals
    (2,250-3,000 steps) was 107 / 107 / 96 for seeds 0 / 1 / 2, so 40 (4x random) leaves a
    margin of more than 2x. SAC alone is far from MBPO here (MBPO: 1000 by ~2,500 steps), as the
    paper reports: its benefit is sample efficiency.
    """
    cfg = make_config("InvertedPendulum-v5", {"algo": "sac", "total_steps": 3000, "seed": 0,
                                              "device": "cpu"})
    train(cfg, str(tmp_path / "run"), progress=False)
    evals = [r["eval/return_mean"] for r in RunDirectory(tmp_path / "run").read_metrics()]
    assert evals[0] < 20, evals
    assert max(evals[-4:]) >= 40, evals
