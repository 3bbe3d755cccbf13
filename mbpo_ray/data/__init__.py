from mbpo_ray.data.buffers import ReplayBuffer, model_buffer_capacity, sample_mixed

__all__ = ["ReplayBuffer", "model_buffer_capacity", "sample_mixed"]
