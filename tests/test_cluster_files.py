"""The cluster files, images and pins of docs/clusters.md, without a cluster or Docker: every
`ray up` file passes Ray's own cluster-config validation after the defaults `ray up` fills in,
and our rules (cluster/check.py); the KubeRay files pass the schema of the fields we use; the
images' tags, the Dockerfiles' base images and pins, setup.cfg, the constraints files and the
installed Ray agree; the Dockerfiles pass a lint of their own; the cluster files declare exactly
the custom resources the cluster study's actors ask for, and every trial of it fits; broken
cluster files fail with a message naming the problem."""
from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from mbpo_ray.runtime.ray.cluster import role_resources
from mbpo_ray.runtime.ray.capacity import total
from mbpo_ray.tune.study import load_study, validate_study

REPO = Path(__file__).resolve().parents[1]
RAY_UP_FILES = ("aws.yaml", "gcp.yaml", "onprem.yaml")
KUBERAY_FILES = ("raycluster.yaml", "rayjob.yaml", "studies-pvc.yaml")
CLUSTER_STUDY = REPO / "tune_configs" / "cluster.yaml"
DOCKERFILES = {"gpu": REPO / "docker" / "Dockerfile.gpu", "cpu": REPO / "docker" / "Dockerfile.cpu"}


def _load_check():
    spec = importlib.util.spec_from_file_location("cluster_check", REPO / "cluster" / "check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


check = _load_check()
VERSIONS = check.versions()


def ray_up(name: str) -> Path:
    return REPO / "cluster" / name


def kuberay(name: str) -> Path:
    return REPO / "cluster" / "kuberay" / name


def problems_of(path: Path, text: str = None) -> List[str]:
    return check.check_text(path.read_text() if text is None else text, path.name, VERSIONS)


def broken(path: Path, old: str, new: str) -> List[str]:
    """The problems of ``path`` with one change; the change must apply exactly once."""
    text = path.read_text()
    assert text.count(old) == 1, old
    return problems_of(path, text.replace(old, new))


# --- the shipped files pass ------------------------------------------------------------------------

def test_every_cluster_file_is_checked():
    assert {p.name for p in check.cluster_files()} == set(RAY_UP_FILES) | set(KUBERAY_FILES)


@pytest.mark.parametrize("name", RAY_UP_FILES)
def test_ray_up_file_passes_rays_validation_after_defaults_and_our_rules(name):
    assert problems_of(ray_up(name)) == []
    # what `ray up` works from: Ray's defaults filled in, one head type, our images and commands
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(ray_up(name).read_text())
    prepared = prepare_config(raw)
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["idle_timeout_minutes"] > 0 and prepared["max_workers"] >= 1
    # our setup commands replace Ray's defaults (which would pip-install a Ray nightly wheel)
    assert not any("ray-wheels" in c for c in prepared["head_setup_commands"] + prepared["worker_setup_commands"])
    assert prepared["docker"]["container_name"]


@pytest.mark.parametrize("name", KUBERAY_FILES)
def test_kuberay_file_passes_the_schema_of_the_fields_we_use(name):
    assert problems_of(kuberay(name)) == []


def test_rayjob_runs_the_raycluster_spec_and_a_shipped_study():
    cluster = yaml.safe_load(kuberay("raycluster.yaml").read_text())
    job = yaml.safe_load(kuberay("rayjob.yaml").read_text())
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    words = job["spec"]["entrypoint"].split()
    assert words[:3] == ["mbpo-ray", "sweep", "tune_configs/cluster.yaml"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["ttlSecondsAfterFinished"] > 0
    # the study folder is on the claim every pod mounts, which is ReadWriteMany
    claim = yaml.safe_load(kuberay("studies-pvc.yaml").read_text())
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    groups = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    for group in groups:
        pod = group["template"]["spec"]
        assert {"name": "studies", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in pod["volumes"]
        assert {"name": "studies", "mountPath": "/mnt/mbpo"} in pod["containers"][0]["volumeMounts"]
    assert words[words.index("--out") + 1].startswith("/mnt/mbpo/")


# Each defect a first deployment would meet, flagged on a copy of the shipped file that has it
# (the shipped files had each of these before they were fixed).
@pytest.mark.parametrize("path, old, new, words", [
    (ray_up("gcp.yaml"), "scheduling:\n        onHostMaintenance: TERMINATE\n        automaticRestart: true",
     "scheduling:\n        - onHostMaintenance: TERMINATE", ["gpu.node_config.scheduling: a list; GCE takes an object"]),
    (ray_up("gcp.yaml"), "        onHostMaintenance: TERMINATE\n        automaticRestart: true", "        automaticRestart: true",
     ["gpu.node_config.scheduling.onHostMaintenance: must be TERMINATE on a node type with a GPU"]),
    (ray_up("gcp.yaml"), "        preemptible: true\n        onHostMaintenance: TERMINATE\n        automaticRestart: false",
     "        preemptible: true", ["cpu.node_config.scheduling: a preemptible VM needs onHostMaintenance: TERMINATE"]),
    (ray_up("aws.yaml"), "      InstanceType: g5.2xlarge\n      ImageId: resolve:ssm:", "      InstanceType: g5.2xlarge\n      Foo: ",
     ["gpu.node_config.ImageId: missing; `ray up` would boot an old Ubuntu 18.04"]),
    (ray_up("aws.yaml"), "      InstanceType: c6i.4xlarge", "      InstanceType: c6i.4xlarge\n      X: 1", []),
    (kuberay("raycluster.yaml"), 'requests: {cpu: "14", memory: 26Gi}', 'requests: {cpu: "16", memory: 26Gi}',
     ["workerGroupSpecs[cpu]: the pod requests 16 CPUs, all the vCPUs of a node of that size"]),
    (kuberay("raycluster.yaml"), "        volumes:\n          - name: studies\n            persistentVolumeClaim: "
     "{claimName: mbpo-studies}\n          - name: dshm\n            emptyDir: {medium: Memory}",
     "        volumes:\n          - name: studies\n            persistentVolumeClaim: {claimName: mbpo-studies}",
     ["spec.headGroupSpec: no memory-backed /dev/shm"]),
])
def test_deployment_defects_of_cluster_files_are_flagged(path, old, new, words):
    found = broken(path, old, new)
    if not words:  # a harmless change stays clean: the rules are not tripped by anything
        assert found == []
    for text in words:
        assert any(text in line for line in found), (text, found)


def test_aws_workers_without_an_instance_profile_are_flagged():
    text = ray_up("aws.yaml").read_text()
    assert text.count("      IamInstanceProfile: {Name: ray-autoscaler-v1}\n") == 2
    found = problems_of(ray_up("aws.yaml"), text.replace("      IamInstanceProfile: {Name: ray-autoscaler-v1}\n", ""))
    assert [line.split(":")[1].strip() for line in found] == [
        "available_node_types.gpu.node_config.IamInstanceProfile", "available_node_types.cpu.node_config.IamInstanceProfile"]


def test_cluster_check_command_passes_on_the_checkout():
    result = subprocess.run([sys.executable, str(REPO / "cluster" / "check.py")], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problem" in result.stdout


# --- custom resources: exactly those our actors ask for --------------------------------------------

def cluster_docs() -> List[Tuple[str, Dict]]:
    docs = [(name, yaml.safe_load(ray_up(name).read_text())) for name in RAY_UP_FILES]
    docs += [(name, yaml.safe_load(kuberay(name).read_text())) for name in ("raycluster.yaml", "rayjob.yaml")]
    return docs


def fits(bundle: Dict[str, float], resources: Dict[str, float]) -> bool:
    # a machine of the local provider whose CPUs `ray start` detects (no --num-cpus) holds any CPU bundle
    return all(amount <= resources.get(name, float("inf") if name == "CPU" else 0.0) + 1e-9
               for name, amount in bundle.items())


def test_the_cluster_study_asks_for_the_custom_resources_the_cluster_files_declare():
    plans = validate_study(load_study(CLUSTER_STUDY))
    cfg = plans[0].cfg
    # which role asks for which: collectors and rollout workers for the worker resource, the
    # learner, model trainer and buffer actor for the learner resource (which GPU nodes carry)
    for role in ("collector", "rollout_worker"):
        assert check.WORKER_RESOURCE in role_resources(cfg, role) and check.LEARNER_RESOURCE not in role_resources(cfg, role)
    for role in ("learner", "model_trainer", "buffer"):
        assert check.LEARNER_RESOURCE in role_resources(cfg, role) and check.WORKER_RESOURCE not in role_resources(cfg, role)
    assert role_resources(cfg, "learner")["GPU"] > 0 and role_resources(cfg, "model_trainer")["GPU"] > 0
    asked = {name for p in plans for bundle in p.bundles for name in bundle if name not in ("CPU", "GPU")}
    assert asked == {check.WORKER_RESOURCE, check.LEARNER_RESOURCE}
    for name, doc in cluster_docs():
        kinds = check.node_kinds(doc)
        declared = {r for k in kinds for r in k.custom}
        assert declared == asked, name
        for plan in plans:
            # every actor's bundle fits a kind of node: the learner resource only on GPU kinds,
            # the worker resource only on CPU kinds
            for bundle in plan.bundles:
                hosts = [k for k in kinds if fits(bundle, k.resources)]
                assert hosts, (name, bundle)
                if check.LEARNER_RESOURCE in bundle:
                    assert all(k.gpus > 0 for k in hosts), (name, bundle)
                if check.WORKER_RESOURCE in bundle:
                    assert all(k.gpus == 0 and not k.head for k in hosts), (name, bundle)
            # and the whole trial fits the cluster at its largest
            largest: Dict[str, float] = {}
            for k in kinds:
                for r, amount in k.resources.items():
                    largest[r] = largest.get(r, 0.0) + amount * (1 if k.head else k.max_count)
            assert fits(total(plan.bundles), {r: a for r, a in largest.items() if r != "CPU" or a > 0}), name


# --- versions: images, Dockerfiles, setup.cfg, constraints, the installed Ray -----------------------

def install_requires() -> List[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [Requirement(line) for line in cfg["options"]["install_requires"].strip().splitlines() if line.strip()]


def constraint_pins(path: Path) -> Dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = spec.version
    return pins


def test_pins_satisfy_setup_cfg_and_match_the_installed_ray():
    import ray

    pins = constraint_pins(REPO / "constraints.txt")
    for req in install_requires():
        if req.name == "torch":  # each image installs its own build (docs/clusters.md, "Images")
            assert "torch" not in pins
            continue
        assert req.name.lower() in pins, f"constraints.txt pins no {req.name}"
        assert req.specifier.contains(pins[req.name.lower()]), (req, pins[req.name.lower()])
    assert set(pins) == {r.name.lower() for r in install_requires() if r.name != "torch"}
    # CI installs with constraints-cpu.txt, which takes these pins and the CPU torch
    cpu = REPO / "constraints-cpu.txt"
    assert "-c constraints.txt" in [line.strip() for line in cpu.read_text().splitlines()]
    assert VERSIONS.torch == constraint_pins(cpu)["torch"]
    # the Ray the tests run is the Ray of the images (a driver and its cluster must agree)
    assert ray.__version__ == pins["ray"] == VERSIONS.ray
    # the images' Python is one setup.cfg allows
    assert re.fullmatch(r"py3\d+", VERSIONS.python)
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert Version(f"3.{VERSIONS.python[3:]}") in SpecifierSet(cfg["options"]["python_requires"])


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_dockerfile_builds_on_rays_image_of_our_versions_with_our_pins(flavor):
    instructions = parse_dockerfile(DOCKERFILES[flavor].read_text())
    base = next(args for op, args, _ in instructions if op == "FROM")
    assert base == f"rayproject/ray:{VERSIONS.ray}-{VERSIONS.python}-{flavor}"
    args = dict(a.split("=", 1) for op, a, _ in instructions if op == "ARG" and "=" in a)
    assert args["TORCH_VERSION"] == VERSIONS.torch
    labels = " ".join(a for op, a, _ in instructions if op == "LABEL")
    assert f'org.opencontainers.image.version="{VERSIONS.package}"' in labels
    run = " ".join(a for op, a, _ in instructions if op == "RUN")
    assert "-c /tmp/mbpo-ray-src/constraints.txt /tmp/mbpo-ray-src" in run  # the package, with our pins
    assert f"ray.__version__ == '{VERSIONS.ray}'" in run  # the build fails if pip changed Ray
    assert '"torch==${TORCH_VERSION}"' in run
    # the CPU image takes torch's CPU build; the GPU image PyPI's (CUDA) build
    assert ("download.pytorch.org/whl/cpu" in DOCKERFILES[flavor].read_text()) == (flavor == "cpu")


def test_make_docker_tags_the_images_the_cluster_files_name():
    result = subprocess.run(["make", "-s", "-n", "docker", "IMAGE=registry.example.com/mbpo-ray"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    built = dict(re.findall(r"-f docker/Dockerfile\.(\w+) -t (\S+) \.", result.stdout))
    assert built == {flavor: f"registry.example.com/mbpo-ray:{check.image_tag(VERSIONS, flavor)}"
                     for flavor in ("gpu", "cpu")}
    named = set()
    for _, doc in cluster_docs():
        named |= {k.image for k in check.node_kinds(doc)}
    assert named == set(built.values())


# --- a lint of the Dockerfiles ---------------------------------------------------------------------

INSTRUCTIONS = {"FROM", "ARG", "LABEL", "USER", "ENV", "WORKDIR", "COPY", "RUN", "CMD", "ENTRYPOINT", "EXPOSE",
                "ADD", "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}


def parse_dockerfile(text: str) -> List[Tuple[str, str, int]]:
    """(instruction, arguments, line) of each instruction: comments and parser directives
    dropped, lines continued with a backslash joined."""
    out, pending, start = [], "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # a comment (also inside a continued instruction) or a blank line
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        op, _, args = whole.partition(" ")
        out.append((op.upper(), " ".join(args.split()), start))
    assert not pending, "the last instruction ends with a line continuation"
    return out


def dockerignore_excludes(path: str, patterns: List[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a folder above it decides."""
    def regex(pattern: str) -> re.Pattern:
        parts = []
        for piece in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
            parts.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(piece, re.escape(piece)))
        return re.compile("".join(parts) + "$")

    prefixes = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if any(regex(pattern.lstrip("!")).match(p) for p in prefixes):
            excluded = not negate
    return excluded


def lint(flavor: str) -> List[str]:
    """Our rules for a Dockerfile; each problem names its line."""
    path = DOCKERFILES[flavor]
    instructions = parse_dockerfile(path.read_text())
    ignore = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.strip().startswith("#")]
    problems = []
    first = [op for op, _, _ in instructions if op != "ARG"][:1]
    if first != ["FROM"]:
        problems.append("the first instruction (after ARGs) is not FROM")
    users = [(args, n) for op, args, n in instructions if op == "USER"]
    if not users or users[-1][0].split(":")[0] in ("root", "0"):
        problems.append("the image does not end as a non-root user")
    for op, args, n in instructions:
        where = f"{path.name}:{n}"
        if op not in INSTRUCTIONS:
            problems.append(f"{where}: unknown instruction {op}")
        if op == "FROM" and (":" not in args or args.endswith(":latest")):
            problems.append(f"{where}: base image {args} without a fixed tag")
        if op == "ADD":
            problems.append(f"{where}: ADD (use COPY: no URLs or archives unpacked behind the reader's back)")
        if op == "WORKDIR" and not args.startswith("/"):
            problems.append(f"{where}: WORKDIR {args} is not absolute")
        if op == "RUN":
            for command in re.split(r"&&|;", args):
                if "pip install" in command and "--no-cache-dir" not in command:
                    problems.append(f"{where}: pip install without --no-cache-dir")
                if re.search(r"\bsudo\b", command):
                    problems.append(f"{where}: sudo")
                if "apt-get install" in command and "--no-install-recommends" not in command:
                    problems.append(f"{where}: apt-get install without --no-install-recommends")
        if op == "COPY":
            words = args.split()
            flags = [w for w in words if w.startswith("--")]
            sources = [w for w in words if not w.startswith("--")][:-1]
            if not any(f.startswith("--chown=") and f.split("=", 1)[1].split(":")[0] not in ("root", "0")
                       for f in flags):
                problems.append(f"{where}: COPY without --chown to the non-root user")
            for source in sources:
                if not (REPO / source).exists():
                    problems.append(f"{where}: COPY {source}: no such file in the repository")
                elif dockerignore_excludes(source, ignore):
                    problems.append(f"{where}: COPY {source}: .dockerignore leaves it out of the build context")
    return problems


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_dockerfile_passes_the_lint(flavor):
    assert lint(flavor) == []


def test_dockerignore_keeps_the_build_context_to_what_the_images_copy():
    ignore = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.strip().startswith("#")]
    for path in (".venv/bin/python", "runs/x/metrics.jsonl", ".git/HEAD", "tests/test_sweep.py",
                 "benchmarks/results/RESULTS.md", "mbpo_ray/__pycache__/cli.cpython-311.pyc", "docs/README.md"):
        assert dockerignore_excludes(path, ignore), path
    for path in ("mbpo_ray/cli.py", "mbpo_ray/tune/sweep.py", "setup.cfg", "constraints.txt",
                 "tune_configs/smoke.yaml", "README.md", "pyproject.toml"):
        assert not dockerignore_excludes(path, ignore), path


def test_the_lint_finds_what_it_looks_for(monkeypatch, tmp_path):
    text = DOCKERFILES["cpu"].read_text()
    bad = (text.replace("--no-cache-dir --index-url", "--index-url")
           .replace("COPY --chown=ray:users tune_configs ./tune_configs", "ADD tune_configs ./tune_configs")
           .rsplit("USER ray", 1)[0] + "USER root\n")
    (tmp_path / "Dockerfile.cpu").write_text(bad)
    monkeypatch.setitem(DOCKERFILES, "cpu", tmp_path / "Dockerfile.cpu")
    problems = lint("cpu")
    assert any("pip install without --no-cache-dir" in p for p in problems)
    assert any("ADD" in p for p in problems)
    assert "the image does not end as a non-root user" in problems


# --- broken cluster files fail, naming the problem -------------------------------------------------

def test_unknown_field_is_named():
    (problem,) = broken(ray_up("aws.yaml"), "idle_timeout_minutes: 10", "idle_timeout_minutes: 10\nidle_timout_minutes: 5")
    assert "idle_timout_minutes" in problem and "Ray's cluster-config schema" in problem
    (problem,) = broken(ray_up("gcp.yaml"), "    max_workers: 16\n", "    max_worker: 16\n")
    assert problem.startswith("gcp.yaml: available_node_types.cpu: ") and "'max_worker' was unexpected" in problem
    (problem,) = broken(kuberay("raycluster.yaml"), "maxReplicas: 16", "maxReplica: 16")
    assert "'maxReplica' was unexpected" in problem
    assert problem.startswith("raycluster.yaml: spec.workerGroupSpecs.1")


def test_image_tag_of_another_ray_version_is_named():
    problems = broken(ray_up("aws.yaml"), "worker_image: registry.example.com/mbpo-ray:0.1.0-ray2.60.0-py311-gpu",
                      "worker_image: registry.example.com/mbpo-ray:0.1.0-ray2.59.0-py311-gpu")
    assert problems == [f"aws.yaml: available_node_types.gpu image: registry.example.com/mbpo-ray:0.1.0-ray2.59.0-"
                        f"py311-gpu is tagged for Ray 2.59.0, but this checkout pins Ray {VERSIONS.ray} "
                        f"(constraints.txt, docker/Dockerfile.gpu); expected the tag "
                        f"{check.image_tag(VERSIONS, 'gpu')}"]
    (problem,) = broken(ray_up("onprem.yaml"), "head_image: registry.example.com/mbpo-ray:0.1.0-ray2.60.0-py311-gpu",
                        "head_image: registry.example.com/mbpo-ray:0.1.0-ray2.61.0-py311-gpu")
    assert "head_start_ray_commands image" in problem and "tagged for Ray 2.61.0" in problem
    (problem,) = broken(kuberay("raycluster.yaml"), 'rayVersion: "2.60.0"', 'rayVersion: "2.59.0"')
    assert problem == f"raycluster.yaml: spec.rayVersion: '2.59.0', but this checkout pins Ray {VERSIONS.ray} (constraints.txt)"


def test_missing_head_node_type_is_named():
    (problem,) = broken(ray_up("aws.yaml"), "head_node_type: head\n", "")
    assert problem.startswith("aws.yaml: head_node_type: missing") and "head, gpu, cpu" in problem
    # Ray's own validation says the same of a head type that is not one of the node types
    (problem,) = broken(ray_up("gcp.yaml"), "head_node_type: head\n", "head_node_type: ray_head_default\n")
    assert "head_node_type" in problem and "Ray's cluster-config validation" in problem
    (problem,) = broken(ray_up("onprem.yaml"), "  head_ip: 192.168.1.10\n", "")
    assert "head_ip" in problem
    (problem,) = broken(kuberay("rayjob.yaml"), "  rayClusterSpec:\n", "  rayClusterSpecs:\n")
    assert "rayClusterSpec" in problem


def test_a_node_kind_without_its_custom_resource_is_named():
    (problem,) = broken(ray_up("aws.yaml"), "{CPU: 16, mbpo_worker: 100}", "{CPU: 16}")
    assert problem == ("aws.yaml: available_node_types.cpu: a CPU worker node kind must advertise mbpo_worker "
                       "(collectors and rollout workers ask for it)")
    problems = broken(ray_up("gcp.yaml"), "{CPU: 8, GPU: 1, mbpo_learner: 100}", "{CPU: 8, GPU: 1, mbpo_gpu: 100}")
    assert problems == [
        "gcp.yaml: available_node_types.gpu: custom resource mbpo_gpu is asked for by no actor; ours are "
        "mbpo_worker, mbpo_learner (ray.worker_node_resource, ray.learner_node_resource)",
        "gcp.yaml: available_node_types.gpu: a GPU node kind must advertise mbpo_learner (the learner, model "
        "trainer and buffer actor ask for it)"]
