"""Typed config: paper presets, validation errors, overrides, round trips, and the CLI's
refusals (every one of them raised before anything is written or any training starts)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mbpo_ray.train
from mbpo_ray.cli import main
from mbpo_ray.config import (
    GENERIC_PRESET,
    SUPPORTED_ENVS,
    ConfigError,
    TrainConfig,
    UnknownEnvError,
    field_names,
    from_dict,
    make_config,
    parse_override,
    to_dict,
    validate,
)
from mbpo_ray.run_dir import RunDirError, RunDirectory

ENV_IDS = list(SUPPORTED_ENVS)

# docs/hyperparameters.md: epoch length, k schedule, G, retrain period, retain epochs,
# target entropy, model width, budget, initial random steps.
PAPER = {
    "Hopper-v5": (1000, (20, 150, 1, 15), 20, 250, 1, -1.0, 200, 125_000, 5000),
    "Walker2d-v5": (1000, (20, 150, 1, 1), 20, 250, 1, -3.0, 200, 300_000, 5000),
    "HalfCheetah-v5": (1000, (20, 150, 1, 1), 40, 250, 1, -3.0, 200, 400_000, 5000),
    "Ant-v5": (1000, (20, 100, 1, 25), 20, 250, 1, -4.0, 200, 300_000, 5000),
    "Humanoid-v5": (1000, (20, 300, 1, 25), 20, 1000, 5, -2.0, 400, 300_000, 5000),
    "InvertedPendulum-v5": (250, (1, 15, 1, 1), 10, 250, 1, -0.05, 200, 20_000, 500),
    "InvertedDoublePendulum-v5": (250, (1, 15, 1, 1), 20, 250, 1, -0.5, 200, 20_000, 500),
}


# --- presets ----------------------------------------------------------------------------------

def test_every_supported_env_has_a_paper_row():
    assert set(PAPER) == set(SUPPORTED_ENVS)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_config_applies_paper_preset(env_id):
    epoch, schedule, g, period, retain, entropy, width, budget, init_random = PAPER[env_id]
    cfg = make_config(env_id)
    assert cfg.env_id == env_id
    assert cfg.mbpo.epoch_length == epoch
    assert tuple(cfg.mbpo.rollout_schedule) == schedule
    assert cfg.mbpo.updates_per_step == g
    assert cfg.mbpo.model_train_freq == period
    assert cfg.mbpo.model_retain_epochs == retain
    assert cfg.sac.target_entropy == pytest.approx(entropy)
    assert cfg.model.hidden_width == width
    assert cfg.total_steps == budget
    assert cfg.mbpo.init_random_steps == init_random


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_make_config_shared_paper_values(env_id):
    cfg = make_config(env_id)
    assert cfg.mbpo.rollout_batch_size == 100_000
    assert (cfg.model.num_members, cfg.model.num_elites) == (7, 5)
    assert cfg.model.num_hidden_layers == 4
    assert tuple(cfg.model.weight_decays) == pytest.approx((2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4))
    assert cfg.model.learning_rate == pytest.approx(1e-3)
    assert cfg.model.batch_size == 256
    assert cfg.model.init_max_logvar == pytest.approx(0.5)
    assert cfg.model.init_min_logvar == pytest.approx(-10.0)
    assert cfg.mbpo.real_ratio == pytest.approx(0.05)
    assert cfg.sac.discount == pytest.approx(0.99)
    assert cfg.sac.tau == pytest.approx(0.005)
    assert (cfg.sac.hidden_width, cfg.sac.num_hidden_layers) == (256, 2)
    assert cfg.sac.learning_rate == pytest.approx(3e-4)
    assert cfg.sac.batch_size == 256
    assert cfg.sac.replay_size == 1_000_000
    assert cfg.sac.init_log_alpha == 0.0


def test_overrides_apply_on_top_of_preset_and_configs_are_independent():
    cfg = make_config("Humanoid-v5", {"mbpo.updates_per_step": 5, "seed": 3})
    assert cfg.mbpo.updates_per_step == 5 and cfg.seed == 3
    assert cfg.mbpo.model_train_freq == 1000 and cfg.model.hidden_width == 400  # preset kept
    other = make_config("Humanoid-v5")
    assert other.mbpo.updates_per_step == 20 and other.seed == 0
    cfg.model.num_elites = 1
    assert make_config("Humanoid-v5").model.num_elites == 5


# --- validation -------------------------------------------------------------------------------

BAD = [
    # (overrides, field named in the message, text saying what is allowed)
    ({"total_steps": 0}, "total_steps", "positive"),
    ({"total_steps": -5}, "total_steps", "positive"),
    ({"mbpo.real_ratio": 1.5}, "mbpo.real_ratio", "[0, 1]"),
    ({"mbpo.real_ratio": -0.1}, "mbpo.real_ratio", "[0, 1]"),
    ({"model.num_elites": 9}, "model.num_elites", "model.num_members"),
    ({"model.num_elites": 0}, "model.num_elites", "between 1 and"),
    ({"model.weight_decays": [1e-5, 1e-5, 1e-5]}, "model.weight_decays", "5 values"),
    ({"model.num_hidden_layers": 3}, "model.weight_decays", "4 values"),
    ({"mbpo.rollout_schedule": [150, 20, 1, 15]}, "mbpo.rollout_schedule", "start_epoch < end_epoch"),
    ({"mbpo.rollout_schedule": [20, 20, 1, 15]}, "mbpo.rollout_schedule", "start_epoch < end_epoch"),
    ({"mbpo.rollout_schedule": [20, 150, 5, 2]}, "mbpo.rollout_schedule", "min_k <= max_k"),
    ({"mbpo.rollout_schedule": [20, 150, 0, 2]}, "mbpo.rollout_schedule", "1 <= min_k"),
    ({"mbpo.rollout_schedule": [20, 150, 1]}, "mbpo.rollout_schedule", "4 values"),
    ({"mbpo.rollout_schedule": [20, 150, 1, 15, 3]}, "mbpo.rollout_schedule", "4 values"),
    ({"mbpo.rollout_schedule": 15}, "mbpo.rollout_schedule", "list"),
    ({"mbpo.rollout_schedule": [20, 150, 1.5, 15]}, "mbpo.rollout_schedule", "integer"),
    ({"device": "gpu"}, "device", "cuda:N"),
    ({"device": "cuda:x"}, "device", "cuda:N"),
    ({"device": "cuda:"}, "device", "cuda:N"),
    ({"total_steps": 1.5}, "total_steps", "integer"),
    ({"total_steps": "many"}, "total_steps", "integer"),
    ({"mbpo.updates_per_step": True}, "mbpo.updates_per_step", "integer"),
    ({"seed": -1}, "seed", "non-negative"),
    ({"seed": 2**32}, "seed", "below 2**32"),
    ({"seed": 1180591620717411303424}, "seed", "below 2**32"),
    ({"runtime": "ray", "device": "cuda:1"}, "device", "use device=auto or cuda"),
    ({"runtime": "ray", "device": "mps"}, "device", "use device=auto or cuda"),
    ({"runtime": "ray", "device": "cpu", "ray.learner_gpus": 1}, "ray.learner_gpus", "device=cpu"),
    ({"runtime": "ray", "device": "cpu", "ray.rollout_worker_gpus": 0.5}, "ray.rollout_worker_gpus",
     "device=cpu"),
    ({"runtime": "ray", "device": "cuda"}, "device='cuda'", "ray.learner_gpus"),
    ({"algo": "rllib-sac", "device": "mps"}, "device", "rllib-sac"),
    ({"sac.compile": "yes"}, "sac.compile", "true or false"),
    ({"sac.compile": 1}, "sac.compile", "true or false"),
    ({"sac.discount": 0}, "sac.discount", "(0, 1]"),
    ({"sac.discount": 1.01}, "sac.discount", "(0, 1]"),
    ({"sac.discount": "high"}, "sac.discount", "number"),
    ({"sac.tau": 0}, "sac.tau", "(0, 1]"),
    ({"model.max_fit_epochs": 0}, "model.max_fit_epochs", "null"),
    ({"algo": "steve", "sac.cuda_graph": True}, "sac.cuda_graph", "mbpo and sac"),
    ({"model.cuda_graph": "on"}, "model.cuda_graph", "true or false"),
    ({"model.stacked_fit": "yes"}, "model.stacked_fit", "auto, always or never"),
    ({"model.stacked_fit": True}, "model.stacked_fit", "quote the word"),
    ({"env_id": 3}, "env_id", "string"),
    ({"label": "k 1"}, "label", "letters, digits"),
    ({"label": ""}, "label", "letters, digits"),
    # MBPO's first fit would run on an empty D_env (it crashed in torch's sampler before)
    ({"mbpo.init_random_steps": 0}, "mbpo.init_random_steps", "at least 1 for algo mbpo"),
]


@pytest.mark.parametrize("overrides, field, allowed", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_value_raises_config_error_naming_field_and_allowed(overrides, field, allowed):
    with pytest.raises(ConfigError) as info:
        make_config("Hopper-v5", overrides)
    message = str(info.value)
    assert field in message
    assert allowed in message


@pytest.mark.parametrize("name", ["mbpo.no_such_field", "no_such_field", "sac.discont", "model.x.y"])
def test_unknown_field_lists_allowed_fields(name):
    with pytest.raises(ConfigError) as info:
        make_config("Hopper-v5", {name: 1})
    message = str(info.value)
    assert name in message
    for allowed in field_names(TrainConfig()):
        assert allowed in message


def test_section_name_alone_is_rejected():
    with pytest.raises(ConfigError, match="sac"):
        make_config("Hopper-v5", {"sac": 1})


def test_edge_values_are_accepted():
    cfg = make_config("Hopper-v5", {"sac.discount": 1.0, "mbpo.real_ratio": 0.0, "device": "cuda:1",
                                    "model.num_elites": 7, "mbpo.rollout_schedule": [0, 1, 2, 2]})
    assert cfg.sac.discount == 1.0 and cfg.mbpo.real_ratio == 0.0 and cfg.device == "cuda:1"
    assert cfg.mbpo.rollout_schedule == (0, 1, 2, 2)
    assert make_config("Hopper-v5", {"mbpo.real_ratio": 1}).mbpo.real_ratio == 1.0
    assert make_config("Hopper-v5", {"seed": 2**32 - 1}).seed == 2**32 - 1
    # no warm-up is fine where nothing is fitted before data arrives
    for overrides in ({"algo": "sac"}, {"algo": "pets"}, {"algo": "steve"}, {"mbpo.real_ratio": 1}):
        assert make_config("Hopper-v5", {"mbpo.init_random_steps": 0, **overrides}).mbpo.init_random_steps == 0


@pytest.mark.parametrize("overrides", [
    {"device": "auto"},
    {"device": "auto", "ray.learner_gpus": 1, "ray.model_trainer_gpus": 0.5},
    {"device": "cuda", "ray.learner_gpus": 1},
    {"device": "cpu"},
])
def test_ray_device_settings_that_can_hold_are_accepted(overrides):
    cfg = make_config("Hopper-v5", {"runtime": "ray", **overrides})
    assert cfg.device == overrides["device"]


def test_local_runtime_ignores_the_ray_gpu_fields():
    assert make_config("Hopper-v5", {"device": "cpu", "ray.learner_gpus": 1}).ray.learner_gpus == 1


# The config checks the form of an env id only (it imports no gymnasium); whether a well-formed
# id exists is checked when the env is made (tests/test_any_env.py).
MALFORMED_IDS = ["", "Nope v0", "pkg.mod:", ":Env", "a/b/c", "pkg.mod:Env:x"]


@pytest.mark.parametrize("make", [
    *[lambda bad=bad: make_config(bad) for bad in MALFORMED_IDS],
    lambda: make_config("Hopper-v5", {"env_id": "not an id"}),
    lambda: from_dict({"env_id": "not an id"}),
])
def test_malformed_env_id_is_rejected_naming_what_is_allowed(make):
    with pytest.raises(UnknownEnvError) as info:
        make()
    message = str(info.value)
    assert "env_id" in message and "gymnasium id" in message and "package.module:ClassOrFactory" in message
    for env_id in SUPPORTED_ENVS:
        assert env_id in message


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Hopper-v4", "dm_control/cartpole-swingup-v0",
                                    "mypkg.envs:PointEnv", "mymodule:MyEnv-v0", "Foo"])
def test_well_formed_env_id_gets_the_generic_preset(env_id):
    cfg = make_config(env_id)
    assert cfg.env_id == env_id
    for name, value in GENERIC_PRESET.items():
        assert to_dict(cfg)[name] == (list(value) if isinstance(value, tuple) else value), name
    assert cfg.mbpo.init_random_steps is None and cfg.mbpo.termination == "learned"


def test_an_env_id_among_the_overrides_picks_the_preset():
    cfg = make_config("Hopper-v5", {"env_id": "Pendulum-v1"})
    assert cfg.env_id == "Pendulum-v1" and cfg.mbpo.termination == "learned"
    assert make_config("Pendulum-v1", {"env_id": "Hopper-v5"}).total_steps == 125_000


def test_run_dir_config_with_malformed_env_is_a_run_dir_error(tmp_path):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    flat = yaml.safe_load(run.config_path.read_text())
    flat["env_id"] = "not an id"
    run.config_path.write_text(yaml.safe_dump(flat, sort_keys=False))
    with pytest.raises(RunDirError, match="config.yaml"):
        run.load_config()


# --- overrides --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("total_steps=1000", ("total_steps", 1000)),
    ("sac.discount=0.98", ("sac.discount", 0.98)),
    ("mbpo.real_ratio=.5", ("mbpo.real_ratio", 0.5)),
    ("sac.target_entropy=-3", ("sac.target_entropy", -3)),
    ("mbpo.rollout_schedule=[1,15,1,1]", ("mbpo.rollout_schedule", [1, 15, 1, 1])),
    ("model.weight_decays=[1.0e-5, 2.5e-5]", ("model.weight_decays", [1e-5, 2.5e-5])),
    ("model.max_fit_epochs=null", ("model.max_fit_epochs", None)),
    ("sac.compile=true", ("sac.compile", True)),
    ("sac.compile=false", ("sac.compile", False)),
    ("env_id=Hopper-v5", ("env_id", "Hopper-v5")),
    ("device=cuda:0", ("device", "cuda:0")),
    ("device=cpu", ("device", "cpu")),
    (" sac.tau = 0.01 ", ("sac.tau", 0.01)),
    ("name=a=b", ("name", "a=b")),
])
def test_parse_override(text, expected):
    key, value = parse_override(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text, key, value", [
    ("sac.learning_rate=3e-4", "sac.learning_rate", 3e-4),
    ("total_steps=1e5", "total_steps", 100_000),
    ("model.weight_decays=[1e-5,2e-5,3e-5,4e-5,5e-5]", "model.weight_decays",
     [1e-5, 2e-5, 3e-5, 4e-5, 5e-5]),
])
def test_parse_override_exponent_numbers(text, key, value):
    assert parse_override(text) == (key, value)
    flat = to_dict(make_config("Hopper-v5", dict([parse_override(text)])))
    assert flat[key] == value


@pytest.mark.parametrize("text", ["total_steps", "mbpo.real_ratio 0.5", ""])
def test_parse_override_without_equals_is_config_error(text):
    with pytest.raises(ConfigError, match="field=value"):
        parse_override(text)


def test_parsed_overrides_reach_the_config():
    overrides = dict(parse_override(t) for t in (
        "mbpo.rollout_schedule=[1,15,1,1]", "model.max_fit_epochs=null", "sac.compile=true",
        "total_steps=777", "mbpo.real_ratio=0.25"))
    cfg = make_config("Hopper-v5", overrides)
    assert cfg.mbpo.rollout_schedule == (1, 15, 1, 1)
    assert cfg.model.max_fit_epochs is None
    assert cfg.sac.compile is True
    assert cfg.total_steps == 777 and isinstance(cfg.total_steps, int)
    assert cfg.mbpo.real_ratio == 0.25


# --- round trip -------------------------------------------------------------------------------

@pytest.mark.parametrize("env_id", ENV_IDS)
def test_to_dict_from_dict_round_trip(env_id):
    cfg = make_config(env_id, {"seed": 4, "model.max_fit_epochs": 30, "sac.compile": True,
                               "device": "cpu"})
    flat = to_dict(cfg)
    assert set(flat) == set(field_names(cfg))
    back = from_dict(flat)
    assert back == cfg
    # and through YAML, as stored in a run directory
    assert from_dict(yaml.safe_load(yaml.safe_dump(flat))) == cfg
    back.mbpo.updates_per_step += 1
    assert back != cfg  # equality compares values: the check above could fail


def test_run_directory_config_round_trip(tmp_path):
    cfg = make_config("Ant-v5", {"seed": 2})
    run = RunDirectory(tmp_path / "run")
    run.create(cfg)
    assert run.load_config() == cfg


def test_validate_accepts_every_preset():
    for env_id in ENV_IDS:
        cfg = make_config(env_id)
        validate(cfg)  # raises ConfigError on any impossible preset value
        assert cfg.env_id == env_id and cfg.model.num_elites <= cfg.model.num_members


# --- CLI --------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Every CLI error here must come before training; training would fail the test."""
    def fail(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(mbpo_ray.train, "train", fail)


def _snapshot(path: Path):
    return {p.relative_to(path).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("args, field", [
    (["--env", "Nope v0"], "Nope v0"),
    (["--env", "Pendulum-v1", "--set", "mbpo.termination=known"], "mbpo.termination"),
    (["--env", "Pendulum-v1", "--set", "mbpo.termination=not a function"], "mbpo.termination"),
    (["--env", "Pendulum-v1", "--env-kwargs", "{bad json"], "--env-kwargs"),
    (["--env", "Pendulum-v1", "--env-kwargs", "[1, 2]"], "--env-kwargs"),
    (["--env", "Pendulum-v1", "--env-kwargs", "g"], "--env-kwargs"),
    (["--env", "Pendulum-v1", "--env-kwargs", "2g=1"], "env_kwargs"),
    (["--env", "Pendulum-v1", "--set", "env_kwargs=3"], "env_kwargs"),
    (["--env", "Pendulum-v1", "--config", "/no/such/file.yaml"], "/no/such/file.yaml"),
    (["--env", "Hopper-v5", "--set", "mbpo.real_ratio=2"], "mbpo.real_ratio"),
    (["--env", "Hopper-v5", "--set", "mbpo.no_such_field=1"], "mbpo.no_such_field"),
    (["--env", "Hopper-v5", "--steps", "-5"], "total_steps"),
    (["--env", "Hopper-v5", "--set", "model.num_elites=9"], "model.num_elites"),
    (["--env", "Hopper-v5", "--device", "tpu"], "device"),
    (["--env", "Hopper-v5", "--set", "mbpo.rollout_schedule=[1,15,1]"], "mbpo.rollout_schedule"),
    (["--env", "Hopper-v5", "--set", "sac.discount"], "sac.discount"),
])
def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path, capsys, args, field):
    out = tmp_path / "run"
    code = main(["train", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mbpo-ray: error: ")
    assert field in err
    assert "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_malformed_env_lists_supported_envs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--env", "Nope v0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for env_id in SUPPORTED_ENVS:
        assert env_id in err
    assert not out.exists()


def test_cli_missing_env_or_out(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    assert "--env" in capsys.readouterr().err
    assert main(["train", "--env", "Hopper-v5"]) == 2
    assert "--out" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_out_dir_with_a_file_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"my precious notes\n")
    before = _snapshot(out)
    assert main(["train", "--env", "InvertedPendulum-v5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds files" in err and str(out) in err
    assert _snapshot(out) == before


def test_cli_out_is_a_file_is_refused_and_untouched(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_bytes(b"not a directory")
    assert main(["train", "--env", "InvertedPendulum-v5", "--out", str(out)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert out.read_bytes() == b"not a directory"


def test_cli_resume_missing_directory(tmp_path, capsys):
    target = tmp_path / "nothing"
    assert main(["train", "--resume", str(target)]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert not target.exists()


def test_cli_resume_directory_without_config(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "other.txt").write_text("x")
    before = _snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    assert "config.yaml" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_cli_resume_without_checkpoint_changes_nothing(tmp_path, capsys):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    before = _snapshot(run.path)
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and str(run.path) in err
    assert "Traceback" not in err
    assert _snapshot(run.path) == before
    assert not run.checkpoint_path.exists()


def test_cli_resume_refuses_env_out_and_unsafe_overrides(tmp_path, capsys):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    before = _snapshot(run.path)
    assert main(["train", "--resume", str(run.path), "--env", "Hopper-v5"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(run.path), "--set", "mbpo.updates_per_step=3"]) == 2
    assert "mbpo.updates_per_step" in capsys.readouterr().err
    assert main(["train", "--resume", str(run.path), "--steps", "-1"]) == 2
    assert "total_steps" in capsys.readouterr().err
    assert _snapshot(run.path) == before


GARBAGE = {
    "random": bytes(range(7, 256, 3)) * 5,
    "text": b"this is not a checkpoint\n",
    "empty": b"",
    "truncated_zip": b"PK\x03\x04" + b"\x00" * 40,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_cli_resume_corrupted_checkpoint_exits_2_and_changes_nothing(tmp_path, capsys, kind):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    run.checkpoint_path.write_bytes(GARBAGE[kind])
    before = _snapshot(run.path)
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbpo-ray: error: ")
    assert str(run.checkpoint_path) in err
    assert _snapshot(run.path) == before


@pytest.mark.parametrize("garbage", [
    b"\x8e" + b"\xff" * 8 + b"garbage",        # BINBYTES8 with an impossible length
    b"]\x98\x82\x03\xe4\x8e\x003\"U\xd6\xe5",  # list then bytes opcodes
    b"cno_such_module_xyz\nthing\n.",          # global of a module that does not exist
], ids=["overflow", "type", "module"])
def test_cli_resume_other_garbage_checkpoints_exit_2(tmp_path, capsys, garbage):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    run.checkpoint_path.write_bytes(garbage)
    before = _snapshot(run.path)
    assert main(["train", "--resume", str(run.path)]) == 2
    assert str(run.checkpoint_path) in capsys.readouterr().err
    assert _snapshot(run.path) == before


def test_cli_resume_checkpoint_of_wrong_format(tmp_path, capsys):
    import torch

    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    torch.save({"format": 999}, run.checkpoint_path)
    before = _snapshot(run.path)
    assert main(["train", "--resume", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert str(run.checkpoint_path) in err and "format" in err
    assert _snapshot(run.path) == before


def test_cli_envs_prints_all_ids(capsys):
    assert main(["envs"]) == 0
    lines = capsys.readouterr().out.split()
    assert lines == list(SUPPORTED_ENVS)
    assert len(lines) == 7


def test_every_config_field_has_one_docstring():
    """schema.py documents each field with the string literal right after it, and only there."""
    import ast

    import mbpo_ray.config.schema as schema

    source = Path(schema.__file__).read_text()
    classes = {node.name: node for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}
    sections = [type(v) for v in vars(TrainConfig()).values() if dataclasses.is_dataclass(v)]

    def is_text(node):
        return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str) and node.value.value.strip() != "")

    for cls in (TrainConfig, *sections):
        body = classes[cls.__name__].body
        assert is_text(body[0]), f"{cls.__name__} has no class docstring"
        fields = [node.target.id for node in body if isinstance(node, ast.AnnAssign)]
        assert fields == [f.name for f in dataclasses.fields(cls)], cls.__name__
        for before, node in zip(body, body[1:]):
            if isinstance(before, ast.AnnAssign):
                assert is_text(node), f"{cls.__name__}.{before.target.id} has no docstring"
            else:  # a second string after a field's docstring, or a stray one
                assert not is_text(node), f"{cls.__name__}: string after {ast.unparse(before)[:40]}"
        # the docstrings replaced the comments: none is left inside a dataclass
        inside = source.splitlines()[body[0].lineno:classes[cls.__name__].end_lineno]
        assert not [line for line in inside if line.strip().startswith("#")], cls.__name__


def test_importing_config_imports_neither_torch_gymnasium_nor_numpy():
    code = ("import sys, mbpo_ray.config, mbpo_ray.cli; "
            "print(sorted(m for m in ('torch', 'gymnasium', 'numpy', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_dataclass_configs_are_plain_dataclasses():
    # to_dict/from_dict and the CLI rely on every leaf being a dataclass field
    cfg = make_config("Hopper-v5")
    for section in ("model", "sac", "mbpo"):
        assert dataclasses.is_dataclass(getattr(cfg, section))


# --- config files (--config) and config show ---------------------------------------------------

@pytest.fixture
def started(monkeypatch):
    """Capture the config `mbpo-ray train` would start (instead of training)."""
    import mbpo_ray.cli

    seen = []
    monkeypatch.setattr(mbpo_ray.cli, "_start", lambda cfg, out_dir, *args, **kwargs: seen.append(cfg) or 0)
    return seen


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_file_flat_nested_and_presets(tmp_path):
    from mbpo_ray.config import load_config_file

    path = _write(tmp_path / "c.yaml", {
        "env_id": "Hopper-v5", "seed": 4, "mbpo.real_ratio": 0.1, "model": {"hidden_width": 64},
        "env_kwargs": {"ctrl_cost_weight": 0.002},
        "presets": {"Pendulum-v1": {"mbpo": {"epoch_length": 200}, "total_steps": 5000}}})
    f = load_config_file(path)
    assert f.fields == {"env_id": "Hopper-v5", "seed": 4, "mbpo.real_ratio": 0.1, "model.hidden_width": 64,
                        "env_kwargs": {"ctrl_cost_weight": 0.002}}
    assert f.presets == {"Pendulum-v1": {"mbpo.epoch_length": 200, "total_steps": 5000}}


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "mapping"),
    ("seed: [unclosed", "not valid YAML"),
    ("presets: 3", "presets"),
    ("presets: {Pendulum-v1: 3}", "presets.Pendulum-v1"),
    ("presets: {Pendulum-v1: {env_id: Hopper-v5}}", "may not set env_id"),
    ("presets: {Pendulum-v1: {algo: sac}}", "may not set algo"),
    ("presets: {'not an id': {seed: 1}}", "env_id='not an id'"),
])
def test_bad_config_file_is_refused_naming_the_file(tmp_path, capsys, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--env", "Hopper-v5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mbpo-ray: error: ") and message in err and "Traceback" not in err
    assert not out.exists()


def test_config_file_field_errors_name_the_field(tmp_path, capsys):
    path = _write(tmp_path / "c.yaml", {"env_id": "Hopper-v5", "mbpo": {"no_such_field": 1}})
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "mbpo.no_such_field" in capsys.readouterr().err


def test_train_config_layers_file_presets_set_and_flags(tmp_path, started):
    """File fields < --env-kwargs < --set < flags; a file preset sits below the algo preset."""
    path = _write(tmp_path / "c.yaml", {
        "env_id": "Pendulum-v1", "seed": 4, "total_steps": 3000, "sac.batch_size": 128,
        "env_kwargs": {"g": 9.0},
        "presets": {"Pendulum-v1": {"mbpo.updates_per_step": 7, "mbpo.epoch_length": 200},
                    "Hopper-v5": {"mbpo.epoch_length": 500}}})
    out = str(tmp_path / "run")
    assert main(["train", "--config", str(path), "--out", out, "--set", "sac.batch_size=64",
                 "--env-kwargs", "max_episode_steps=100", "--steps", "2000"]) == 0
    cfg = started[-1]
    assert cfg.env_id == "Pendulum-v1" and cfg.seed == 4
    assert cfg.total_steps == 2000 and cfg.sac.batch_size == 64
    assert cfg.env_kwargs == {"g": 9.0, "max_episode_steps": 100}
    assert cfg.mbpo.updates_per_step == 7 and cfg.mbpo.epoch_length == 200  # the file's preset
    # the algo preset applies on top of the env's preset from the file: SAC keeps G = 1
    assert main(["train", "--config", str(path), "--out", out, "--algo", "sac"]) == 0
    assert started[-1].mbpo.updates_per_step == 1 and started[-1].mbpo.epoch_length == 200
    # --env picks another env: its own preset from the file, the file's other fields
    assert main(["train", "--config", str(path), "--out", out, "--env", "Hopper-v5"]) == 0
    cfg = started[-1]
    assert cfg.env_id == "Hopper-v5" and cfg.mbpo.epoch_length == 500 and cfg.mbpo.updates_per_step == 20
    assert cfg.total_steps == 3000 and cfg.mbpo.termination == "known"
    # JSON form of --env-kwargs; --set env_kwargs.KEY on top of it
    assert main(["train", "--env", "Pendulum-v1", "--out", out, "--env-kwargs", '{"g": 8.5, "m": 2}',
                 "--set", "env_kwargs.m=3"]) == 0
    assert started[-1].env_kwargs == {"g": 8.5, "m": 3}
    assert not Path(out).exists()


def test_run_config_yaml_is_a_config_file(tmp_path, started):
    """The schema of a run's config.yaml is the config file format: a run's config.yaml given to
    --config reproduces the run's config exactly."""
    cfg = make_config("Walker2d-v5", {"seed": 9, "algo": "sac", "env_kwargs": {"ctrl_cost_weight": 0.002},
                                      "mbpo.termination": "none"})
    run = RunDirectory(tmp_path / "old")
    run.create(cfg)
    assert main(["train", "--config", str(run.config_path), "--out", str(tmp_path / "new")]) == 0
    assert started[-1] == cfg


def test_config_show_prints_the_resolved_config(capsys):
    assert main(["config", "show", "--env", "Hopper-v5", "--algo", "sac", "--set", "seed=5"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert from_dict(shown) == make_config("Hopper-v5", {"algo": "sac", "seed": 5})
    assert set(shown) == set(field_names(TrainConfig()))
    assert main(["config", "show"]) == 0  # the default env
    assert from_dict(yaml.safe_load(capsys.readouterr().out)) == make_config(TrainConfig.env_id)


def test_config_show_fills_in_the_generic_warm_up(capsys):
    """Pendulum-v1's time limit is 200 steps: the generic warm-up is 5 episodes = 1000 steps
    (docs/hyperparameters.md#the-generic-preset); Reacher-v5's 50-step episodes give the floor."""
    assert main(["config", "show", "--env", "Pendulum-v1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["mbpo.init_random_steps"] == 1000 and shown["mbpo.termination"] == "learned"
    assert main(["config", "show", "--env", "Pendulum-v1", "--env-kwargs", "max_episode_steps=2000"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["mbpo.init_random_steps"] == 5000
    assert main(["config", "show", "--env", "Reacher-v5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["mbpo.init_random_steps"] == 500


def test_config_show_refuses_a_bad_env(capsys):
    assert main(["config", "show", "--env", "CartPole-v1"]) == 2
    err = capsys.readouterr().err
    assert "Discrete" in err and "1-D Box" in err


def test_resume_refuses_config_and_env_kwargs(tmp_path, capsys):
    run = RunDirectory(tmp_path / "run")
    run.create(make_config("InvertedPendulum-v5"))
    before = _snapshot(run.path)
    path = _write(tmp_path / "c.yaml", {"seed": 1})
    assert main(["train", "--resume", str(run.path), "--config", str(path)]) == 2
    assert "--config" in capsys.readouterr().err
    assert main(["train", "--resume", str(run.path), "--env-kwargs", "g=1"]) == 2
    assert "--env-kwargs" in capsys.readouterr().err
    assert _snapshot(run.path) == before
