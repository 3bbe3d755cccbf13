"""Assertions shared by several test modules."""
import torch


def assert_states_equal(a, b, path="state", ignore=()):
    """Two nested checkpoint states are identical (tensors and arrays bit for bit); keys named in
    ``ignore`` (wall-clock figures) are skipped wherever they occur."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            if key not in ignore:
                assert_states_equal(a[key], b[key], f"{path}.{key}", ignore)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{path}[{i}]", ignore)
    elif hasattr(a, "shape"):  # numpy
        assert (a == b).all(), path
    else:
        assert a == b, path


WALL_CLOCK_KEYS = ("model/fit_seconds", "model/actor_seconds")


def comparable(records):
    """Metric records minus wall-clock measurements (perf/*, model fit seconds, the Ray model
    trainer's seconds), which legitimately differ between otherwise identical runs."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k not in WALL_CLOCK_KEYS}
            for r in records]


def toy_fit_data(seed: int = 2):
    """600 transitions of a 3-dim state and a 2-dim action (inputs [600, 5]) with smooth targets
    [reward, delta of the state] that an ensemble learns within a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(600, 5, generator=generator)
    return inputs, torch.cat([inputs[:, :1] * 0.5, torch.sin(inputs[:, :3])], dim=1)


def toy_trainer(**model_fields):
    """A small ensemble (3 members of 2 x 16, batch 64, fits of 3 epochs) and its trainer, the
    same initial weights every call; ``model_fields`` set further ModelConfig fields."""
    from mbpo_ray.config import ModelConfig
    from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble

    cfg = ModelConfig(num_members=3, num_elites=2, hidden_width=16, num_hidden_layers=2, batch_size=64,
                      weight_decays=(1e-4, 1e-4, 1e-4), max_fit_epochs=3, **model_fields)
    torch.manual_seed(0)
    return EnsembleTrainer(ProbabilisticEnsemble(3, 2, cfg), cfg)


def assert_wandb_history_is_the_metrics(run_dir, run_id):
    """The W&B run ``run_id`` of ``run_dir``, read back from its offline ``.wandb`` files in the
    order `wandb sync` uploads them, is its metrics.jsonl (mbpo_ray.wandb_records.history_mismatch:
    each epoch once with its values, in order, then the curve, rising steps, finished). Returns
    the folders' parts."""
    from mbpo_ray.wandb_records import history_mismatch, run_files

    problem = history_mismatch(run_dir, run_id)
    assert problem is None, problem
    return run_files(run_dir, run_id)
