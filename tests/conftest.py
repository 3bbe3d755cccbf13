import os

import pytest
import torch

from mbpo_ray.config import make_config

# --- how `make test` spreads the suite over the cores (pytest-xdist, --dist loadgroup) ------------
# Each module runs whole on one worker, so that its module-scoped fixtures (a Ray instance, a
# trained run, a study) are made once. The modules that start Ray on the fixed port 6379 (Ray's
# cluster_utils, the rehearsal's fake autoscaler) share a worker, one after the other. The
# longest modules are handed out first, so that no long one starts last.
FIXED_PORT_MODULES = ("test_multinode", "test_rehearsal")
LONGEST_FIRST = ("test_training", "test_multinode", "test_rehearsal", "test_ray_runtime", "test_any_env",
                 "test_sweep", "test_rllib_sac", "test_resume_matrix", "test_seed_groups", "test_steve",
                 "test_pets", "test_algorithms", "test_precision")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one torch thread each, or they oversubscribe the cores
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    def module(item):
        return item.module.__name__.rpartition(".")[2]

    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            name = module(item)
            item.add_marker(pytest.mark.xdist_group("ray_port_6379" if name in FIXED_PORT_MODULES else name))
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(module(item), len(rank)))  # stable: order within a module kept


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
