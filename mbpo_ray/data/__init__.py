from mbpo_ray.data.buffers import ReplayBuffer, model_buffer_capacity, sample_mixed
from mbpo_ray.data.rows import RowLayout

__all__ = ["ReplayBuffer", "RowLayout", "model_buffer_capacity", "sample_mixed"]
