"""The one device rule (mbpo_ray.devices): every branch of the decision on a CPU machine, an
absent device is an error naming what is there, and a GPU that Ray assigns to an actor is the
device that actor uses (simulated with Ray's resource accounting: no GPU needed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from mbpo_ray.devices import choose_device, resolve_device
from mbpo_ray.errors import ConfigError

# --- outside Ray: what this process sees --------------------------------------------------------


@pytest.mark.parametrize("spec, cuda_count, mps, expected", [
    ("auto", 0, False, "cpu"),
    ("auto", 2, False, "cuda:0"),
    ("auto", 0, True, "cpu"),  # auto never picks MPS: ask for it by name
    ("cpu", 0, False, "cpu"),
    ("cpu", 2, True, "cpu"),
    ("cuda", 1, False, "cuda:0"),
    ("cuda:0", 1, False, "cuda:0"),
    ("cuda:1", 2, False, "cuda:1"),
    ("mps", 0, True, "mps"),
])
def test_present_devices_are_chosen(spec, cuda_count, mps, expected):
    assert choose_device(spec, cuda_count, mps) == expected


@pytest.mark.parametrize("spec, cuda_count, mps, present", [
    ("cuda", 0, False, "this process sees no CUDA device"),
    ("cuda:0", 0, True, "this process sees no CUDA device and MPS"),
    ("cuda:1", 1, False, "this process sees 1 CUDA device (cuda:0)"),
    ("cuda:2", 2, False, "this process sees 2 CUDA devices (cuda:0, cuda:1)"),
    ("mps", 0, False, "MPS is not available here; this process sees no CUDA device"),
    ("mps", 1, False, "MPS is not available here; this process sees 1 CUDA device (cuda:0)"),
])
def test_absent_device_is_an_error_naming_what_is_there(spec, cuda_count, mps, present):
    with pytest.raises(ConfigError) as info:
        choose_device(spec, cuda_count, mps)
    message = str(info.value)
    assert message.startswith(f"device={spec!r} is not available")
    assert present in message


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu"])
def test_unknown_spec_is_an_error(spec):
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N or mps"):
        choose_device(spec, 1, True)


# --- inside a Ray actor: what Ray assigned --------------------------------------------------------

@pytest.mark.parametrize("spec", ["auto", "cuda"])
@pytest.mark.parametrize("gpu_ids", [[0], [3], ["1"], [0, 1]])
def test_actor_with_a_ray_gpu_runs_on_it(spec, gpu_ids):
    # Ray sets CUDA_VISIBLE_DEVICES to the assigned GPUs: the first one is cuda:0 in the actor.
    assert choose_device(spec, len(gpu_ids), False, gpu_ids) == "cuda:0"


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "mps"])
def test_actor_without_a_ray_gpu_runs_on_the_cpu(spec):
    assert choose_device(spec, 0, False, []) == "cpu"
    assert choose_device(spec, 4, True, []) == "cpu"  # a GPU on the node, not this actor's


def test_actor_given_a_gpu_that_torch_does_not_see_is_an_error():
    with pytest.raises(ConfigError, match=r"Ray assigned GPU\(s\) \[2\] to this actor but torch sees "
                                          r"no CUDA device"):
        choose_device("auto", 0, False, [2])


@pytest.mark.parametrize("spec", ["cuda:1", "cpu", "mps"])
def test_actor_given_a_gpu_with_a_device_ray_cannot_honour_is_an_error(spec):
    with pytest.raises(ConfigError, match="use device=auto or cuda"):
        choose_device(spec, 2, True, [0])


# --- this process -------------------------------------------------------------------------------

def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device("auto", gpu_ids=[]) == torch.device("cpu")


def test_resolve_device_absent_cuda_names_what_is_there():
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError) as info:
        resolve_device(f"cuda:{count}")
    assert f"device='cuda:{count}' is not available: this process sees" in str(info.value)
    assert ("no CUDA device" if count == 0 else f"{count} CUDA device") in str(info.value)


@pytest.mark.ray
def test_ray_assigned_gpu_is_the_actor_device():
    """Ray's resource accounting on a CPU machine: a cluster that claims one GPU assigns it to
    the actor that asks for it (and sets CUDA_VISIBLE_DEVICES), none to the actor that does not.
    Its own Ray instance, in a process of its own (whatever Ray session this one holds)."""
    pytest.importorskip("ray")
    result = subprocess.run([sys.executable, "-c", RAY_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with_gpu, without = json.loads(result.stdout.strip().splitlines()[-1])
    ids, chosen, real = with_gpu
    assert len(ids) == 1 and chosen == "cuda:0"
    if torch.cuda.is_available():
        assert real == "cuda:0"
    else:
        assert "Ray assigned GPU(s)" in real and "torch sees no CUDA device" in real
    assert without == [[], "cpu", "cpu"]


RAY_PROBE = """
import json
import ray


class Probe:
    def device(self, cuda_count):
        import ray

        from mbpo_ray.devices import choose_device, resolve_device
        from mbpo_ray.errors import ConfigError

        ids = ray.get_gpu_ids()
        try:
            real = str(resolve_device("auto", ids))
        except ConfigError as exc:
            real = str(exc)
        # cuda_count simulates what torch would see once CUDA_VISIBLE_DEVICES holds the ids
        return ids, choose_device("auto", cuda_count, False, ids), real


ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
try:
    with_gpu = ray.remote(num_cpus=1, num_gpus=1)(Probe).remote()
    without = ray.remote(num_cpus=1, num_gpus=0)(Probe).remote()
    print(json.dumps([ray.get(with_gpu.device.remote(1)), ray.get(without.device.remote(0))]))
finally:
    ray.shutdown()
"""
