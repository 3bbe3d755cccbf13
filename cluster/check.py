"""Checks of the cluster files (docs/clusters.md): `python cluster/check.py [FILE ...]`.

Without arguments it checks every file under cluster/. Each problem is one line that starts
with the file and the key it is about; the exit status is 1 when there is one.

- `ray up` files (cluster/aws.yaml, gcp.yaml, onprem.yaml): Ray's own cluster-config validation
  (the JSON schema Ray ships, ray/autoscaler/ray-schema.json) after the defaults `ray up` fills
  in (``prepare_config``), then ours: a head, GPU nodes that advertise LEARNER_RESOURCE, CPU
  worker nodes that advertise WORKER_RESOURCE, our images with the tag of this checkout (the
  package version of setup.cfg, the Ray version of constraints.txt, the Python of docker/),
  autoscaling bounds and an idle timeout.
- KubeRay files (cluster/kuberay/*.yaml): cluster/kuberay/schema.yaml, a JSON schema of the
  fields we use, then the same rules on the head and worker groups, and for a RayJob its
  entrypoint, shutdown and TTL.

The two custom resource names are the ones the study of the cluster files
(tune_configs/cluster.yaml) gives ``ray.worker_node_resource`` and ``ray.learner_node_resource``;
tests/test_cluster_files.py checks that they are exactly the names its trials ask for.
"""
from __future__ import annotations

import configparser
import copy
import logging
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import yaml

from mbpo_ray.cluster_files import (LEARNER_RESOURCE, OUR_RESOURCES, WORKER_RESOURCE, NodeKind,  # noqa: F401
                                    group_kind, node_kinds, quantity, ray_up_kinds)

REPO = Path(__file__).resolve().parents[1]
IMAGE_NAME = "mbpo-ray"
KUBERAY_SCHEMA = REPO / "cluster" / "kuberay" / "schema.yaml"
TAG_FORM = re.compile(r"(?P<package>[0-9][^-]*)-ray(?P<ray>[0-9][^-]*)-(?P<python>py[0-9]+)-(?P<flavor>[a-z0-9]+)")
BASE_IMAGE = re.compile(r"rayproject/ray:(?P<ray>[0-9][^-]*)-(?P<python>py[0-9]+)-(?P<flavor>gpu|cpu)")


# --- what this checkout builds ---------------------------------------------------------------------

class Versions(NamedTuple):
    package: str  # setup.cfg
    ray: str  # constraints.txt
    python: str  # docker/Dockerfile.gpu's base image, e.g. py311
    torch: str  # constraints-cpu.txt


def pinned(path: Path, name: str) -> Optional[str]:
    """The version ``name==X`` pins in a requirements or constraints file."""
    for line in path.read_text().splitlines():
        m = re.match(rf"^\s*{re.escape(name)}\s*==\s*([^\s;#]+)", line, re.IGNORECASE)
        if m:
            return m.group(1)
    return None


def base_image(dockerfile: Path) -> Optional[str]:
    """The image of the Dockerfile's (first) FROM line."""
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0].upper() == "FROM" and len(parts) > 1:
            return parts[1]
    return None


def versions(repo: Path = REPO) -> Versions:
    cfg = configparser.ConfigParser()
    cfg.read(repo / "setup.cfg")
    base = BASE_IMAGE.fullmatch(base_image(repo / "docker" / "Dockerfile.gpu") or "")
    return Versions(package=cfg["metadata"]["version"], ray=pinned(repo / "constraints.txt", "ray") or "?",
                    python=base.group("python") if base else "?",
                    torch=pinned(repo / "constraints-cpu.txt", "torch") or "?")


def image_tag(v: Versions, flavor: str) -> str:
    """The tag `make docker` gives the image of ``flavor`` (gpu or cpu)."""
    return f"{v.package}-ray{v.ray}-{v.python}-{flavor}"


def image_problem(where: str, image: Any, flavor: str, v: Versions) -> Optional[str]:
    """Why ``image`` is not this checkout's ``flavor`` image of mbpo-ray, or None."""
    expected = image_tag(v, flavor)
    if not isinstance(image, str) or not image:
        return f"{where}: no image; expected <registry>/{IMAGE_NAME}:{expected}"
    slash = image.rfind("/")
    colon = image.rfind(":")
    name, tag = (image[:colon], image[colon + 1:]) if colon > slash else (image, "")
    if name.rsplit("/", 1)[-1] != IMAGE_NAME:
        return (f"{where}: {image} is not an image of {IMAGE_NAME} (`make docker` builds "
                f"<registry>/{IMAGE_NAME}:{expected} from docker/Dockerfile.{flavor})")
    m = TAG_FORM.fullmatch(tag)
    if not m:
        return (f"{where}: {image} has the tag {tag or '(none)'}, not <version>-ray<Ray version>-<pyXY>-"
                f"<gpu|cpu>; expected {expected}")
    if m.group("ray") != v.ray:
        return (f"{where}: {image} is tagged for Ray {m.group('ray')}, but this checkout pins Ray {v.ray} "
                f"(constraints.txt, docker/Dockerfile.{flavor}); expected the tag {expected}")
    if m.group("python") != v.python:
        return (f"{where}: {image} is tagged for Python {m.group('python')}, but docker/ builds on "
                f"{v.python}; expected the tag {expected}")
    if m.group("package") != v.package:
        return (f"{where}: {image} is tagged mbpo-ray {m.group('package')}, but setup.cfg says "
                f"{v.package}; expected the tag {expected}")
    if m.group("flavor") != flavor:
        return (f"{where}: {image} is the {m.group('flavor')} image; this kind of node needs the {flavor} "
                f"image, tag {expected}")
    return None


# --- kinds of node ---------------------------------------------------------------------------------

def kind_problems(kinds: List[NodeKind], v: Versions) -> List[str]:
    """The rules every cluster file follows (docs/clusters.md, "Node types and custom resources")."""
    problems = []
    heads = [k for k in kinds if k.head]
    if len(heads) != 1:
        problems.append(f"head: {len(heads)} head node kinds; a cluster has exactly one")
    if not any(k.gpus > 0 for k in kinds):
        problems.append("no kind of node has a GPU; the learner and the model trainer need one "
                        f"(a node type with GPU and {LEARNER_RESOURCE} in its resources)")
    if not any(not k.head and k.gpus == 0 for k in kinds):
        problems.append(f"no CPU worker node type; collectors and rollout workers need one that "
                        f"advertises {WORKER_RESOURCE}")
    for k in kinds:
        extra = sorted(set(k.custom) - set(OUR_RESOURCES))
        if extra:
            problems.append(f"{k.where}: custom resource {', '.join(extra)} is asked for by no actor; "
                            f"ours are {', '.join(OUR_RESOURCES)} (ray.worker_node_resource, "
                            f"ray.learner_node_resource)")
        if k.gpus > 0:
            if LEARNER_RESOURCE not in k.custom:
                problems.append(f"{k.where}: a GPU node kind must advertise {LEARNER_RESOURCE} (the learner, "
                                f"model trainer and buffer actor ask for it)")
            if WORKER_RESOURCE in k.custom:
                problems.append(f"{k.where}: a GPU node kind must not advertise {WORKER_RESOURCE} (collectors "
                                f"and rollout workers would take its CPUs)")
            flavor = "gpu"
        else:
            if k.head:
                for name in OUR_RESOURCES:
                    if name in k.custom:
                        problems.append(f"{k.where}: the head (no GPU) must not advertise {name}; it runs the "
                                        f"study's driver only")
            else:
                if WORKER_RESOURCE not in k.custom:
                    problems.append(f"{k.where}: a CPU worker node kind must advertise {WORKER_RESOURCE} "
                                    f"(collectors and rollout workers ask for it)")
                if LEARNER_RESOURCE in k.custom:
                    problems.append(f"{k.where}: a CPU node kind must not advertise {LEARNER_RESOURCE}")
            flavor = "cpu"
        problem = image_problem(f"{k.where} image", k.image, flavor, v)
        if problem:
            problems.append(problem)
        if not k.head and k.max_count < 1:
            problems.append(f"{k.where}: at most {k.max_count} nodes of this kind; at least 1")
        if not k.head and k.min_count > k.max_count:
            problems.append(f"{k.where}: at least {k.min_count} but at most {k.max_count} nodes")
    return problems


# --- `ray up` files --------------------------------------------------------------------------------

def ray_validation(raw: Dict[str, Any]) -> Optional[str]:
    """Ray's own check of a `ray up` file, as `ray up` makes it: the defaults filled in
    (``prepare_config``), then ``validate_config`` (Ray's JSON schema and its rules). The
    provider's own lookups that need the cloud (instance types' resources, IAM) are left out."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(raw)))
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        return f"{path}: {exc.message} (Ray's cluster-config schema)"
    except Exception as exc:  # noqa: BLE001  (ValueError, AssertionError, click's abort: Ray's messages)
        return f"{str(exc).strip() or type(exc).__name__} (Ray's cluster-config validation)"
    return None


def check_ray_up(raw: Dict[str, Any], v: Versions) -> List[str]:
    local = (raw.get("provider") or {}).get("type") == "local"
    if not local:
        if "head_node_type" not in raw:
            types = ", ".join(raw.get("available_node_types") or {}) or "none"
            return [f"head_node_type: missing; it names the node type of the head (node types: {types}); "
                    f"without it `ray up` fills in its own default type, which this file does not define"]
        if "idle_timeout_minutes" not in raw:
            return ["idle_timeout_minutes: missing; idle worker nodes would stay for Ray's default only"]
    problem = ray_validation(raw)
    if problem:
        return [problem]
    docker = raw.get("docker") or {}
    problems = [f"docker.{key}: missing; every node runs our image" for key in ("image", "container_name")
                if not docker.get(key)]
    provider = (raw.get("provider") or {}).get("type")
    if provider == "aws":
        problems += aws_problems(raw)
    elif provider == "gcp":
        problems += gcp_problems(raw)
    return problems + kind_problems(ray_up_kinds(raw), v)


def aws_problems(raw: Dict[str, Any]) -> List[str]:
    """Every node type names its machine image (without one `ray up` falls back to an old Ubuntu
    18.04 Deep Learning AMI, whose driver may not run the GPU image's CUDA), and every worker
    type an instance profile (`ray up` gives one to the head only; a worker without one cannot
    write the study's bucket)."""
    problems = []
    head = raw.get("head_node_type")
    for name, spec in (raw.get("available_node_types") or {}).items():
        config = (spec or {}).get("node_config") or {}
        if not config.get("ImageId"):
            problems.append(f"available_node_types.{name}.node_config.ImageId: missing; `ray up` would boot an old "
                            f"Ubuntu 18.04 Deep Learning AMI whose NVIDIA driver may not run the image's CUDA "
                            f"(docs/clusters.md, \"Machine images\")")
        if name != head and not config.get("IamInstanceProfile"):
            problems.append(f"available_node_types.{name}.node_config.IamInstanceProfile: missing; `ray up` gives "
                            f"an instance profile to the head only, and a worker without one cannot write the "
                            f"study's S3 bucket (e.g. {{Name: ray-autoscaler-v1}})")
    return problems


def gcp_problems(raw: Dict[str, Any]) -> List[str]:
    """GCE's ``scheduling`` is an object; a VM with a GPU must stop on host maintenance, and a
    preemptible one must also never restart by itself."""
    problems = []
    for name, spec in (raw.get("available_node_types") or {}).items():
        spec = spec or {}
        config = spec.get("node_config") or {}
        where = f"available_node_types.{name}.node_config.scheduling"
        scheduling = config.get("scheduling")
        if scheduling is not None and not isinstance(scheduling, dict):
            problems.append(f"{where}: a {type(scheduling).__name__}; GCE takes an object "
                            f"(e.g. {{onHostMaintenance: TERMINATE}})")
            continue
        scheduling = scheduling or {}
        gpu = bool(config.get("guestAccelerators")) or float((spec.get("resources") or {}).get("GPU", 0) or 0) > 0
        if gpu and scheduling.get("onHostMaintenance") != "TERMINATE":
            problems.append(f"{where}.onHostMaintenance: must be TERMINATE on a node type with a GPU (GCE cannot "
                            f"live-migrate a VM with a GPU)")
        if scheduling.get("preemptible") and (scheduling.get("onHostMaintenance") != "TERMINATE"
                                               or scheduling.get("automaticRestart") is not False):
            problems.append(f"{where}: a preemptible VM needs onHostMaintenance: TERMINATE and "
                            f"automaticRestart: false")
    return problems


# --- KubeRay files ---------------------------------------------------------------------------------

# The vCPUs of whole nodes of the common sizes: a pod that asks for as many never fits one, since
# the kubelet and the DaemonSets reserve part of every node.
WHOLE_NODE_CPUS = (2, 4, 8, 16, 32, 48, 64, 96, 128, 192)


def pod_problems(group: Dict[str, Any], where: str, head: bool) -> List[str]:
    """A worker pod asks for less than a whole node's CPUs; every pod has a memory-backed
    /dev/shm (Ray's object store lives there; a container's own is 64 MB)."""
    problems = []
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    requests = (container.get("resources") or {}).get("requests") or (container.get("resources") or {}).get("limits") or {}
    if not head and "cpu" in requests and quantity(requests["cpu"]) in WHOLE_NODE_CPUS:
        problems.append(f"{where}: the pod requests {requests['cpu']} CPUs, all the vCPUs of a node of that size, "
                        f"and would never be scheduled (the kubelet and DaemonSets reserve some); request less "
                        f"(e.g. {quantity(requests['cpu']) - 1:g} for a {requests['cpu']}-vCPU node)")
    memory_volumes = {v["name"] for v in pod.get("volumes") or []
                      if (v.get("emptyDir") or {}).get("medium") == "Memory"}
    if not any(m["mountPath"].rstrip("/") == "/dev/shm" and m["name"] in memory_volumes
               for m in container.get("volumeMounts") or []):
        problems.append(f"{where}: no memory-backed /dev/shm (an emptyDir volume with medium: Memory mounted at "
                        f"/dev/shm); Ray's object store would get a container's 64 MB")
    return problems


def raycluster_problems(spec: Dict[str, Any], where: str, v: Versions) -> List[str]:
    problems = pod_problems(spec["headGroupSpec"], f"{where}.headGroupSpec", True)
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        problems += pod_problems(group, f"{where}.workerGroupSpecs[{group.get('groupName', i)}]", False)
    if str(spec.get("rayVersion")) != v.ray:
        problems.append(f"{where}.rayVersion: {spec.get('rayVersion')!r}, but this checkout pins Ray {v.ray} "
                        f"(constraints.txt)")
    kinds = [group_kind(f"{where}.headGroupSpec", spec["headGroupSpec"], True)]
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        name = group.get("groupName", i)
        kinds.append(group_kind(f"{where}.workerGroupSpecs[{name}]", group, False))
        replicas = group.get("replicas", group.get("minReplicas", 0))
        if not group.get("minReplicas", 0) <= replicas <= group.get("maxReplicas", 0):
            problems.append(f"{where}.workerGroupSpecs[{name}].replicas: {replicas} is not within "
                            f"[minReplicas, maxReplicas]")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append(f"{where}.enableInTreeAutoscaling: must be true (worker groups scale between "
                        f"minReplicas and maxReplicas)")
    elif "idleTimeoutSeconds" not in (spec.get("autoscalerOptions") or {}):
        problems.append(f"{where}.autoscalerOptions.idleTimeoutSeconds: missing; idle worker pods would stay "
                        f"for the autoscaler's default only")
    return problems + kind_problems(kinds, v)


def rayjob_problems(spec: Dict[str, Any], v: Versions, repo: Path) -> List[str]:
    problems = []
    words = shlex.split(spec.get("entrypoint", ""))
    if words[:2] != ["mbpo-ray", "sweep"] or len(words) < 3:
        problems.append(f"spec.entrypoint: {spec.get('entrypoint')!r}; expected mbpo-ray sweep "
                        f"tune_configs/<study>.yaml --out <shared folder>")
    elif not (repo / words[2]).is_file():
        problems.append(f"spec.entrypoint: {words[2]} is not a study file of this checkout (the image holds "
                        f"tune_configs/ in its working directory)")
    out = words[words.index("--out") + 1] if "--out" in words[:-1] else None
    cluster = spec["rayClusterSpec"]
    groups = [cluster["headGroupSpec"]] + list(cluster.get("workerGroupSpecs") or [])
    mounted = set.intersection(*[{m["mountPath"].rstrip("/") for m in
                                  g["template"]["spec"]["containers"][0].get("volumeMounts") or []} for g in groups])
    if out is None:
        problems.append("spec.entrypoint: no --out; the study folder must be one every pod can write (a volume "
                        "every pod mounts, or an s3:// or gs:// URI), not the default runs/sweeps")
    elif not out.startswith(("s3://", "gs://")) and not any(out == m or out.startswith(m + "/") for m in mounted):
        problems.append(f"spec.entrypoint: --out {out} is neither under a volume that every pod mounts "
                        f"({', '.join(sorted(mounted)) or 'none'}) nor an s3:// or gs:// URI")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("spec.shutdownAfterJobFinishes: must be true (the cluster goes away with the job)")
    if not isinstance(spec.get("ttlSecondsAfterFinished"), int):
        problems.append("spec.ttlSecondsAfterFinished: missing; seconds the finished cluster is kept")
    return problems + raycluster_problems(spec["rayClusterSpec"], "spec.rayClusterSpec", v)


def check_kuberay(doc: Dict[str, Any], v: Versions, repo: Path = REPO) -> List[str]:
    import jsonschema

    schema = yaml.safe_load(KUBERAY_SCHEMA.read_text())
    kind = doc.get("kind")
    if kind not in schema["$defs"] or not kind[:1].isupper():
        return [f"kind: {kind!r}; this checker knows {', '.join(k for k in schema['$defs'] if k[:1].isupper())}"]
    validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{kind}"})
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        return [f"{path}: {error.message} (cluster/kuberay/schema.yaml)"]
    if kind == "RayCluster":
        return raycluster_problems(doc["spec"], "spec", v)
    if kind == "RayJob":
        return rayjob_problems(doc["spec"], v, repo)
    return []


# --- files -----------------------------------------------------------------------------------------

def check_text(text: str, name: str, v: Optional[Versions] = None) -> List[str]:
    """The problems of one cluster file's text, each as ``name: key: what``."""
    v = v or versions()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        return [f"{name}: not valid YAML: {exc}"]
    problems = []
    for doc in docs:
        if not isinstance(doc, dict):
            problems.append(f"{name}: expected a mapping, got {type(doc).__name__}")
        elif "apiVersion" in doc:
            problems += [f"{name}: {p}" for p in check_kuberay(doc, v)]
        else:
            problems += [f"{name}: {p}" for p in check_ray_up(doc, v)]
    return problems


def cluster_files(repo: Path = REPO) -> List[Path]:
    """Every cluster file of the checkout (the KubeRay schema aside)."""
    files = sorted((repo / "cluster").glob("*.yaml")) + sorted((repo / "cluster" / "kuberay").glob("*.yaml"))
    return [f for f in files if f != KUBERAY_SCHEMA]


def main(argv: Optional[List[str]] = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or cluster_files()
    v = versions()
    problems = []
    for path in paths:
        problems += check_text(path.read_text(), str(path), v)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{len(paths)} cluster file{'s' if len(paths) != 1 else ''}: no problem (images {IMAGE_NAME}:"
              f"{image_tag(v, 'gpu')} and -cpu)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
