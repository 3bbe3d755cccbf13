"""`mbpo-ray cluster rehearse CLUSTER.yaml`: a cloud launch rehearsed on this machine, step by step
(docs/clusters.md, "Before your first `ray up`").

1. cluster file: its node types (`ray up`) or groups (KubeRay), through mbpo_ray.cluster_files;
2. storage: a local folder declared shared (``local``/``nfs``: the files' NFS export or volume)
   or a bucket on a local S3 server (``s3``);
3. head: a local Ray head with the file's head resources and an autoscaler that adds its
   worker types from their ``min_workers`` (fake_cluster);
4. submit: the study, cut down to minutes (scaled_study), sent through the Jobs API as the README
   does: ``ray job submit --no-wait -- mbpo-ray sweep ...`` and ``ray job logs --follow``;
5. nodes launched: the autoscaler starts the worker types the trials wait for;
6. placement: every actor where the file says (learner, model trainer and buffer actor on
   ``mbpo_learner`` nodes, collectors and rollout workers on ``mbpo_worker`` nodes, no trial on
   a head without CPUs);
7. node lost: once a trial has a checkpoint, the node running its process is killed (as a spot
   node that disappears);
8. job: the job ends SUCCEEDED (``mbpo-ray sweep`` exited 0: every trial finished);
9. resumed elsewhere: the lost node's trial went on from its checkpoint on another node and
   reached its budget;
10. results: every trial's metrics are complete where the storage keeps them, each offline W&B
    run holds every epoch of its metrics once (mbpo_ray.wandb_records); in a bucket only the
    kept checkpoints; the W&B key (when set) is in no file of the study nor of Ray's logs.

Each step prints one line with its verdict and time; a failed step stops the rehearsal with one
line naming the step, what went wrong and what to change. ``--record FILE`` writes the steps as
JSON (benchmarks/results/rehearsal/).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from mbpo_ray.cluster_files import LEARNER_RESOURCE, WORKER_RESOURCE, NodeKind, node_kinds
from mbpo_ray.devices import LOGICAL_GPUS_VARIABLE, cpu_model
from mbpo_ray.rehearsal.fake_cluster import HEAD_NODE_ID
from mbpo_ray.errors import ConfigError

STORAGE_KINDS = ("local", "nfs", "s3")
SUBMIT_RETRY_S = 60  # how long a submission refused with "try again later" is retried
DEFAULT_STUDY = "tune_configs/cluster.yaml"
BUCKET = "mbpo-rehearsal"
LEARNER_ACTORS = ("Learner", "ModelTrainer", "BufferActor")
WORKER_ACTORS = ("EnvCollector", "RolloutWorker")
JOB_ACTORS = ("JobSupervisor",)  # Ray's own actor of a submitted job
TRIAL = "trial"  # how the placement line names the actor that runs a trial (Tune's trainable)
TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")


class RehearsalFailed(Exception):
    """A step that did not pass: ``step``, what happened, what to change."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


@dataclass
class Step:
    name: str
    ok: bool
    seconds: float
    detail: str


@dataclass
class Rehearsal:
    """What one rehearsal did; ``steps`` in order."""

    cluster_file: str
    study: str
    storage: str
    steps: List[Step] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def to_plain(self) -> Dict[str, Any]:
        return {"cluster_file": self.cluster_file, "study": self.study, "storage": self.storage,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_model(), "cores": os.cpu_count(),
                "seconds": round(time.monotonic() - self.started, 1),
                "passed": all(s.ok for s in self.steps),
                "steps": [{"name": s.name, "ok": s.ok, "seconds": round(s.seconds, 1), "detail": s.detail}
                          for s in self.steps]}


# --- reading the cluster file ---------------------------------------------------------------------

def read_cluster_file(path: Path) -> tuple:
    """(node kinds, the study a RayJob's entrypoint names or None) of a cluster file."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except OSError as exc:
        raise ConfigError(f"cluster file {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"cluster file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        try:
            kinds = node_kinds(doc)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"cluster file {path}: its node types cannot be read ({type(exc).__name__}: {exc}); "
                              f"run python cluster/check.py {path}") from None
        if kinds:
            study = None
            if doc.get("kind") == "RayJob":
                words = str((doc.get("spec") or {}).get("entrypoint", "")).split()
                study = words[2] if words[:2] == ["mbpo-ray", "sweep"] and len(words) > 2 else None
            return kinds, study
    raise ConfigError(f"cluster file {path}: no node types (available_node_types and head_node_type of a `ray up` "
                      f"file, or the headGroupSpec and workerGroupSpecs of a KubeRay RayCluster or RayJob)")


def describe_kinds(kinds: List[NodeKind]) -> str:
    def res(k):
        return ", ".join(f"{v:g} {n}" for n, v in sorted(k.resources.items())) or "no resources stated"
    return "; ".join(f"{'head' if k.head else k.name} ({res(k)}"
                     + ("" if k.head else f", {k.min_count} to {k.max_count} nodes") + ")" for k in kinds)


# --- the rehearsal --------------------------------------------------------------------------------

class Runner:
    """Runs the steps, prints a line for each and records it."""

    def __init__(self, record: Rehearsal, stream):
        self.record, self.stream = record, stream

    def step(self, name: str, action: Callable[[], str]) -> None:
        start = time.monotonic()
        try:
            detail = action()
        except RehearsalFailed:
            raise
        except ConfigError as exc:
            self._add(name, False, start, str(exc))
            raise RehearsalFailed(name, str(exc)) from None
        self._add(name, True, start, detail)

    def fail(self, name: str, start: float, message: str) -> None:
        self._add(name, False, start, message)
        raise RehearsalFailed(name, message)

    def _add(self, name: str, ok: bool, start: float, detail: str) -> None:
        seconds = time.monotonic() - start
        self.record.steps.append(Step(name, ok, seconds, detail))
        self.stream.write(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail} ({seconds:.1f} s)\n")
        self.stream.flush()


def wait_for(what: Callable[[], Any], timeout_s: float, every_s: float = 2.0) -> Any:
    """``what()`` once it returns something true, or None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(every_s)


class ClusterView:
    """What the rehearsal reads of the running cluster, through Ray's State API at the head's
    dashboard (no driver of its own: a node's death is not this process's business)."""

    def __init__(self, dashboard: str):
        self.dashboard = dashboard

    def nodes(self) -> List[Dict[str, Any]]:
        from ray.util.state import list_nodes

        return [{"NodeID": n.node_id, "Resources": dict(n.resources_total or {})}
                for n in list_nodes(address=self.dashboard, filters=[("state", "=", "ALIVE")], limit=1000,
                                    detail=True, raise_on_missing_output=False)]

    def actors(self) -> List[Dict[str, Any]]:
        from ray.util.state import list_actors

        return [{"class_name": a.class_name, "node_id": a.node_id, "pid": a.pid}
                for a in list_actors(address=self.dashboard, filters=[("state", "=", "ALIVE")], limit=1000,
                                     raise_on_missing_output=False)]


def node_kind_of(resources: Dict[str, float], kinds: List[NodeKind]) -> str:
    """The name of the node kind whose custom resources a live node advertises ("head" for the
    head's kind, or for a node with none of the project's resources when the head has none)."""
    for kind in sorted(kinds, key=lambda k: k.head):
        if kind.custom and all(resources.get(k, 0) >= v - 1e-9 for k, v in kind.custom.items()):
            return "head" if kind.head else kind.name
    return "head" if not any(k in resources for k in (LEARNER_RESOURCE, WORKER_RESOURCE)) else "?"


def rehearse(cluster_file: str, study_file: Optional[str] = None, storage: str = "local",
             out: Optional[str] = None, record_path: Optional[str] = None, kill: bool = True,
             timeout_s: float = 600.0, dashboard_port: int = 8265, stream=None) -> int:
    """The rehearsal (the module docstring); 0 when every step passed, 1 when one failed."""
    from mbpo_ray.rehearsal.fake_cluster import FakeCluster, kill_node, rehearsed_types
    from mbpo_ray.rehearsal.local_s3 import LocalS3
    from mbpo_ray.rehearsal.scaled_study import write_scaled_study

    stream = stream or sys.stdout
    if storage not in STORAGE_KINDS:
        raise ConfigError(f"--storage {storage!r} is not allowed: one of {', '.join(STORAGE_KINDS)}")
    path = Path(cluster_file)
    kinds, job_study = read_cluster_file(path)
    study_source = Path(study_file or job_study or DEFAULT_STUDY)
    if not study_source.is_file():
        raise ConfigError(f"study file {study_source} not found (--study STUDY.yaml; the cluster files' study is "
                          f"{DEFAULT_STUDY}, relative to the repository)")
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="mbpo-ray-rehearsal-"))
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"--out {folder} already holds files; choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    record = Rehearsal(str(path), str(study_source), storage)
    runner = Runner(record, stream)
    stream.write(f"rehearsing {path} with {study_source} ({storage} storage) in {folder}\n")
    state: Dict[str, Any] = {}
    s3: Optional[LocalS3] = None
    cluster: Optional[FakeCluster] = None
    view: Optional[ClusterView] = None
    follower: Optional[subprocess.Popen] = None
    code = 1
    try:
        # 1. the cluster file
        types = rehearsed_types(kinds)
        runner.step("cluster file", lambda: describe_kinds(kinds) + "; rehearsed with at most "
                    f"{max(t.max_workers for t in types if not t.head)} node(s) per worker type")

        # 2. storage
        def make_storage() -> str:
            nonlocal s3
            if storage == "s3":
                s3 = LocalS3(BUCKET, log=folder / "s3.log")
                s3.start()
                state["out"] = f"s3://{BUCKET}/sweeps/rehearsal"
                return f"bucket s3://{BUCKET} on a local S3 server ({s3.endpoint})"
            state["out"] = str(folder / "study")
            return f"{state['out']}, a folder declared shared (storage_shared: the files' NFS export or volume)"
        runner.step("storage", make_storage)
        scaled = folder / "study.yaml"
        study = write_scaled_study(study_source, scaled, storage_shared=storage != "s3")
        from mbpo_ray.tune.study import validate_study

        ray_runtime = any(plan.runtime == "ray" for plan in validate_study(study))

        # 3. the head
        def start_head() -> str:
            nonlocal cluster, view
            env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                   "PYTHONUNBUFFERED": "1", LOGICAL_GPUS_VARIABLE: "1", **(s3.env if s3 else {})}
            cluster = FakeCluster(types, folder / "cluster", env, dashboard_port)
            cluster.start()
            view = ClusterView(cluster.dashboard)
            head = next(t for t in types if t.head)
            return (f"head up ({', '.join(f'{v:g} {k}' for k, v in head.resources.items()) or 'no resources'}), "
                    f"autoscaler started, Jobs API at {cluster.dashboard}")
        runner.step("head", start_head)

        # 4. submit through the Jobs API, as the README does
        def submit() -> str:
            job_id = f"mbpo-rehearsal-{int(time.time())}"
            command = [_ray(), "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id, "--no-wait",
                       "--", "mbpo-ray", "sweep", str(scaled), "--out", state["out"]]
            deadline = time.monotonic() + SUBMIT_RETRY_S
            while True:
                result = subprocess.run(command, capture_output=True, text=True, env=cluster.env, timeout=120)
                output = (result.stderr or result.stdout).strip()
                # the head's job agent comes up a little after the dashboard: Ray says "try again later"
                if result.returncode == 0 or "try again later" not in output or time.monotonic() > deadline:
                    break
                time.sleep(2.0)
            if result.returncode != 0:
                raise ConfigError(f"ray job submit failed: {output[-300:]}")
            state["job"] = job_id
            nonlocal follower
            follower = subprocess.Popen([_ray(), "job", "logs", "--address", cluster.dashboard, "--follow", job_id],
                                        stdout=open(folder / "job.log", "wb"), stderr=subprocess.STDOUT,
                                        env=cluster.env)
            return f"job {job_id}: mbpo-ray sweep {scaled.name} --out {state['out']} (its output: {folder / 'job.log'})"
        runner.step("submit", submit)
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(cluster.dashboard)

        def job_status() -> str:
            return str(client.get_job_status(state["job"])).split(".")[-1]

        def job_ended() -> bool:
            return job_status() in TERMINAL_JOB_STATES

        # 5. nodes launched by the autoscaler
        start = time.monotonic()
        needed = {k.name for k in kinds if not k.head and k.custom}

        def launched():
            found = {}
            for node in view.nodes():
                kind = node_kind_of(node["Resources"], kinds)
                if kind != "head":
                    found[kind] = found.get(kind, 0) + 1
            return found if needed <= set(found) else None
        found = wait_for(launched, min(300.0, timeout_s))
        if not found:
            runner.fail("nodes launched", start, f"the autoscaler did not start nodes of {', '.join(sorted(needed))} "
                        f"within 300 s; see {folder / 'cluster'} and {folder / 'job.log'}; check each worker type's "
                        f"resources and max_workers (maxReplicas) against the study's trials")
        runner.record.steps.append(Step("nodes launched", True, time.monotonic() - start,
                                        ", ".join(f"{k} x{n}" for k, n in sorted(found.items()))))
        stream.write(f"  ok   nodes launched: {', '.join(f'{k} x{n}' for k, n in sorted(found.items()))} "
                     f"({time.monotonic() - start:.1f} s)\n")

        # 6. placement: every actor on its kind of node
        start = time.monotonic()
        def placed():
            if job_ended():
                return "ended"
            actors = [{**a, "class_name": role_of(a["class_name"])} for a in view.actors()]
            classes = {a["class_name"] for a in actors}
            wanted = {TRIAL} | (set(LEARNER_ACTORS) | set(WORKER_ACTORS) if ray_runtime else set())
            return actors if wanted <= classes else None
        actors = wait_for(placed, min(300.0, timeout_s), every_s=1.0)
        if not actors or actors == "ended":
            runner.fail("placement", start, f"the trial's actors were not all seen running "
                        f"({'the job ended first' if actors == 'ended' else 'within 300 s'}); see {folder / 'job.log'}")
        nodes = {n["NodeID"]: n for n in view.nodes()}
        wrong = []
        where: Dict[str, str] = {}
        for actor in actors:
            node = nodes.get(actor["node_id"])
            kind = node_kind_of(node["Resources"], kinds) if node else "?"
            where[actor["class_name"]] = kind
            res = node["Resources"] if node else {}
            if actor["class_name"] in LEARNER_ACTORS and LEARNER_RESOURCE not in res:
                wrong.append(f"{actor['class_name']} on {kind}")
            if actor["class_name"] in WORKER_ACTORS and WORKER_RESOURCE not in res:
                wrong.append(f"{actor['class_name']} on {kind}")
            if actor["class_name"] == TRIAL and kind == "head" and res.get("CPU", 0) == 0:
                wrong.append("a trial on the head")
        if wrong:
            runner.fail("placement", start, f"{', '.join(wrong)}: give the GPU node type {LEARNER_RESOURCE} and the "
                        f"CPU worker type {WORKER_RESOURCE} in its resources (docs/clusters.md)")
        trial_node = next(a["node_id"] for a in actors if a["class_name"] == TRIAL)
        state["trial_node"] = trial_node
        detail = ", ".join(f"{c} on {k}" for c, k in sorted(where.items()))
        record.steps.append(Step("placement", True, time.monotonic() - start, detail))
        stream.write(f"  ok   placement: {detail} ({time.monotonic() - start:.1f} s)\n")

        # 7. a node lost mid-study, once the trial has a checkpoint
        if kill:
            start = time.monotonic()
            found = wait_for(lambda: "ended" if job_ended() else
                             ("checkpoint" if _has_checkpoint(state["out"], s3) else None),
                             min(600.0, timeout_s), every_s=0.5)
            if found != "checkpoint":
                runner.fail("node lost", start, f"no trial checkpoint while the job ran "
                            f"({'it ended first' if found else 'within 600 s'}); see {folder / 'job.log'}")
            # the node running the trial's process; where that is the head (an on-prem head with
            # CPUs), a node running its collectors or rollout workers: the head is never lost
            victim, state["lost"] = trial_node, "trial"
            if victim == HEAD_NODE_ID:
                victim = next((a["node_id"] for a in actors if a["class_name"] in WORKER_ACTORS
                               and a["node_id"] != HEAD_NODE_ID), None)
                state["lost"] = "workers"
            if victim is None:
                runner.fail("node lost", start, "every actor of the trial runs on the head: no worker node to lose")
            victim_kind = node_kind_of(nodes[victim]["Resources"], kinds)
            killed = kill_node(victim)
            if not killed:
                runner.fail("node lost", start, f"could not find the processes of node {victim[:12]}")
            state["killed"] = victim
            what = "the trial" if state["lost"] == "trial" else "the trial's collectors and rollout workers"
            detail = f"killed the {victim_kind} node running {what} ({killed} processes) after its first checkpoint"
            record.steps.append(Step("node lost", True, time.monotonic() - start, detail))
            stream.write(f"  ok   node lost: {detail} ({time.monotonic() - start:.1f} s)\n")

        # 8. the job ends
        start = time.monotonic()
        status = wait_for(lambda: job_status() if job_ended() else None, timeout_s, every_s=2.0)
        tail = _tail(folder / "job.log")
        if status != "SUCCEEDED":
            runner.fail("job", start, f"the job ended {status or 'not within the time limit'}; its last lines: {tail}")
        record.steps.append(Step("job", True, time.monotonic() - start, f"SUCCEEDED; {tail}"))
        stream.write(f"  ok   job: SUCCEEDED ({time.monotonic() - start:.1f} s)\n")

        # 9. the lost node's trial resumed elsewhere; 10. the results
        start = time.monotonic()
        results = _trial_results(state["out"], s3, folder / "downloaded")
        budget = study.env_steps
        short = {t: r[-1].get("env_steps") for t, r in results.items() if not r or r[-1].get("env_steps", 0) < budget}
        if not results or short:
            runner.fail("results", start, f"trials short of their {budget} env steps: {short or 'no trial results'}")
        if kill:
            # the trial that ran on the lost node failed there (Tune kept its error) and went on
            # from its checkpoint: its last results come from another node
            if state["lost"] == "trial":
                hit = [t for t in results if _failed_once(state["out"], s3, folder / "downloaded", t)]
                elsewhere = [t for t in hit if results[t][-1].get("node_id") not in (None, state["killed"])]
                if not hit or elsewhere != hit:
                    runner.fail("resumed elsewhere", start, f"trials that failed: {hit or 'none'}; ended on another "
                                f"node: {elsewhere or 'none'}; check max_failures and that the lost node's type "
                                f"may start another node (max_workers)")
                detail = f"{', '.join(hit)} failed with its node and went on from its checkpoint on another node"
            else:
                # the trial's collectors and rollout workers were lost: the trial recreates them
                # (perf/actor_restarts), or, when its group cannot be restored in place, it fails
                # and Tune restarts it from its checkpoint
                restarted = [t for t, r in results.items() if r[-1].get("perf/actor_restarts", 0) > 0]
                failed = [t for t in results if _failed_once(state["out"], s3, folder / "downloaded", t)]
                if not restarted and not failed:
                    runner.fail("resumed elsewhere", start, "no trial recreated its lost actors or restarted from its "
                                "checkpoint; check ray.max_actor_restarts, max_failures and that the worker type "
                                "may start another node")
                detail = (f"{', '.join(restarted)} recreated its lost actors on another node and finished"
                          if restarted else f"{', '.join(failed)} failed with its actors and went on from its "
                          f"checkpoint")
            record.steps.append(Step("resumed elsewhere", True, time.monotonic() - start, detail))
            stream.write(f"  ok   resumed elsewhere: {detail}\n")
        runner.step("results", lambda: _check_results(results, budget, state["out"], s3, folder))
        runner.step("secrets", lambda: _check_secrets(folder, state["out"], s3))
        code = 0
    except RehearsalFailed as exc:
        stream.write(f"mbpo-ray: error: rehearsal of {path}: {exc}\n")
    finally:
        if follower is not None:
            follower.terminate()
        if cluster is not None:
            teardown_start = time.monotonic()
            cluster.stop()
            record.steps.append(Step("teardown", True, time.monotonic() - teardown_start, "the rehearsal's cluster stopped"))
        if s3 is not None:
            s3.stop()
        total = time.monotonic() - record.started
        stream.write(f"rehearsal of {path}: {'passed' if code == 0 else 'FAILED'} in {total:.0f} s\n")
        if record_path:
            Path(record_path).parent.mkdir(parents=True, exist_ok=True)
            Path(record_path).write_text(json.dumps(record.to_plain(), indent=1) + "\n")
    return code


def _ray() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def role_of(class_name: str) -> str:
    """An actor's role as the placement line names it: ours by class name, Ray's job supervisor,
    else the actor of a trial (Tune names its class after the trainable's)."""
    if class_name in LEARNER_ACTORS + WORKER_ACTORS + JOB_ACTORS:
        return class_name
    return TRIAL


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return " | ".join(line.strip() for line in text[-lines:])


def _has_checkpoint(out: str, s3) -> bool:
    if s3 is not None:
        prefix = out.split(f"s3://{BUCKET}/", 1)[1] + "/tune/"
        return any("/checkpoint_" in key for key in s3.keys(prefix))
    return any(Path(out, "runs").glob("*/checkpoint.pt")) or any(Path(out, "runs").glob("*/seed*/checkpoint.pt"))


def _trial_results(out: str, s3, download: Path) -> Dict[str, List[Dict[str, Any]]]:
    """Each trial's results as Tune recorded them (its result.json), by trial."""
    if s3 is not None:
        s3.download(out.split(f"s3://{BUCKET}/", 1)[1] + "/", download)
        tune_dir = download / "tune"
    else:
        tune_dir = Path(out) / "tune"
    results = {}
    for result_file in sorted(tune_dir.glob("*/result.json")):
        results[result_file.parent.name] = [json.loads(line) for line in result_file.read_text().splitlines()
                                            if line.strip()]
    return results


def _failed_once(out: str, s3, download: Path, trial: str) -> bool:
    """Whether Tune recorded a failure of ``trial`` (its error.txt)."""
    tune_dir = download / "tune" if s3 is not None else Path(out) / "tune"
    return (tune_dir / trial / "error.txt").is_file()


def _check_results(results, budget: int, out: str, s3, folder: Path) -> str:
    from mbpo_ray.analysis.report import find_run_dirs
    from mbpo_ray.run_dir import RunDirectory
    from mbpo_ray.wandb_log import existing_run_id
    from mbpo_ray.wandb_records import history_mismatch

    where = folder / "downloaded" if s3 is not None else Path(out)
    runs = find_run_dirs([where])
    steps = {str(r): [record["env_steps"] for record in RunDirectory(r).read_metrics()] for r in runs}
    short = [r for r, s in steps.items() if not s or s[-1] < budget]
    if not runs or short:
        raise ConfigError(f"run directories short of {budget} env steps: {short or 'none found'} in {where}")
    twice = [r for r, s in steps.items() if len(set(s)) != len(s)]
    if twice:
        raise ConfigError(f"an epoch recorded twice in the metrics of {twice[0]}: {steps[twice[0]]}")
    detail = f"{len(results)} trial(s), {len(runs)} run directory(ies) complete"
    # each offline W&B run, read back in upload order, is its run's metrics.jsonl: every epoch
    # once, the curve, finished (also for the trial whose node was lost)
    logged = [r for r in runs if (Path(r) / "wandb").is_dir()]
    for run in logged:
        problem = history_mismatch(Path(run), existing_run_id(Path(run)))
        if problem:
            raise ConfigError(f"W&B: {problem}")
    if logged:
        detail += f"; {len(logged)} offline W&B run(s) hold every epoch once, then the curve"
    if s3 is not None:
        prefix = out.split(f"s3://{BUCKET}/", 1)[1] + "/"
        keys = s3.keys(prefix)
        checkpoints = [k for k in keys if k.endswith("checkpoint.pt")]
        folders = {k.rsplit("/", 2)[0] for k in checkpoints}
        leftovers = [k for k in keys if ".tune-checkpoint-" in k]
        per_trial = {}
        for k in checkpoints:
            trial = k[len(prefix):].split("/")[1]
            per_trial.setdefault(trial, set()).add(k.split("/")[len(prefix.split("/")) + 1])
        if leftovers or any(len(v) > 2 or not all(f.startswith("checkpoint_") for f in v) for v in per_trial.values()):
            raise ConfigError(f"the bucket holds checkpoints beyond the 2 kept per trial: {sorted(folders)[:6]} "
                              f"({len(leftovers)} snapshot objects)")
        detail += (f"; bucket: {len(keys)} objects, {len(checkpoints)} checkpoint.pt in "
                   f"{sum(len(v) for v in per_trial.values())} kept Tune checkpoint(s), none elsewhere")
    return detail


def _check_secrets(folder: Path, out: str, s3) -> str:
    key = os.environ.get("WANDB_API_KEY")
    if not key:
        return "no WANDB_API_KEY set: nothing to look for"
    places = [folder, Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"]
    if s3 is None:
        places.append(Path(out))
    holders, count = [], 0
    for place in places:
        for path in place.rglob("*") if place.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                count += 1
                try:
                    if key.encode() in path.read_bytes():
                        holders.append(str(path))
                except OSError:
                    continue
    if holders:
        raise ConfigError(f"the W&B key is written in {len(holders)} file(s), e.g. {holders[0]}; pass it to the "
                          f"nodes' environment (docs/clusters.md, \"W&B\"), never in a job's runtime_env")
    return f"the W&B key is in none of {count} files (study, job output, Ray's session logs)"


def add_cluster_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", required=True)
    rehearse_parser = sub.add_parser(
        "rehearse", help="rehearse a cloud launch of CLUSTER.yaml on this machine: nodes, placement, a lost node, "
                         "the job, storage (docs/clusters.md)")
    rehearse_parser.add_argument("cluster_file", metavar="CLUSTER.yaml",
                                 help="a `ray up` file (cluster/aws.yaml, gcp.yaml, onprem.yaml) or a KubeRay "
                                      "RayCluster / RayJob (cluster/kuberay/)")
    rehearse_parser.add_argument("--study", metavar="STUDY.yaml",
                                 help=f"the study to submit, cut down to minutes (default: a RayJob's own, else "
                                      f"{DEFAULT_STUDY})")
    rehearse_parser.add_argument("--storage", default="local", choices=STORAGE_KINDS,
                                 help="local or nfs: a folder declared shared; s3: a bucket on a local S3 server "
                                      "(default local)")
    rehearse_parser.add_argument("--out", metavar="DIR", help="the rehearsal's folder (default: a new temporary one)")
    rehearse_parser.add_argument("--record", metavar="FILE.json", help="write the steps and their times as JSON")
    rehearse_parser.add_argument("--no-kill", action="store_true", help="do not kill a node mid-study")
    rehearse_parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                                 help="seconds the job may take (default 600)")
    rehearse_parser.add_argument("--dashboard-port", type=int, default=8265, metavar="P",
                                 help="the head's dashboard and Jobs API port (default 8265)")


def run_cluster_command(args) -> int:
    return rehearse(args.cluster_file, study_file=args.study, storage=args.storage, out=args.out,
                    record_path=args.record, kill=not args.no_kill, timeout_s=args.timeout,
                    dashboard_port=args.dashboard_port)
