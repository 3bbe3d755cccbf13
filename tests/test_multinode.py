"""Several Ray nodes on this machine (``ray.cluster_utils.Cluster``, one for the module), laid out
as the cluster files of cluster/ lay out a real cluster (docs/clusters.md): a head with no CPU
(the driver only), a "GPU" node that carries a logical GPU and the learner resource, and CPU
worker nodes that carry the worker resource. On it: an MBPO run on the Ray runtime puts its
collectors and rollout workers on the worker nodes and its learner, model trainer and buffer
actor on the GPU node; a worker node removed in the middle of the run has its actors recreated on
another node and no transition that reached the buffer actor is lost; a study's trials spread
over the nodes, and a node removed in the middle of the study has its trial continued on another
node from its checkpoint, every trial ending with its full metrics; a study folder that other
machines could not write is refused before any trial starts, and one on this machine is not
(every node of the simulated cluster is on it).

Every node has 1 logical CPU, so that three one-CPU trials must take three nodes; the Ray-runtime
actors ask for fractions of a CPU (they mostly wait on each other on 2 real cores). Nodes are
removed with SIGKILL (a lost machine, not a drained one); Ray notices within a few seconds (the
head's health checks below)."""
from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # starts a Ray cluster: make test-fast leaves it out
cluster_utils = pytest.importorskip("ray.cluster_utils")
tune = pytest.importorskip("ray.tune")

import numpy as np  # noqa: E402

import mbpo_ray.runtime.ray.capacity as capacity_module  # noqa: E402
import mbpo_ray.tune.sweep as sweep_module  # noqa: E402
from mbpo_ray.algos import make_algorithm  # noqa: E402
from mbpo_ray.cli import main  # noqa: E402
from mbpo_ray.run_dir import RunDirectory  # noqa: E402
from mbpo_ray.tune.study import StudyError, load_study  # noqa: E402
from mbpo_ray.tune.sweep import check_storage, filesystem_type, storage_refusal, StudyFolder, sweep  # noqa: E402
from mbpo_ray.tune.trainable import NODE_KEY  # noqa: E402

WORKER = "mbpo_worker"  # the names of cluster/ (tests/test_cluster_files.py checks them there)
LEARNER = "mbpo_learner"
STORE = 80 * 1024 * 1024  # Ray's smallest object store
KINDS = {"gpu": {"num_cpus": 1, "num_gpus": 1, "resources": {LEARNER: 100}},
         "cpu": {"num_cpus": 1, "resources": {WORKER: 100}}}
# Failure detection of a SIGKILLed node: 5 failed checks 1 s apart instead of Ray's 3 s apart;
# Ray's own failure threshold, and a check may take 5 s, so that a busy machine does not lose a
# live node.
HEALTH = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 1000,
          "health_check_timeout_ms": 5000, "health_check_failure_threshold": 5}


class SimulatedCluster:
    def __init__(self):
        self.cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False, "_system_config": HEALTH})
        self.kinds = {}  # node id -> kind
        self.nodes = {}  # node id -> Node
        for kind in ("gpu", "cpu", "cpu"):
            self.add(kind)
        self.removed = []

    def add(self, kind: str) -> str:
        node = self.cluster.add_node(object_store_memory=STORE, **KINDS[kind])
        self.kinds[node.node_id], self.nodes[node.node_id] = kind, node
        return node.node_id

    def remove(self, node_id: str) -> str:
        """Kill a node's processes (SIGKILL) and start a fresh node of its kind, so that the
        module's later tests find the same layout; returns the new node's id."""
        kind = self.kinds.pop(node_id)
        self.cluster.remove_node(self.nodes.pop(node_id), allow_graceful=False)
        self.removed.append(node_id)
        return self.add(kind)

    def of_kind(self, kind: str):
        return {n for n, k in self.kinds.items() if k == kind}

    def alive(self):
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.fixture(scope="module")
def nodes():
    sim = SimulatedCluster()
    ray.init(address=sim.cluster.address, log_to_driver=False)
    try:
        yield sim
    finally:
        ray.shutdown()
        sim.cluster.shutdown()


# --- an MBPO run on the Ray runtime ------------------------------------------------------------------

def actor_nodes(rt):
    roles = {"buffer": [rt.buffer], "learner": [rt.learner], "model_trainer": [rt.model_trainer],
             "collector": rt.collectors, "rollout_worker": rt.rollout_workers}
    return {role: ray.get([a.node_id.remote() for a in actors]) for role, actors in roles.items()}


@pytest.fixture(scope="module")
def ray_run(nodes, tiny_config_module, tmp_path_factory, single_thread):
    """A Ray-runtime MBPO run (async, 2 collectors, 2 rollout workers) whose worker node that
    runs a busy collector is removed past env step 300; what it looked like before and after."""
    cfg = tiny_config_module(**{
        "runtime": "ray", "ray.schedule": "async", "ray.num_collectors": 2, "ray.num_rollout_workers": 2,
        "ray.collector_cpus": 0.25, "ray.rollout_worker_cpus": 0.25, "ray.learner_cpus": 0.5,
        "ray.model_trainer_cpus": 0.5, "ray.worker_node_resource": WORKER, "ray.learner_node_resource": LEARNER})
    algo = make_algorithm(cfg, "cpu", tmp_path_factory.mktemp("ray_run"))
    try:
        rt, loop = algo.runtime, algo.loop
        before = actor_nodes(rt)
        # advance call by call until a collector is busy past step 300 (the kill then interrupts
        # a call in flight), then remove that collector's node
        while not (algo.env_steps >= 300 and loop.busy("collect")):
            loop.launch()
            loop.wait_one()
        busy = next(job.index for job in loop.jobs if job.kind == "collect")
        victim = before["collector"][busy]
        on_victim = {role: sum(n == victim for n in placed) for role, placed in before.items()}
        rows_before = ray.get(rt.buffer.all_env.remote())
        replacement = nodes.remove(victim)
        records = []
        while algo.env_steps < cfg.total_steps:
            record = algo.step()
            if record is not None:
                records.append(record)
        return {"cfg": cfg, "before": before, "after": actor_nodes(rt), "victim": victim,
                "replacement": replacement, "on_victim": on_victim, "restarts": dict(rt.restarts),
                "rows_before": rows_before, "rows_after": ray.get(rt.buffer.all_env.remote()),
                "sizes": ray.get(rt.buffer.sizes.remote()), "env_steps": algo.env_steps, "records": records}
    finally:
        algo.close()


@pytest.fixture(scope="module")
def tiny_config_module():
    """tests/conftest.py's tiny_config, for module-scoped fixtures."""
    from mbpo_ray.config import make_config

    def make(**extra):
        overrides = {
            "total_steps": 600, "seed": 3, "device": "cpu", "eval_episodes": 2,
            "mbpo.epoch_length": 200, "mbpo.init_random_steps": 200, "mbpo.model_train_freq": 100,
            "mbpo.rollout_batch_size": 1000, "mbpo.updates_per_step": 2, "mbpo.rollout_schedule": [0, 2, 1, 3],
            "model.hidden_width": 32, "model.max_fit_epochs": 5, "sac.hidden_width": 32, "sac.batch_size": 64,
            "ray.collector_chunk": 50}
        overrides.update(extra)
        return make_config("InvertedPendulum-v5", overrides)

    return make


def test_ray_runtime_roles_land_on_their_kind_of_node(ray_run, nodes):
    before = ray_run["before"]
    gpu_nodes = nodes.of_kind("gpu")
    # the learner, model trainer and buffer actor on the node with the (logical) GPU ...
    for role in ("learner", "model_trainer", "buffer"):
        assert set(before[role]) <= gpu_nodes, role
    # ... collectors and rollout workers on worker nodes (then: the nodes that carried mbpo_worker)
    cpu_then = nodes.of_kind("cpu") - {ray_run["replacement"]} | {ray_run["victim"]}
    for role in ("collector", "rollout_worker"):
        assert set(before[role]) <= cpu_then, role


def test_actors_of_a_removed_node_are_recreated_elsewhere_and_the_run_completes(ray_run, nodes):
    victim, after = ray_run["victim"], ray_run["after"]
    assert victim in nodes.removed and victim not in nodes.alive()
    assert ray_run["env_steps"] == ray_run["cfg"].total_steps
    assert [r["env_steps"] for r in ray_run["records"]][-1] == ray_run["cfg"].total_steps
    # exactly the actors the node ran were recreated, each once, on a live worker node
    expected = {role: n for role, n in ray_run["on_victim"].items() if n}
    assert expected.get("collector", 0) >= 1 and ray_run["restarts"] == expected
    for role in ("collector", "rollout_worker"):
        assert victim not in after[role] and set(after[role]) <= nodes.of_kind("cpu"), role
    for role in ("learner", "model_trainer", "buffer"):
        assert after[role] == ray_run["before"][role], role  # not restarted
    assert ray_run["records"][-1]["perf/actor_restarts"] == sum(expected.values())


def test_no_transition_that_reached_the_buffer_actor_is_lost(ray_run):
    before, after = ray_run["rows_before"], ray_run["rows_after"]
    assert len(before) >= 300
    # every row stored before the node went away is still there, unchanged and in its place,
    # and D_env holds each env step once: the interrupted chunk was redone, not stored twice
    np.testing.assert_array_equal(after[:len(before)], before)
    assert ray_run["sizes"]["real_added"] == len(after) == ray_run["cfg"].total_steps


# --- a study ---------------------------------------------------------------------------------------

STUDY = """
algorithms: [sac]
envs: [InvertedPendulum-v5]
seeds: [0, 1, 2]
budget: {env_steps: 600}
max_failures: 2
overrides:
  all:
    device: cpu
    eval_episodes: 2
    mbpo: {epoch_length: 200, init_random_steps: 200}
    sac: {hidden_width: 32, batch_size: 64}
wandb: {mode: disabled}
"""
VICTIM_TRIAL = "sac-InvertedPendulum-v5-seed1"


def write_study(folder: Path, name: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(STUDY) + extra)
    return path


class RemoveNodeOnce(tune.Callback):
    """Records where every result came from; at the first checkpoint of ``name``, removes the
    node that runs it (SIGKILL) and starts a fresh node of that kind."""

    def __init__(self, sim: SimulatedCluster, name: str, runs: Path):
        self.sim, self.name, self.runs = sim, name, runs
        self.results = []  # (trial, env_steps, node id)
        self.removed = None
        self.first_line = None
        self.recovered = 0

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment (for a restore); the cluster's processes
        # stay with this object
        return {k: v for k, v in self.__dict__.items() if k != "sim"}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results.append((str(trial), result["env_steps"], result[NODE_KEY]))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if str(trial) != self.name or self.removed is not None:
            return
        self.first_line = (self.runs / self.name / "metrics.jsonl").read_text().splitlines()[0]
        self.removed = trial.last_result[NODE_KEY]
        self.sim.remove(self.removed)

    def on_trial_recover(self, iteration, trials, trial, **info):
        if str(trial) == self.name:
            self.recovered += 1


@pytest.fixture(scope="module")
def study(nodes, ray_run, tmp_path_factory):
    # (after ray_run: both remove a node, and this fixture's trials need all three 1-CPU nodes)
    root = tmp_path_factory.mktemp("study")
    path = write_study(root, "spread")
    folder = root / "out"
    remover = RemoveNodeOnce(nodes, VICTIM_TRIAL, folder / "runs")
    code = sweep(str(path), out=str(folder), callbacks=[remover], verbose=0)
    return {"code": code, "folder": folder, "remover": remover}


def test_study_trials_spread_over_the_nodes(study, nodes):
    assert study["code"] == 0
    first = {}
    for trial, _, node in study["remover"].results:
        first.setdefault(trial, node)
    # three trials of one CPU each on nodes of one CPU: each ran on a node of its own
    assert len(first) == 3 and len(set(first.values())) == 3


def test_trial_of_a_removed_node_continues_elsewhere_from_its_checkpoint(study, nodes):
    remover = study["remover"]
    assert remover.removed is not None and remover.removed not in nodes.alive()
    assert remover.recovered == 1
    mine = [(steps, node) for trial, steps, node in remover.results if trial == VICTIM_TRIAL]
    before = [steps for steps, node in mine if node == remover.removed]
    after = [(steps, node) for steps, node in mine if node != remover.removed]
    assert before and before[0] == 200 and after
    # the restarted process ran on a live node and started after its checkpoint: a start from
    # scratch would report env step 200 again
    assert all(node in nodes.alive() for _, node in after)
    assert min(steps for steps, _ in after) > 200 and after[-1][0] == 600
    # the line written before the node went away is in metrics.jsonl byte for byte (a rerun
    # epoch would carry other perf/ timings)
    run = RunDirectory(study["folder"] / "runs" / VICTIM_TRIAL)
    assert run.metrics_path.read_text().splitlines()[0] == remover.first_line


def test_study_completes_with_every_trials_full_metrics(study):
    runs = sorted((study["folder"] / "runs").iterdir())
    assert [r.name for r in runs] == [f"sac-InvertedPendulum-v5-seed{s}" for s in range(3)]
    for path in runs:
        run = RunDirectory(path)
        records = run.read_metrics()
        assert [r["env_steps"] for r in records] == [200, 400, 600], path.name  # no epoch twice
        assert [r["epoch"] for r in records] == [0, 1, 2], path.name
        assert all("eval/return_mean" in r and NODE_KEY not in r for r in records)
        assert run.load_checkpoint()["env_steps"] == 600


# --- shared storage ----------------------------------------------------------------------------------

def test_a_folder_on_this_machine_serves_a_cluster_whose_nodes_are_all_on_it(nodes, tmp_path):
    driver_ip, node_ips = sweep_module.node_addresses()
    assert len(node_ips) == 4 and set(node_ips) == {driver_ip}
    # the head's autoscaler monitor publishes a status, but one that launches no node
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    deadline = time.time() + 30  # the monitor writes every few seconds
    while not _internal_kv_get(DEBUG_AUTOSCALING_STATUS) and time.time() < deadline:
        time.sleep(0.5)
    assert _internal_kv_get(DEBUG_AUTOSCALING_STATUS) and not capacity_module.autoscaling()
    check_storage(load_study(write_study(tmp_path, "here")), StudyFolder(str(tmp_path / "out")), "--out")


def test_a_local_folder_is_refused_before_any_trial_when_other_machines_would_run_trials(nodes, tmp_path,
                                                                                       monkeypatch, capsys):
    # the simulated cluster as if its worker nodes were other machines
    driver_ip, node_ips = sweep_module.node_addresses()
    monkeypatch.setattr(sweep_module, "node_addresses",
                        lambda: (driver_ip, [driver_ip] + [f"10.9.0.{i}" for i in range(1, len(node_ips))]))
    path = write_study(tmp_path, "far")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and message.startswith(f"mbpo-ray: error: --out {out}: ")
    assert "3 other machines (10.9.0.1, 10.9.0.2, 10.9.0.3)" in message
    assert "s3:// or gs://" in message and "storage_shared: true" in message
    assert not out.exists()  # nothing written, no trial started
    # declared shared: the same cluster takes it (the sweep is not run here: the check alone)
    shared = load_study(write_study(tmp_path, "declared", "storage_shared: true\n"))
    check_storage(shared, StudyFolder(str(out)), "--out")


def status(active):
    return json.dumps({"time": 0, "autoscaler_report": {"active_nodes": active, "idle_nodes": {},
                                                       "pending_nodes": [], "pending_launches": {},
                                                       "failed_nodes": []}}).encode()


def test_an_autoscaler_that_launches_nodes_is_told_from_the_monitor_of_a_hand_made_cluster():
    node = "node_" + "ab12" * 14  # the monitor of a cluster started by hand: a type per node id
    assert not capacity_module.autoscaler_adds_nodes(status({node: 1}))
    assert capacity_module.autoscaler_adds_nodes(status({"head": 1}))  # `ray up`: the config's types
    assert capacity_module.autoscaler_adds_nodes(json.dumps({"autoscaler_report": {
        "active_nodes": {node: 1}, "pending_launches": {"cpu": 2}}}).encode())
    assert not capacity_module.autoscaler_adds_nodes(None) and not capacity_module.autoscaler_adds_nodes(b"{}")


def test_storage_shared_is_a_boolean_study_key_that_a_resumed_study_keeps(tmp_path):
    study = load_study(write_study(tmp_path, "kept", "storage_shared: true\n"))
    assert study.storage_shared is True and study.to_plain()["storage_shared"] is True
    with pytest.raises(StudyError, match=r"^storage_shared: 1 is not allowed: true \(the storage path is mounted"):
        load_study(write_study(tmp_path, "bad", "storage_shared: 1\n"))


MOUNTS = textwrap.dedent("""\
    overlay / overlay rw 0 0
    10.0.0.5:/export /mnt/nfs nfs4 rw,relatime 0 0
    //files/share /mnt/smb\\040share cifs rw 0 0
    tmpfs /mnt/nfs/scratch tmpfs rw 0 0
    gcsfuse /mnt/bucket fuse.gcsfuse rw 0 0
    """)


@pytest.mark.parametrize("path, kind", [
    ("/mnt/nfs/sweeps/paper", "nfs4"), ("/mnt/nfs", "nfs4"), ("/mnt/nfsother/x", "overlay"),
    ("/mnt/smb share/sweeps", "cifs"), ("/mnt/nfs/scratch/x", "tmpfs"), ("/mnt/bucket/s", "fuse.gcsfuse"),
    ("/home/u/runs", "overlay")])
def test_filesystem_type_is_the_longest_mount_above_the_path(path, kind):
    assert filesystem_type(path, MOUNTS) == kind


def refusal(location="/home/u/runs/s", *, shared=False, ips=("10.0.0.1", "10.0.0.2"), autoscaling=False,
            fs="ext4"):
    return storage_refusal(location, "storage", shared, "10.0.0.1", list(ips), autoscaling, fs)


def test_storage_refusal_names_what_to_set():
    message = refusal()
    assert message == (
        "storage /home/u/runs/s: a folder on this machine's own disk (filesystem ext4), but the Ray cluster "
        "has 1 other machine (10.0.0.2), whose trials could not write there. Set storage (or --out) to an "
        "s3:// or gs:// URI, or to a path on a filesystem that every node mounts at the same place (NFS, SMB, "
        "CephFS, Lustre, ...); for a shared filesystem not recognised here, set storage_shared: true in the "
        "study (docs/clusters.md)")
    # an autoscaling cluster that has only its head now will add other machines
    assert "an autoscaler that adds nodes on other machines" in refusal(ips=("10.0.0.1",), autoscaling=True)
    assert refusal("file:///home/u/runs/s") is not None


@pytest.mark.parametrize("case", ["one machine", "s3", "gs", "nfs", "cifs", "lustre", "gcsfuse", "declared"])
def test_storage_that_every_node_can_write_is_not_refused(case):
    kwargs = {"one machine": {"ips": ("10.0.0.1", "10.0.0.1")}, "nfs": {"fs": "nfs"}, "cifs": {"fs": "cifs"},
              "lustre": {"fs": "lustre"}, "gcsfuse": {"fs": "fuse.gcsfuse"}, "declared": {"shared": True}}
    location = {"s3": "s3://bucket/sweeps/s", "gs": "gs://bucket/sweeps/s"}.get(case, "/home/u/runs/s")
    assert refusal(location, **kwargs.get(case, {})) is None
