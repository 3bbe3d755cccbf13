import pytest
import torch

from mbpo_ray.config import make_config


def tiny_overrides(**extra):
    """The overrides of ``tiny_config`` (for module-scoped fixtures, which cannot take it)."""
    overrides = {
        "total_steps": 600, "seed": 3, "device": "cpu", "eval_episodes": 2,
        "mbpo.epoch_length": 200, "mbpo.init_random_steps": 200, "mbpo.model_train_freq": 100,
        "mbpo.rollout_batch_size": 1000, "mbpo.updates_per_step": 2,
        "mbpo.rollout_schedule": [0, 2, 1, 3],
        "model.hidden_width": 32, "model.max_fit_epochs": 5,
        "sac.hidden_width": 32, "sac.batch_size": 64,
    }
    overrides.update(extra)
    return overrides


@pytest.fixture
def tiny_config():
    """A cheap InvertedPendulum MBPO config: every phase of the loop runs within ~600 steps."""

    def make(**extra):
        return make_config("InvertedPendulum-v5", tiny_overrides(**extra))

    return make


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is fastest and does not oversubscribe a busy machine
    (the previous setting comes back for the other test modules)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
