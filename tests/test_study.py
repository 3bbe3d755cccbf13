"""Study files of `mbpo-ray sweep` (docs/sweeps.md), without Ray: every shipped study validates
(dry run), malformed studies are refused with their key path and what is allowed and nothing
is written, the trials' configs follow the documented order of overrides, and each trial's
resources are what its config asks for."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import mbpo_ray.tune.sweep as sweep_module
from mbpo_ray.cli import main
from mbpo_ray.runtime.ray.cluster import required_resources
from mbpo_ray.tune.study import (DRIVER_CPUS, StudyError, cells, dump_study, load_study, parse_yaml,
                                 study_from_yaml, trial_bundles, trial_config, trial_table, validate_study)
from mbpo_ray.runtime.ray.capacity import Capacity, NodeType, monitor_config_path, node_types_of_config, total
from mbpo_ray.tune.sweep import StudyFolder, check_cluster, waiting_note

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "tune_configs").glob("*.yaml"))

# A valid study: the malformed ones below each change one thing of it.
BASE = """
name: base
algorithms: [mbpo, sac]
envs: [InvertedPendulum-v5]
seeds: [0, 1]
budget: {env_steps: 400}
overrides:
  all: {eval_episodes: 2}
wandb: {mode: disabled}
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def no_sweep(monkeypatch):
    """A study that passes validation by mistake must not start Ray or a sweep."""
    def refuse(*args, **kwargs):
        raise AssertionError("the study passed validation and the sweep would start")
    monkeypatch.setattr(sweep_module, "connect", refuse)


def test_shipped_studies_are_listed():
    assert {p.name for p in SHIPPED} >= {"smoke.yaml", "mujoco_paper.yaml", "ablations.yaml", "hparam_search.yaml",
                                         "mbpo_plus.yaml", "mbpo_plus_small.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_study_passes_validation_in_a_dry_run(path, tmp_path, capsys, no_sweep):
    out = tmp_path / "study"
    assert main(["sweep", str(path), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    study = load_study(path)
    n = len(cells(study)) * study.trials_per_cell()
    assert text.startswith(f"study {study.name}: {n} trial")
    assert "dry run: nothing started or written" in text
    assert not out.exists()


def test_shipped_studies_match_the_issue():
    smoke = load_study(REPO / "tune_configs/smoke.yaml")
    assert smoke.algorithms == ["mbpo", "sac", "pets", "steve", "rllib-sac"] and smoke.envs == ["InvertedPendulum-v5"]
    paper = load_study(REPO / "tune_configs/mujoco_paper.yaml")
    assert paper.algorithms == ["mbpo", "sac", "pets", "steve"] and len(paper.seeds) == 5
    assert paper.envs == ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5"]
    # the paper's budgets are the presets' (docs/hyperparameters.md)
    budgets = {p.cell.env: p.total_steps for p in validate_study(paper)}
    assert budgets == {"Hopper-v5": 125_000, "Walker2d-v5": 300_000, "HalfCheetah-v5": 400_000,
                       "Ant-v5": 300_000, "Humanoid-v5": 300_000}
    search = load_study(REPO / "tune_configs/hparam_search.yaml")
    assert search.scheduler == "asha" and search.envs == ["Hopper-v5"] and search.search
    packed = load_study(REPO / "tune_configs/packed_seeds.yaml")
    assert [(c.algo, c.env, c.seeds) for c in cells(packed)] == [
        (algo, env, list(range(8))) for env in ("Hopper-v5", "Walker2d-v5") for algo in ("mbpo", "sac")]


# --- malformed studies: (change to BASE, expected start of the error, more fragments) ----------

MALFORMED = [
    ("algoritms: [mbpo]", "algoritms: unknown key in the study; allowed: name, description, algorithms", []),
    ("algorithms: [mbpo, dreamer]", "algorithms[1]: 'dreamer' is not an algorithm; allowed: mbpo, sac, pets, steve, rllib-sac", []),
    ("algorithms: []", "algorithms: expected a non-empty list", []),
    ("envs: ['not an env!']", "envs[0]: env_id='not an env!' is not allowed", []),
    ("envs: [NoSuchEnv-v0]", "envs: NoSuchEnv-v0 (trial mbpo-NoSuchEnv-v0-seed0)", []),
    ("seeds: [0, -1]", "seeds[1]: -1 is not allowed: at least 0", []),
    ("seeds: [1, 1]", "seeds[1]: 1 is listed twice", []),
    ("seeds: 0", "seeds: 0 is not allowed: a count of seeds", []),
    ("search: {model.hidden_width: {grid: []}}", "search.model.hidden_width: grid needs a non-empty list", []),
    ("search: {model.hidden_width: [64, 128]}", "search.model.hidden_width: [64, 128] is not a search space; "
     "allowed: {grid: [v1, v2, ...]}, {choice: [v1, v2, ...]}, {uniform: [low, high]}", []),
    ("search: {sac.discount: {normal: [0.9, 0.01]}}", "search.sac.discount: {'normal': [0.9, 0.01]} is not a search space", []),
    ("search: {model.hidden_widht: {grid: [64]}}", "search.model.hidden_widht: unknown config field 'model.hidden_widht'; "
     "allowed fields:", ["model.hidden_width"]),
    ("search: {model: {hidden_width: {grid: [64, 0]}}}", "search.model.hidden_width: value 0: model.hidden_width=0 is not "
     "allowed: at least 1", []),
    ("search: {sac.discount: {uniform: [0.99, 0.9]}}", "search.sac.discount: uniform [0.99, 0.9]: low must be below high", []),
    ("search: {sac.learning_rate: {loguniform: [0, 0.1]}}", "search.sac.learning_rate: loguniform [0, 0.1]: low must be positive", []),
    ("search: {model.hidden_width: {uniform: [32, 64]}}", "search.model.hidden_width: uniform draws real numbers, which "
     "model.hidden_width does not take; use randint", []),
    ("search: {model.hidden_width: {randint: [1.5, 4]}}", "search.model.hidden_width: randint [1.5, 4]: low and high must be integers", []),
    ("search: {mbpo.real_ratio: {uniform: [0.5, 1.5]}}", "search.mbpo.real_ratio: value 1.5: mbpo.real_ratio=1.5 is not "
     "allowed: within [0, 1]", []),
    ("search: {model.num_elites: {grid: [3, 9]}}", "search.model.num_elites: value 9: model.num_elites=9 is not allowed: "
     "between 1 and model.num_members (7)", []),
    ("search: {seed: {grid: [1, 2]}}", "search.seed: seed is set by the study's seeds list", []),
    ("overrides: {all: {sac.discunt: 0.9}}", "overrides.all.sac.discunt: unknown config field 'sac.discunt'", []),
    ("overrides: {all: {sac.discount: 1.5}}", "overrides.all.sac.discount: sac.discount=1.5 is not allowed: within (0, 1]", []),
    ("overrides: {all: {model: {hidden_width: wide}}}", "overrides.all.model.hidden_width: model.hidden_width: expected an "
     "integer, got 'wide'", []),
    ("overrides: {all: {seed: 3}}", "overrides.all.seed: seed is set by the study's seeds list, not by an override", []),
    ("overrides: {all: {model.hidden_width: {grid: [1, 2]}}}", "overrides.all.model.hidden_width: a search space belongs "
     "under search:", []),
    ("overrides: {algorithms: {pets: {pets.horizon: 5}}}", "overrides.algorithms.pets: 'pets' is not an algorithm of this "
     "study; allowed: mbpo, sac", []),
    ("overrides: {algorithms: {sac: {runtime: ray, ray.learner_gpus: -1}}}", "overrides.algorithms.sac.ray.learner_gpus: "
     "ray.learner_gpus=-1.0 is not allowed: a non-negative number", []),
    ("overrides: {envs: {Hopper-v5: {total_steps: 10}}}", "overrides.envs.Hopper-v5: 'Hopper-v5' is not an env of this "
     "study; allowed: InvertedPendulum-v5", []),
    ("overrides: {everything: {seed: 1}}", "overrides.everything: unknown key in overrides; allowed: all, algorithms, envs", []),
    ("budget: {env_steps: 0}", "budget.env_steps: 0 is not allowed: at least 1", []),
    ("budget: {steps: 5}", "budget.steps: unknown key in budget; allowed: env_steps, time_s", []),
    ("budget: {time_s: -5}", "budget.time_s: -5 is not allowed: a positive number", []),
    ("scheduler: {type: pbt}", "scheduler.type: 'pbt' is not an allowed scheduler; allowed: none, asha", []),
    ("scheduler: {type: asha, grace_period: 5000}", "scheduler.grace_period: 5000 is not allowed: at most the longest "
     "trial's total_steps (400)", []),
    ("scheduler: {type: asha, reduction_factor: 1}", "scheduler.reduction_factor: 1.0 is not allowed: a number above 1", []),
    ("scheduler: {type: none, grace_period: 10}", "scheduler.grace_period: only with scheduler type asha", []),
    ("max_concurrent_trials: 0", "max_concurrent_trials: 0 is not allowed: at least 1", []),
    ("samples: 2.5", "samples: expected an integer, got 2.5", []),
    ("wandb: {api_key: abc}", "wandb.api_key: unknown key in the wandb section (the API key comes from WANDB_API_KEY only); "
     "allowed: project, entity, group, tags, mode", []),
    ("wandb: {mode: cloud}", "wandb.mode: 'cloud' is not an allowed mode; allowed: auto, offline, online, disabled", []),
    ("wandb: {tags: [a, 3]}", "wandb.tags: expected a list of strings", []),
    ("storage: hdfs://cluster/sweeps", "storage: 'hdfs://cluster/sweeps' is not allowed: a local or NFS path, or a URI "
     "starting with s3://, gs://, file://", []),
    ("gpus_per_trial: 1.5", "gpus_per_trial: 1.5 is not allowed: 0 (no GPU), a fraction up to 1", []),
    ("overrides: {all: {device: cuda}}", "gpus_per_trial: 0 is not allowed with device=cuda (trial mbpo-InvertedPendulum-v5-seed0)", []),
    ("overrides: {all: {device: 'cuda:1'}}", "overrides.all.device: device='cuda:1' is not allowed in a sweep: Ray assigns "
     "GPUs to trials; use auto, cpu or cuda", []),
    ("overrides: {algorithms: {sac: {runtime: ray}}}\ngpus_per_trial: 0.5", "gpus_per_trial: 0.5 is not allowed for "
     "runtime=ray trials", []),
    ("variants: {k 1: {mbpo.rollout_schedule: [0, 1, 1, 1]}}", "variants.k 1: a variant name uses letters, digits", []),
    ("variants: {x: {algo: dreamer}}", "variants.x.algo: 'dreamer' is not an algorithm; allowed: mbpo", []),
    ("variants: {steve_mixed: {algo: steve, mbpo.real_ratio: 0.5}}", "variants.steve_mixed.mbpo.real_ratio: "
     "mbpo.real_ratio=0.5 is not allowed: 1 with algo steve", []),
    ("name: a/b", "name: 'a/b' is not allowed: letters, digits", []),
    ("seeds_per_trial: 0", "seeds_per_trial: 0 is not allowed: at least 1", []),
    ("seeds_per_trial: 65", "seeds_per_trial: 65 is not allowed: 1 (one seed per trial) to 64", []),
    ("seeds_per_trial: 2\nsearch: {runtime: {choice: [local, ray]}}", "seeds_per_trial: 2 packs the seeds of trial "
     "mbpo-InvertedPendulum-v5-seeds0-1, but --seeds runs on the local runtime", []),
]


@pytest.mark.parametrize("change, error, fragments", MALFORMED, ids=[m[1].split(":")[0] + f"-{i}" for i, m in enumerate(MALFORMED)])
def test_malformed_study_is_refused_naming_the_key_and_writes_nothing(change, error, fragments, tmp_path, capsys, no_sweep):
    base = textwrap.dedent(BASE)
    key = change.split(":")[0]
    # the change replaces BASE's line of the same key, else it is added
    lines = [line for line in base.splitlines() if not line.startswith(key + ":")
             and not (key == "overrides" and line.startswith("  all: {eval"))]
    path = write(tmp_path, "\n".join(lines) + "\n" + change + "\n")
    out = tmp_path / "study"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbpo-ray: error: " + error), err
    for fragment in fragments:
        assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


@pytest.mark.parametrize("text, error", [
    ("- mbpo\n- sac\n", "expected a mapping of keys"),
    ("algorithms: [mbpo\n", "is not valid YAML"),
    ("algorithms: [mbpo]\nenvs: [Hopper-v5]\nseeds: [0]\nalgorithms: [sac]\n",
     "(line 4) is not valid YAML: the key 'algorithms' appears twice (lines 1 and 4)"),
    ("", "is empty"),
    ("algorithms: [mbpo]\nseeds: [0]\n", "envs: required"),
    ("envs: [Hopper-v5]\nseeds: [0]\n", "algorithms: required"),
])
def test_unreadable_study_files(text, error, tmp_path, capsys, no_sweep):
    path = write(tmp_path, text)
    assert main(["sweep", str(path), "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert error in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "study").exists()


def test_existing_study_folder_is_not_overwritten(tmp_path, capsys, no_sweep):
    out = tmp_path / "study"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["sweep", str(write(tmp_path, BASE)), "--out", str(out)]) == 2
    assert f"--out {out} already holds files; continue that study with --resume {out}" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_resume_needs_a_study_folder(tmp_path, capsys, no_sweep):
    assert main(["sweep", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no study.yaml there" in capsys.readouterr().err
    assert main(["sweep", str(write(tmp_path, BASE)), "--resume", str(tmp_path)]) == 2
    assert "leave out STUDY.yaml and --out" in capsys.readouterr().err


def test_validation_imports_no_torch_or_ray(tmp_path):
    path = write(tmp_path, BASE + "search: {model.hidden_width: {grid: [0]}}\n")
    code = (f"import sys\nfrom mbpo_ray.tune.study import load_study, StudyError\n"
            f"try:\n    load_study({str(path)!r})\nexcept StudyError as e:\n    print(e)\n"
            f"print(sorted(m for m in ('torch', 'ray', 'gymnasium', 'numpy', 'wandb') if m in sys.modules))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["search.model.hidden_width: value 0: model.hidden_width=0 is not allowed: at least 1",
                                       "[]"]


# --- trials: names, the order of overrides, resources -----------------------------------------------

LAYERED = """
name: layered
algorithms: [mbpo, sac]
envs: [InvertedPendulum-v5, Hopper-v5]
seeds: [4]
budget: {env_steps: 3000}
overrides:
  all: {eval_episodes: 7, sac.discount: 0.95, model: {hidden_width: 48}}
  envs:
    Hopper-v5: {sac.discount: 0.97, total_steps: 5000}
  algorithms:
    sac: {sac.discount: 0.98}
variants:
  base: {}
  wide: {model.hidden_width: 96, sac.discount: 0.9}
search:
  sac.tau: {grid: [0.01, 0.02]}
  sac.learning_rate: {loguniform: [1e-4, 1e-3]}
samples: 3
"""


def test_cells_and_the_order_of_overrides(tmp_path):
    study = load_study(write(tmp_path, LAYERED))
    names = [c.name for c in cells(study)]
    assert len(names) == 2 * 2 * 2 * 1 and len(set(names)) == len(names)
    assert "sac-wide-Hopper-v5-seed4" in names and "mbpo-base-InvertedPendulum-v5-seed4" in names
    assert study.trials_per_cell() == 2 * 3  # the grid's 2 values, 3 samples each
    by_name = {c.name: c for c in cells(study)}

    def resolved(name, **search):
        return trial_config(by_name[name].to_plain(), {"sac.tau": 0.01, **search})

    # budget < overrides.all < overrides.envs < overrides.algorithms < variant < search
    cfg = resolved("mbpo-base-InvertedPendulum-v5-seed4")
    assert (cfg.total_steps, cfg.eval_episodes, cfg.sac.discount, cfg.model.hidden_width) == (3000, 7, 0.95, 48)
    assert (cfg.seed, cfg.algo, cfg.env_id, cfg.torch_threads) == (4, "mbpo", "InvertedPendulum-v5", 1)
    cfg = resolved("mbpo-base-Hopper-v5-seed4")
    assert (cfg.total_steps, cfg.sac.discount) == (5000, 0.97)
    assert cfg.mbpo.updates_per_step == 20  # Hopper's preset
    cfg = resolved("sac-base-Hopper-v5-seed4")
    assert (cfg.sac.discount, cfg.mbpo.real_ratio, cfg.mbpo.updates_per_step) == (0.98, 1.0, 1)  # sac's preset
    cfg = resolved("sac-wide-Hopper-v5-seed4", **{"sac.learning_rate": 5e-4})
    assert (cfg.sac.discount, cfg.model.hidden_width, cfg.sac.tau, cfg.sac.learning_rate) == (0.9, 96, 0.01, 5e-4)
    assert cfg.label == "wide"  # the variant's name: the report's group is sac-wide


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    study = load_study(write(tmp_path, BASE + "search: {sac.learning_rate: {loguniform: [1e-4, 3e-3]}}\n"))
    assert study.search["sac.learning_rate"].values == (1e-4, 3e-3)


def test_the_study_copy_reads_back_to_the_same_trials(tmp_path):
    study = load_study(write(tmp_path, LAYERED))
    copy = study_from_yaml(parse_yaml(dump_study(study), "copy"), "copy", "x")
    assert dump_study(copy) == dump_study(study)
    assert trial_table(copy, validate_study(copy), "F") == trial_table(study, validate_study(study), "F")


def test_trial_table_counts_trials_and_resources(tmp_path):
    study = load_study(write(tmp_path, LAYERED + "max_concurrent_trials: 3\n"))
    table = trial_table(study, validate_study(study), "runs/x")
    assert table.startswith("study layered: 48 trials (8 cells x 6 per cell), folder runs/x\n")
    assert "search: sac.tau grid [0.01, 0.02]; sac.learning_rate loguniform [0.0001, 0.001]; samples 3" in table
    assert "sac-wide-Hopper-v5-seed4-*" in table
    assert "per trial at most 1 CPU, 0 GPU; all trials at once 48 CPU, 0 GPU" in table
    assert "max concurrent trials: 3" in table


PACKED = """
name: packed
algorithms: [mbpo, sac, pets]
envs: [InvertedPendulum-v5]
seeds: [0, 1, 2, 5, 6]
seeds_per_trial: 2
budget: {env_steps: 400}
overrides:
  algorithms:
    sac: {runtime: ray}
wandb: {mode: disabled}
"""


def test_seeds_per_trial_packs_the_seeds_of_trials_that_can_be_groups(tmp_path):
    study = load_study(write(tmp_path, PACKED))
    by_name = {c.name: c for c in cells(study)}
    # mbpo: runs of two seeds in the study's order; sac (on the Ray runtime) and pets cannot be
    # seed groups (docs/seed_groups.md): one seed per trial
    mbpo = [n for n in by_name if n.startswith("mbpo")]
    assert mbpo == ["mbpo-InvertedPendulum-v5-seeds0-1", "mbpo-InvertedPendulum-v5-seeds2_5",
                    "mbpo-InvertedPendulum-v5-seed6"]
    assert [by_name[n].seeds for n in mbpo] == [[0, 1], [2, 5], [6]]
    assert sorted(n for n in by_name if not n.startswith("mbpo")) == sorted(
        f"{algo}-InvertedPendulum-v5-seed{s}" for algo in ("sac", "pets") for s in (0, 1, 2, 5, 6))
    # a packed trial's config is its first seed's (train_group sets each seed's own)
    assert trial_config(by_name["mbpo-InvertedPendulum-v5-seeds2_5"].to_plain()).seed == 2
    table = trial_table(study, validate_study(study), "F")
    assert "seeds per trial: up to 2 for mbpo and sac on the local runtime" in table
    assert "mbpo-InvertedPendulum-v5-seeds2_5  mbpo  InvertedPendulum-v5  2,5" in table
    assert table.startswith("study packed: 13 trials (13 cells x 1 per cell)")
    copy = study_from_yaml(parse_yaml(dump_study(study), "copy"), "copy", "x")
    assert [c.name for c in cells(copy)] == list(by_name)


def test_local_trial_asks_for_its_threads_and_gpus(tiny_config):
    assert trial_bundles(tiny_config(torch_threads=3), 0.0) == [{"CPU": 3.0}]
    assert trial_bundles(tiny_config(torch_threads=None), 0.25) == [{"CPU": 1.0, "GPU": 0.25}]


def test_ray_trial_reserves_its_whole_actor_group(tiny_config):
    cfg = tiny_config(runtime="ray", device="auto", **{"ray.num_collectors": 2, "ray.num_rollout_workers": 3,
                                         "ray.learner_gpus": 1.0, "ray.worker_node_resource": "worker"})
    bundles = trial_bundles(cfg, 0.0)
    # the trial process, then learner, model trainer, 2 collectors, 3 rollout workers (the
    # buffer actor asks for nothing by default and has no bundle)
    assert bundles[0] == {"CPU": DRIVER_CPUS}
    assert len(bundles) == 1 + 1 + 1 + 2 + 3
    assert bundles[1] == {"CPU": 1.0, "GPU": 1.0}
    assert bundles[-1] == {"CPU": 1.0, "worker": 0.01}
    need = total(bundles[1:])
    assert need == pytest.approx(required_resources(cfg))
    cfg.ray.buffer_cpus = 0.5
    assert len(trial_bundles(cfg, 0.0)) == 9


def test_a_trial_the_cluster_can_never_hold_is_refused(tmp_path):
    study = load_study(write(tmp_path, BASE + "gpus_per_trial: 1\n"))
    plans = validate_study(study)
    with pytest.raises(StudyError, match=r"^gpus_per_trial: trial mbpo-InvertedPendulum-v5-seed0 needs 1 CPU, 1 GPU "
                                         r".* but the Ray cluster has 0 GPU: it could never start"):
        check_cluster(plans, Capacity([{"CPU": 8.0}]))
    assert check_cluster(plans, Capacity([{"CPU": 2.0, "GPU": 1.0}])) == []  # fits now

    ray_base = BASE.replace("all: {eval_episodes: 2}", "all: {eval_episodes: 2, runtime: ray, ray.learner_cpus: 4}")
    ray_study = load_study(write(tmp_path, ray_base, "r.yaml"))
    plans = validate_study(ray_study)
    # 8 CPUs in all, but no node holds the learner's 4
    with pytest.raises(StudyError, match=r"^overrides.all.ray.learner_cpus: trial .* has a bundle of 4 CPU that no node"):
        check_cluster(plans, Capacity([{"CPU": 3.0}, {"CPU": 3.0}, {"CPU": 3.0}]))
    with pytest.raises(StudyError, match=r"needs 9 CPU .* but the Ray cluster has 8 CPU"):
        check_cluster(plans, Capacity([{"CPU": 8.0}]))


# The shipped cluster files' shape: a head with CPU 0, GPU and CPU worker types from 0 nodes.
HEAD_ONLY = [{"CPU": 0.0, "memory": 1e9}]
NODE_TYPES = [NodeType("head", {"CPU": 0.0}, 1), NodeType("gpu", {"CPU": 8.0, "GPU": 1.0, "mbpo_learner": 100.0}, 4),
              NodeType("cpu", {"CPU": 16.0, "mbpo_worker": 100.0}, 16)]


def test_an_autoscaling_cluster_with_only_its_head_takes_trials_its_node_types_can_hold(tmp_path):
    study = load_study(write(tmp_path, BASE + "gpus_per_trial: 1\n"))
    plans = validate_study(study)
    # the check of the live nodes alone refused this at once ("needs 1 CPU, 1 GPU ... has 0")
    capacity = Capacity(HEAD_ONLY, autoscaling=True, node_types=NODE_TYPES, source="from test")
    assert check_cluster(plans, capacity) == plans  # they wait for the autoscaler
    note = waiting_note(plans, capacity)
    assert "pending on the autoscaler" in note and "gpu (up to 4)" in note
    # a node types' maximum that can never hold the trial is still refused, naming the node types
    small = Capacity(HEAD_ONLY, autoscaling=True, node_types=NODE_TYPES[:1] + NODE_TYPES[2:], source="x")
    with pytest.raises(StudyError, match=r"needs 1 CPU, 1 GPU .* but the Ray cluster has at most 0 GPU "
                                         r"\(an autoscaler with the node types head .*cpu \(up to 16\)"):
        check_cluster(plans, small)
    # a bundle bigger than any node type: refused
    ray_base = BASE.replace("all: {eval_episodes: 2}", "all: {eval_episodes: 2, runtime: ray, ray.learner_cpus: 32}")
    plans = validate_study(load_study(write(tmp_path, ray_base, "r.yaml")))
    with pytest.raises(StudyError, match=r"has a bundle of 32 CPU that no node of the Ray cluster can hold "
                                         r"\(nodes and node types: .*cpu: 16 CPU"):
        check_cluster(plans, capacity)
    # an autoscaler whose node types are not known here: nothing refused, the trials wait
    assert check_cluster(plans, Capacity(HEAD_ONLY, autoscaling=True)) == plans


def test_node_types_of_a_cluster_file_and_of_the_autoscalers_monitor(tmp_path):
    config = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    types = {t.name: t for t in node_types_of_config(config)}
    assert types["head"].max_count == 1 and types["head"].resources == {"CPU": 0.0}
    assert types["gpu"].max_count == 4 and types["gpu"].resources["GPU"] == 1.0
    assert types["cpu"].max_count == 16 and types["cpu"].amount("mbpo_worker") == 100.0
    # a process whose arguments name an autoscaling config, as Ray's monitor on the head
    proc = tmp_path / "proc"
    (proc / "17").mkdir(parents=True)
    (proc / "self").mkdir()
    config_file = tmp_path / "bootstrap.yaml"
    config_file.write_text("head_node_type: head\n")
    (proc / "17" / "cmdline").write_bytes(b"python\0-u\0monitor.py\0--autoscaling-config=" + str(config_file).encode()
                                          + b"\0--logs-dir=/x\0")
    assert monitor_config_path(str(proc)) == config_file
    assert monitor_config_path(str(tmp_path / "nothing")) is None


def test_study_folder_locations():
    assert StudyFolder("s3://bucket/sweeps/x").is_uri and StudyFolder("s3://bucket/x").runs_dir is None
    local = StudyFolder("runs/sweeps/x")
    # absolute: a trial runs in a working directory of Tune's, where a relative --out would put its
    # run directory somewhere under Ray's session folder instead of the study folder
    assert not local.is_uri and local.runs_dir == str(Path.cwd() / "runs/sweeps/x/runs")
    assert local.storage_path == str(Path.cwd() / "runs/sweeps/x")
    assert StudyFolder("file:///tmp/a").path == Path("/tmp/a")


@pytest.mark.parametrize("env, part", [
    ("Hopper-v5", "Hopper-v5"),
    ("dm_control/cartpole-swingup-v0", "dm_control_cartpole-swingup-v0-"),
    ("mypkg.envs:Arm", "mypkg.envs_Arm-"),
    ("pkg:ns/Env-v0", "pkg_ns_Env-v0-")])
def test_trial_names_are_folder_names_for_any_env_id(env, part):
    from mbpo_ray.tune.study import cell_name, name_part

    name = cell_name("mbpo", env, [0], None)
    assert name.startswith(f"mbpo-{part}") and name.endswith("-seed0")
    assert all(c.isalnum() or c in "._-" for c in name)
    # two ids that differ only in a character the name cannot hold get different names
    assert name_part("a/b-v0") != name_part("a:b-v0")


def test_ashas_grace_period_defaults_to_the_warm_up_plus_one_epoch(tmp_path):
    from mbpo_ray.tune.sweep import default_grace_period

    text = BASE.replace("env_steps: 400", "env_steps: 20000") + "scheduler: asha\n"
    plans = validate_study(load_study(write(tmp_path, text)))
    cfg = plans[0].cfg
    # InvertedPendulum's preset: a random warm-up before the first policy; before, the default
    # was one epoch, which ranked trials on the returns of random actions
    assert default_grace_period(plans) == cfg.mbpo.init_random_steps + cfg.mbpo.epoch_length
    assert default_grace_period(plans) > cfg.mbpo.epoch_length
