"""A simulated two-node Ray cluster (``ray.cluster_utils.Cluster``): collectors and rollout
workers are placed on the second node through ``ray.worker_node_resource`` and the run
completes."""
import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from mbpo_ray.algos import make_algorithm  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 96 * 1024 * 1024, "include_dashboard": False})
    # room for the four workers and, should the scheduler put them there, the learner and trainer
    worker = cluster.add_node(num_cpus=6, resources={"worker_node": 1},
                              object_store_memory=96 * 1024 * 1024)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_workers_run_on_the_second_node_and_the_run_completes(two_nodes, tiny_config, tmp_path, single_thread):
    cluster, worker = two_nodes
    cfg = tiny_config(**{"runtime": "ray", "ray.num_collectors": 2, "ray.num_rollout_workers": 2,
                         "ray.worker_node_resource": "worker_node", "total_steps": 400})
    algo = make_algorithm(cfg, "cpu", tmp_path)
    try:
        rt = algo.runtime
        placed = ray.get([a.node_id.remote() for a in rt.collectors + rt.rollout_workers])
        assert set(placed) == {worker.node_id}
        records = []
        while algo.env_steps < cfg.total_steps:
            record = algo.step()
            if record is not None:
                records.append(record)
        assert [r["env_steps"] for r in records] == [200, 400]
        assert records[-1]["rollout/transitions"] > 0 and records[-1]["train/updates"] > 0
    finally:
        algo.close()
