"""`mbpo-ray cluster rehearse` (mbpo_ray/rehearsal/, docs/clusters.md "Before your first `ray up`"):
the shipped AWS file rehearsed end to end against a bucket on a local S3 server with a W&B key
set and W&B unreachable, the KubeRay RayCluster's groups against a shared local folder; the
pieces (node types, the cut-down study, one-line errors) on their own; and the autoscaling-aware
resource check of `train --runtime ray`.

The end-to-end rehearsals start their own Ray cluster (port 6379 and 8265), so no other Ray may
run meanwhile: every other module shuts its Ray down when it ends."""
from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
import yaml

from mbpo_ray.cli import main
from mbpo_ray.cluster_files import node_kinds
from mbpo_ray.errors import ConfigError
from mbpo_ray.rehearsal import fake_cluster
from mbpo_ray.rehearsal.command import read_cluster_file, rehearse
from mbpo_ray.rehearsal.fake_cluster import HEAD_TYPE, MAX_NODES_PER_TYPE, autoscaling_config, rehearsed_types
from mbpo_ray.rehearsal.scaled_study import EPOCH_LENGTH, EPOCHS, write_scaled_study
from mbpo_ray.runtime.ray.capacity import Capacity, NodeType

REPO = Path(__file__).resolve().parents[1]
FAKE_KEY = "fake-wandb-key-5555aaaa5555aaaa5555aaaa5555aaaa"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the pieces -----------------------------------------------------------------------------------

def test_a_cluster_files_node_types_as_the_fake_providers():
    kinds, study = read_cluster_file(REPO / "cluster" / "aws.yaml")
    assert study is None
    types = {t.name: t for t in rehearsed_types(kinds)}
    assert types[HEAD_TYPE].resources == {"CPU": 0.0}
    assert types["gpu"].resources == {"CPU": 8.0, "GPU": 1.0, "mbpo_learner": 100.0}
    assert types["gpu"].min_workers == 0 and types["gpu"].max_workers == MAX_NODES_PER_TYPE
    config = autoscaling_config(list(types.values()))
    assert config["provider"]["type"] == "fake_multinode" and config["head_node_type"] == HEAD_TYPE
    assert config["available_node_types"]["cpu"]["resources"]["mbpo_worker"] == 100.0
    # a RayJob names its own study; the on-prem head (no CPU stated) gets CPUs to hold the learner roles
    _, job_study = read_cluster_file(REPO / "cluster" / "kuberay" / "rayjob.yaml")
    assert job_study == "tune_configs/cluster.yaml"
    onprem = {t.name: t for t in rehearsed_types(read_cluster_file(REPO / "cluster" / "onprem.yaml")[0])}
    assert onprem[HEAD_TYPE].resources["CPU"] > 0 and onprem["worker"].min_workers == MAX_NODES_PER_TYPE


def test_the_study_is_cut_down_but_keeps_its_placement_groups(tmp_path):
    from mbpo_ray.tune.study import load_study, validate_study

    original = validate_study(load_study(REPO / "tune_configs" / "cluster.yaml"))
    study = write_scaled_study(REPO / "tune_configs" / "cluster.yaml", tmp_path / "s.yaml", storage_shared=True)
    plans = validate_study(load_study(tmp_path / "s.yaml"))
    assert len(plans) == 1 and plans[0].total_steps == EPOCH_LENGTH * EPOCHS
    assert plans[0].bundles == original[0].bundles  # the same actors asking for the same resources
    assert plans[0].cfg.checkpoint_every_epochs == 1 and plans[0].cfg.sac.hidden_width == 32
    assert study.storage_shared and study.max_concurrent_trials == 1


@pytest.mark.parametrize("text, words", [
    ("{", "not valid YAML"),
    ("cluster_name: x\nprovider: {type: aws}\n", "no node types"),
])
def test_a_bad_cluster_file_is_a_one_line_error(tmp_path, capsys, text, words):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["cluster", "rehearse", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mbpo-ray: error: cluster file") and words in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_taken_gcs_port_is_named_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(fake_cluster, "_port_free", lambda port: port != fake_cluster.GCS_PORT)
    monkeypatch.setattr(fake_cluster, "PORT_WAIT_S", 0.0)
    out = io.StringIO()
    assert rehearse(str(REPO / "cluster" / "aws.yaml"), out=str(tmp_path / "r"), stream=out, kill=False) == 1
    assert "step 'head' failed: port 6379 is taken" in out.getvalue()


def test_train_on_the_ray_runtime_waits_for_an_autoscaler_that_can_hold_it(monkeypatch, tiny_config, capsys):
    from mbpo_ray.runtime.ray import capacity, cluster

    cfg = tiny_config(runtime="ray")
    cfg.ray.learner_gpus = 1.0
    types = [NodeType("head", {"CPU": 0.0}, 1), NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, 2),
             NodeType("cpu", {"CPU": 16.0}, 4)]
    head_only = [{"CPU": 0.0}]
    # before: "the Ray cluster lacks resources ... GPU: needs 1, the cluster has 0"
    monkeypatch.setattr(capacity, "cluster_capacity", lambda: Capacity(head_only, True, types, "from test"))
    assert cluster.check_resources(cfg) is True
    assert "waiting for the autoscaler to add nodes" in capsys.readouterr().err
    # without an autoscaler, or with node types that never hold it: refused at once
    monkeypatch.setattr(capacity, "cluster_capacity", lambda: Capacity(head_only))
    with pytest.raises(ConfigError, match="GPU: needs 1, the cluster has 0"):
        cluster.check_resources(cfg)
    monkeypatch.setattr(capacity, "cluster_capacity", lambda: Capacity(head_only, True, types[:1] + types[2:], "x"))
    with pytest.raises(ConfigError, match=r"GPU: needs 1, the cluster has at most 0.*an autoscaler with the node types"):
        cluster.check_resources(cfg)


# --- rehearsals of the shipped files ------------------------------------------------------------------

def read_record(path: Path):
    record = json.loads(path.read_text())
    return record, {step["name"]: step for step in record["steps"]}


@pytest.mark.slow
@pytest.mark.ray
def test_rehearsal_of_aws_with_a_bucket_and_an_unreachable_wandb(tmp_path, monkeypatch):
    # a W&B key in the environment (as the nodes' would be) and no route to W&B
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out, record_file = io.StringIO(), tmp_path / "record.json"
    code = rehearse(str(REPO / "cluster" / "aws.yaml"), storage="s3", out=str(tmp_path / "r"),
                    record_path=str(record_file), stream=out)
    assert code == 0, out.getvalue()
    record, steps = read_record(record_file)
    assert record["passed"] and list(steps)[:8] == ["cluster file", "storage", "head", "submit", "nodes launched",
                                                    "placement", "node lost", "job"]
    assert "cpu x1" in steps["nodes launched"]["detail"] and "gpu x" in steps["nodes launched"]["detail"]
    assert "Learner on gpu" in steps["placement"]["detail"] and "EnvCollector on cpu" in steps["placement"]["detail"]
    assert "went on from its checkpoint on another node" in steps["resumed elsewhere"]["detail"]
    assert "2 checkpoint.pt in 2 kept Tune checkpoint(s), none elsewhere" in steps["results"]["detail"]
    # the W&B run of the trial whose node was lost holds every epoch once (read back from the bucket)
    assert "offline W&B run(s) hold every epoch once, then the curve" in steps["results"]["detail"]
    assert "the W&B key is in none of" in steps["secrets"]["detail"]
    # the trial fell back to offline W&B (both of its processes, as the same run), the runs in the bucket
    runs = sorted((tmp_path / "r" / "downloaded" / "tune").glob("*/wandb/*-run-*"))
    assert len(runs) == 2 and all(r.name.startswith("offline-run-") for r in runs)
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 1


@pytest.mark.slow
@pytest.mark.ray
def test_rehearsal_of_the_kuberay_raycluster_groups(tmp_path):
    out, record_file = io.StringIO(), tmp_path / "record.json"
    # the groups' node kinds, placement and a whole job; losing a node mid-study and resuming is
    # the aws rehearsal's (above) and the same code whatever the cluster file
    code = rehearse(str(REPO / "cluster" / "kuberay" / "raycluster.yaml"), storage="local", out=str(tmp_path / "r"),
                    record_path=str(record_file), kill=False, stream=out)
    assert code == 0, out.getvalue()
    record, steps = read_record(record_file)
    assert steps["job"]["ok"] and "SUCCEEDED" in steps["job"]["detail"]
    assert "ModelTrainer on gpu" in steps["placement"]["detail"]
    study = yaml.safe_load((tmp_path / "r" / "study" / "study.yaml").read_text())
    assert study["storage_shared"] is True
    assert [k.name for k in node_kinds(yaml.safe_load((REPO / "cluster" / "kuberay" / "raycluster.yaml").read_text()))] \
        == ["head", "gpu", "cpu"]


def test_stopping_a_rehearsal_cluster_stops_its_processes_and_no_others():
    # `ray stop` would stop every Ray instance of the machine (a user's, another test's): the
    # rehearsal stops the processes that carry its cluster's id only
    import os
    import subprocess
    import sys

    def spawn(value):
        env = {**os.environ, fake_cluster.CLUSTER_ID_VARIABLE: value}
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)

    ours, other = spawn("ours"), spawn("other")
    try:
        for _ in range(50):  # the children have started once their environment is readable
            if fake_cluster.processes_with(fake_cluster.CLUSTER_ID_VARIABLE, "other"):
                break
        fake_cluster.stop_processes(fake_cluster.CLUSTER_ID_VARIABLE, "ours", grace_s=5)
        assert ours.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()
