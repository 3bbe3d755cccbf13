"""Seed groups (`mbpo-ray train --seeds`, issue 13, docs/seed_groups.md): the stacked update, a
seed in a group against the same seed alone, the group's directory layout, stop and resume."""
import math

import pytest
import torch

from conftest import tiny_overrides
from helpers import WALL_CLOCK_KEYS, assert_states_equal, assert_wandb_history_is_the_metrics, comparable
from mbpo_ray.agents.sac import SAC
from mbpo_ray.agents.stacked import StackedUpdate
from mbpo_ray.agents.steve import STEVELearner
from mbpo_ray.cli import main
from mbpo_ray.config import SACConfig, make_config
from mbpo_ray.errors import ConfigError, RunDirError
from mbpo_ray.run_dir import RunDirectory
from mbpo_ray.seed_group import train_group
from mbpo_ray.group_dir import GroupDirectory, format_seeds, parse_seeds
from mbpo_ray.train import train

# A seed in a stack and the same seed alone differ only by float32 rounding (the batched kernels
# sum in another order): ~1e-7 per update, grown to <1e-5 relative over this file's runs on the
# machines we measured; 1e-3 leaves room for other CPUs while any real difference (another
# batch, other noise, a wrong seed) shows as O(1) (checked below).
RTOL = 1e-3
# The group fixture's seeds also fit their ensembles as one stacked fit (mbpo_ray.models.stacked_fit),
# which a CPU run leaves off by default (model.stacked_fit auto), so that CI runs it; and they learn
# their termination rule, fit by each seed right after the stacked fit from its own random stream
# (its classifier as small as the tiny ensemble: the defaults tripled this fixture's time).
GROUP_OVERRIDES = tiny_overrides(**{"model.stacked_fit": "always", "mbpo.termination": "learned",
                                    "model.termination_max_epochs": 5, "model.termination_hidden_width": 32})


@pytest.mark.parametrize("spec, seeds", [("0-3", [0, 1, 2, 3]), ("0,2,5", [0, 2, 5]), ("0-2,8,10-11", [0, 1, 2, 8, 10, 11])])
def test_parse_and_format_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize("spec, words", [("3-1", "ranges"), ("a", "ranges"), ("0", "2 to"), ("1,1", "twice"),
                                         ("0-100", "2 to")])
def test_bad_seed_lists_are_refused(spec, words):
    with pytest.raises(ConfigError, match=words):
        parse_seeds(spec)


def _agents(seeds, obs_dim=5, act_dim=2):
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(SAC(obs_dim, act_dim, SACConfig(hidden_width=32, batch_size=16), torch.device("cpu")))
    return out


def _batches(n, generator, obs_dim=5, act_dim=2, batch=16):
    return [(torch.randn(batch, obs_dim, generator=generator), torch.rand(batch, act_dim, generator=generator) * 2 - 1,
             torch.randn(batch, generator=generator), torch.randn(batch, obs_dim, generator=generator),
             (torch.rand(batch, generator=generator) < 0.1).float()) for _ in range(n)]


def _max_rel_diff(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a)


def test_stacked_update_matches_separate_updates():
    seeds = [0, 1, 2]
    alone, stacked_agents = _agents(seeds), _agents(seeds)
    stacked = StackedUpdate(stacked_agents)
    data = torch.Generator().manual_seed(7)
    for update in range(10):
        batches = _batches(len(seeds), data)
        noises = []
        for i, agent in enumerate(alone):
            torch.manual_seed(100 * update + i)
            agent.update(*batches[i])  # draws its noise itself
            torch.manual_seed(100 * update + i)
            noises.append(stacked_agents[i].draw_noise(16))  # the same draw
        stacked.update(batches, noises)
    stacked.save_to_agents()
    for a, b in zip(alone, stacked_agents):
        sa, sb = a.full_state_dict(), b.full_state_dict()
        assert _max_rel_diff(sb["module"], sa["module"]) < RTOL
        for j, state in sa["optimizer"]["state"].items():
            assert float(state["step"]) == float(sb["optimizer"]["state"][j]["step"]) == 10
            assert torch.allclose(state["exp_avg"], sb["optimizer"]["state"][j]["exp_avg"], rtol=RTOL, atol=1e-7)
    # the comparison can fail: the seeds' own weights differ by far more than RTOL
    assert _max_rel_diff(alone[0].full_state_dict()["module"], alone[1].full_state_dict()["module"]) > 0.1


def test_stacked_update_resumes_from_the_agents_state():
    """Stacking agents that were trained (their Adam state saved into them) continues exactly as
    the first stack would have."""
    data = torch.Generator().manual_seed(3)
    first = StackedUpdate(_agents([0, 1]))
    schedule = [(_batches(2, data), [torch.randn(2, 16, 2) for _ in range(2)]) for _ in range(6)]
    for batches, noises in schedule[:3]:
        first.update(batches, noises)
    first.save_to_agents()
    again = StackedUpdate(first.agents)  # built from the agents' saved state
    for batches, noises in schedule[3:]:
        first.update(batches, noises)
        again.update(batches, noises)
    for n in first.train:
        assert torch.equal(first.train[n], again.train[n]), n
    assert not torch.equal(first.train[first.train_names[0]], StackedUpdate(_agents([0, 1])).train[first.train_names[0]])


def test_learners_other_than_sac_cannot_be_stacked(tiny_config):
    cfg = tiny_config(algo="steve")
    torch.manual_seed(0)
    agent = STEVELearner(4, 1, cfg.sac, cfg.steve, torch.device("cpu"))
    with pytest.raises(ValueError, match="only SAC learners can be stacked, not STEVELearner"):
        StackedUpdate([agent, agent])


@pytest.fixture(scope="module")
def group_runs(tmp_path_factory):
    """Seeds 3 and 4 as a group, and seed 4 alone (tiny_config's settings)."""
    root = tmp_path_factory.mktemp("groups")
    torch.set_num_threads(1)
    cfg = make_config("InvertedPendulum-v5", GROUP_OVERRIDES)
    train_group(cfg, [3, 4], str(root / "group"), progress=False)
    alone = make_config("InvertedPendulum-v5", {**GROUP_OVERRIDES, "seed": 4})
    train(alone, str(root / "alone"), progress=False)
    return root


def test_group_layout_is_one_run_directory_per_seed(group_runs):
    group = GroupDirectory(group_runs / "group")
    assert group.seeds() == [3, 4]
    for seed in (3, 4):
        run = group.lane(seed)
        assert run.load_config().seed == seed
        assert [r["env_steps"] for r in run.read_metrics()] == [200, 400, 600]
        assert run.checkpoint_path.exists() and run.curve_path.exists()
        assert run.load_checkpoint()["env_steps"] == 600
    # two seeds, two different runs
    three, four = (comparable(group.lane(s).read_metrics()) for s in (3, 4))
    assert three != four
    # a finished save leaves no staged checkpoint and no commit file
    assert sorted(p.name for p in group.path.iterdir()) == ["group.yaml", "seed3", "seed4"]
    assert not list(group.path.rglob("*.next"))


# Metrics that are small differences of nearly equal numbers carry the run's float32 drift
# relatively amplified: rollout/policy_kl (~1e-3 here) is the KL between two nearly equal policies,
# and a 2e-5 relative drift of the networks moved it by ~6e-6 (0.7 %) on the development CPU. Its
# absolute tolerance, 1e-4, is a tenth of its size: another seed's or batch's policy moves it by
# about its whole size.
CANCELLING = {"rollout/policy_kl": 1e-4}


def test_a_seed_in_a_group_matches_the_seed_alone(group_runs):
    in_group = comparable(GroupDirectory(group_runs / "group").lane(4).read_metrics())
    alone = comparable(RunDirectory(group_runs / "alone").read_metrics())
    assert [r.keys() for r in in_group] == [r.keys() for r in alone]
    for g, a in zip(in_group, alone):
        for key, value in a.items():
            abs_tol = CANCELLING.get(key, 1e-6)
            assert math.isclose(g[key], value, rel_tol=RTOL, abs_tol=abs_tol), (a["env_steps"], key, g[key], value)
    # the first epoch is the random warm-up: no update yet, so it is identical
    assert in_group[0] == alone[0]


def test_a_graphed_group_equals_the_eager_group(group_runs, tmp_path):
    """sac.cuda_graph and model.cuda_graph in a group (the stacked update and the stacked fit
    replayed from graphs; on a CPU nothing is captured, docs/architecture.md#cuda-graphs): the
    eager group's steps, seed for seed, bit for bit."""
    cfg = make_config("InvertedPendulum-v5", {**GROUP_OVERRIDES, "sac.cuda_graph": True, "model.cuda_graph": True})
    train_group(cfg, [3, 4], str(tmp_path / "g"), progress=False)
    for seed in (3, 4):
        graphed = comparable(GroupDirectory(tmp_path / "g").lane(seed).read_metrics())
        eager = comparable(GroupDirectory(group_runs / "group").lane(seed).read_metrics())
        assert len(graphed) == 3 and graphed == eager


def test_group_resume_ends_where_the_uninterrupted_group_ends(group_runs, tmp_path):
    cfg = make_config("InvertedPendulum-v5", GROUP_OVERRIDES)
    part = train_group(cfg, [3, 4], str(tmp_path / "g"), progress=False, stop_at=333)
    assert not part.completed and part.env_steps == 333
    group = GroupDirectory(tmp_path / "g")
    configs = group.load_configs()
    resumed = train_group(configs[3], [3, 4], str(tmp_path / "g"), resume=True, progress=False, configs=configs)
    assert resumed.completed and resumed.env_steps == 600
    full = GroupDirectory(group_runs / "group")
    for seed in (3, 4):
        assert comparable(group.lane(seed).read_metrics()) == comparable(full.lane(seed).read_metrics())
        assert_states_equal(group.lane(seed).load_checkpoint()["algorithm"],
                            full.lane(seed).load_checkpoint()["algorithm"], ignore=WALL_CLOCK_KEYS)


def test_a_seed_of_a_stopped_group_resumes_alone(tmp_path):
    cfg = make_config("InvertedPendulum-v5", tiny_overrides())
    train_group(cfg, [3, 4], str(tmp_path / "g"), progress=False, stop_at=333)
    run = GroupDirectory(tmp_path / "g").lane(4)
    result = train(run.load_config(), str(run.path), resume=True, progress=False)
    assert result.completed and [r["env_steps"] for r in run.read_metrics()] == [200, 400, 600]
    # now the seeds are at different steps: the group refuses to resume, saying why
    assert main(["train", "--resume", str(tmp_path / "g")]) == 2
    with pytest.raises(RunDirError, match="different env steps"):
        configs = GroupDirectory(tmp_path / "g").load_configs()
        train_group(configs[3], [3, 4], str(tmp_path / "g"), resume=True, progress=False, configs=configs)


@pytest.mark.parametrize("argv, words", [
    (["--seeds", "0-1", "--seed", "2"], "give one of them"),
    (["--seeds", "0-1", "--set", "seed=2"], "give one of them"),
    (["--seeds", "0-1", "--algo", "pets"], "not algo 'pets'"),
    (["--seeds", "0-1", "--runtime", "ray"], "local runtime"),
    (["--seeds", "0-1", "--wandb-project", "p"], "--wandb-project needs --wandb"),
    (["--seeds", "1-0"], "expected seeds"),
])
def test_cli_refuses_bad_groups_before_writing(argv, words, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["train", "--env", "InvertedPendulum-v5", "--out", str(out), *argv]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


def test_cli_trains_a_group_and_resumes_it_with_more_steps(tmp_path, capsys):
    out = tmp_path / "g"
    sets = [f"--set={k}={v}" for k, v in tiny_overrides().items() if k not in ("seed", "total_steps")]
    sets = [s.replace(" ", "") for s in sets]  # [0, 2, 1, 3] -> [0,2,1,3]
    assert main(["train", "--env", "InvertedPendulum-v5", "--seeds", "3-4", "--steps", "400", "--out", str(out),
                 "--no-progress", *sets]) == 0
    group = GroupDirectory(out)
    assert group.seeds() == [3, 4] and group.lane(4).load_checkpoint()["env_steps"] == 400
    assert main(["train", "--resume", str(out), "--steps", "600", "--no-progress"]) == 0
    for seed in (3, 4):
        assert [r["env_steps"] for r in group.lane(seed).read_metrics()] == [200, 400, 600]
        assert group.lane(seed).load_config().total_steps == 600
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_cli_group_with_wandb_logs_one_run_per_seed(tmp_path, monkeypatch):
    from mbpo_ray.wandb_log import existing_run_id

    monkeypatch.setenv("WANDB_API_KEY", "fake-wandb-key-0123456789abcdef0123456789abcdef")
    out = tmp_path / "g"
    sets = [f"--set={k}={v}".replace(" ", "") for k, v in tiny_overrides().items() if k not in ("seed", "total_steps")]
    assert main(["train", "--env", "InvertedPendulum-v5", "--seeds", "3-4", "--steps", "400", "--out", str(out),
                 "--no-progress", "--wandb", "--wandb-mode", "offline", *sets]) == 0
    group = GroupDirectory(out)
    ids = []
    for seed in (3, 4):
        run_dir = group.lane(seed).path
        runs = sorted((run_dir / "wandb").glob("offline-run-*"))
        run_id = existing_run_id(run_dir)
        assert len(runs) == 1 and run_id is not None
        data = (runs[0] / f"run-{run_id}.wandb").read_bytes()
        # the seed's own name and records, read back: every epoch once, then the curve, finished
        assert f"mbpo-InvertedPendulum-v5-seed{seed}".encode() in data, seed
        assert_wandb_history_is_the_metrics(run_dir, run_id)
        ids.append(run_id)
    assert len(set(ids)) == 2
    files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    assert [str(p) for p in files if b"fake-wandb-key" in p.read_bytes()] == []


def test_group_wandb_runs_are_grouped_by_the_folder_unless_told(tmp_path):
    from mbpo_ray.cli import build_parser
    from mbpo_ray.wandb_log import group_hooks

    cfg = make_config("Hopper-v5", {"algo": "sac"})
    for flags, group in (([], "hopper8"), (["--wandb-group", "mine"], "mine")):
        args = build_parser().parse_args(["train", "--wandb", *flags])
        hooks = group_hooks(args, cfg, [0, 5], str(tmp_path / "hopper8"))
        assert sorted(hooks) == [0, 5]
        assert [(h[0].name, h[0].options.group) for h in hooks.values()] == [
            ("sac-Hopper-v5-seed0", group), ("sac-Hopper-v5-seed5", group)]
    assert group_hooks(build_parser().parse_args(["train"]), cfg, [0, 5], str(tmp_path / "x")) == {}


class Killed(Exception):
    """Stands for the process being killed at that point."""


@pytest.mark.parametrize("killed_in", ["stage", "commit"])
def test_a_group_killed_while_saving_resumes_with_every_seed_at_one_step(killed_in, tmp_path, monkeypatch):
    cfg = make_config("InvertedPendulum-v5", tiny_overrides())
    out = tmp_path / "g"
    train_group(cfg, [3, 4], str(out), progress=False, stop_at=200)
    group = GroupDirectory(out)
    assert {c["env_steps"] for c in group.load_checkpoints([3, 4]).values()} == {200}
    # the save at 400 dies at its second seed: while writing the new checkpoints ("stage"), or
    # while putting them in place ("commit", after the commit file)
    original, calls = getattr(RunDirectory, f"{killed_in}_checkpoint"), []

    def dies_the_second_time(self, *args):
        calls.append(self.path.name)
        if len(calls) == 2:
            raise Killed
        return original(self, *args)

    monkeypatch.setattr(RunDirectory, f"{killed_in}_checkpoint", dies_the_second_time)
    with pytest.raises(Killed):
        train_group(cfg, [3, 4], str(out), resume=True, progress=False, stop_at=400)
    monkeypatch.undo()
    on_disk = {p.name for p in out.rglob("*")}
    assert ("checkpoint.pt.next" in on_disk) and (("group.commit" in on_disk) == (killed_in == "commit"))
    # all old before the commit file, all new after it; nothing left over
    steps = {c["env_steps"] for c in group.load_checkpoints([3, 4]).values()}
    assert steps == {200 if killed_in == "stage" else 400}
    assert not [p for p in out.rglob("*") if p.name in ("checkpoint.pt.next", "group.commit")]
    assert train_group(cfg, [3, 4], str(out), resume=True, progress=False).completed
    for seed in (3, 4):
        assert [r["env_steps"] for r in group.lane(seed).read_metrics()] == [200, 400, 600]
