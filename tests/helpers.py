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
