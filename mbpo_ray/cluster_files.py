"""The kinds of node a cluster file declares (docs/clusters.md): the node types of a `ray up`
file, or the head and worker groups of a KubeRay RayCluster or RayJob. `cluster/check.py` checks
them against the project's rules; `mbpo-ray cluster rehearse` starts a local cluster of them.
Loads with yaml and the standard library only."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

WORKER_RESOURCE = "mbpo_worker"  # collectors and rollout workers (ray.worker_node_resource)
LEARNER_RESOURCE = "mbpo_learner"  # learner, model trainer, buffer actor (ray.learner_node_resource)
OUR_RESOURCES = (WORKER_RESOURCE, LEARNER_RESOURCE)


@dataclass
class NodeKind:
    """One kind of node of a cluster file: a node type of `ray up`, a group of KubeRay."""

    where: str  # the key path of its definition
    head: bool
    resources: Dict[str, float]  # CPU (absent: Ray detects it), GPU, custom resources
    max_count: int  # how many such nodes the cluster may have
    image: Optional[str]
    min_count: int = 0
    custom: Dict[str, float] = field(default_factory=dict)
    name: str = ""  # the node type's or the group's name ("head" for KubeRay's head group)

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0) or 0)



def ray_start_resources(commands: Any) -> Dict[str, float]:
    """CPUs, GPUs and custom resources that the `ray start` among ``commands`` declares."""
    out: Dict[str, float] = {}
    for command in commands or []:
        if "ray start" not in command:
            continue
        for part in command.split(";"):
            words = shlex.split(part)
            if words[:2] != ["ray", "start"]:
                continue
            i = 2
            while i < len(words):
                word = words[i]
                key, eq, value = word.partition("=")
                if not eq and i + 1 < len(words) and key in ("--num-cpus", "--num-gpus", "--resources"):
                    value, i = words[i + 1], i + 1
                if key == "--num-cpus":
                    out["CPU"] = float(value)
                elif key == "--num-gpus":
                    out["GPU"] = float(value)
                elif key == "--resources":
                    out.update({k: float(x) for k, x in json.loads(value).items()})
                i += 1
    return out


def ray_up_kinds(raw: Dict[str, Any]) -> List[NodeKind]:
    docker = raw.get("docker") or {}
    image = docker.get("image")
    head_image, worker_image = docker.get("head_image", image), docker.get("worker_image", image)
    if (raw.get("provider") or {}).get("type") == "local":
        ips = (raw.get("provider") or {}).get("worker_ips") or []
        head = ray_start_resources(raw.get("head_start_ray_commands"))
        worker = ray_start_resources(raw.get("worker_start_ray_commands"))
        count = min(len(ips), raw.get("max_workers", len(ips)))
        custom = lambda r: {k: x for k, x in r.items() if k not in ("CPU", "GPU")}  # noqa: E731
        return [NodeKind("head_start_ray_commands", True, head, 0, head_image, custom=custom(head), name="head"),
                NodeKind("worker_start_ray_commands", False, worker, count, worker_image,
                         min_count=raw.get("min_workers", len(ips)), custom=custom(worker), name="worker")]
    kinds = []
    for name, spec in (raw.get("available_node_types") or {}).items():
        spec = spec or {}
        resources = {k: float(x) for k, x in (spec.get("resources") or {}).items()}
        is_head = name == raw.get("head_node_type")
        node_image = (spec.get("docker") or {}).get("worker_image", worker_image)
        kinds.append(NodeKind(f"available_node_types.{name}", is_head, resources,
                              0 if is_head else int(spec.get("max_workers", raw.get("max_workers", 0))),
                              head_image if is_head else node_image, min_count=int(spec.get("min_workers", 0)),
                              custom={k: x for k, x in resources.items() if k not in ("CPU", "GPU")}, name=name))
    return kinds



def quantity(text: Any) -> float:
    """A Kubernetes quantity of CPUs or GPUs ("8", "500m", 2)."""
    text = str(text)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def start_param_resources(params: Dict[str, Any]) -> Dict[str, float]:
    """The custom resources of a group's rayStartParams (KubeRay passes the string to
    `ray start --resources`, so the JSON object is quoted once more)."""
    text = params.get("resources")
    if text is None:
        return {}
    text = str(text).strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"')
    return {k: float(x) for k, x in json.loads(text).items()}


def group_kind(where: str, group: Dict[str, Any], head: bool) -> NodeKind:
    """A KubeRay group as a kind of node: CPUs and GPUs from rayStartParams, else from the
    container's limits; custom resources from rayStartParams."""
    container = group["template"]["spec"]["containers"][0]
    limits = (container.get("resources") or {}).get("limits") or {}
    params = group.get("rayStartParams") or {}
    resources: Dict[str, float] = {}
    if "num-cpus" in params:
        resources["CPU"] = quantity(params["num-cpus"])
    elif "cpu" in limits:
        resources["CPU"] = quantity(limits["cpu"])
    if "num-gpus" in params:
        resources["GPU"] = quantity(params["num-gpus"])
    elif "nvidia.com/gpu" in limits:
        resources["GPU"] = quantity(limits["nvidia.com/gpu"])
    custom = start_param_resources(params)
    resources.update(custom)
    return NodeKind(where, head, resources, 0 if head else int(group.get("maxReplicas", 0)), container.get("image"),
                    min_count=int(group.get("minReplicas", 0)), custom=custom,
                    name="head" if head else str(group.get("groupName", where)))



def node_kinds(doc: Dict[str, Any]) -> List[NodeKind]:
    """The kinds of node of one cluster file's document (a `ray up` file, a RayCluster or a
    RayJob's cluster); none for other documents."""
    if "apiVersion" not in doc:
        return ray_up_kinds(doc)
    spec = doc.get("spec") or {}
    spec = spec.get("rayClusterSpec", spec) if doc.get("kind") == "RayJob" else spec
    if doc.get("kind") not in ("RayCluster", "RayJob"):
        return []
    return [group_kind("headGroupSpec", spec["headGroupSpec"], True)] + [
        group_kind(f"workerGroupSpecs[{g.get('groupName', i)}]", g, False)
        for i, g in enumerate(spec.get("workerGroupSpecs") or [])]
