"""A cluster file's node types as a local Ray cluster that autoscales, on this one machine.

Ray ships a node provider for this (``provider: {type: fake_multinode}``): the head is started
with ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE`` and its autoscaler starts
each "node" as a raylet of its own on this machine, with the resources of its node type, when
tasks, actors or placement groups wait for them, exactly as it would start a cloud VM or a pod.
GPUs are logical resources here (a trial on a "GPU node" runs on the CPU). What the rehearsal
changes in a cluster file, and why:

- node counts: each worker type at most ``MAX_NODES_PER_TYPE`` (a 2-core machine), at least
  its ``min_workers``; every type still starts from zero when the file says so. The autoscaler
  may start ``SPARE_NODES`` more, to replace a node the rehearsal kills: the fake provider
  never learns that a killed node is gone (a cloud's does) and goes on counting it;
- the head type is named ``ray.head.default`` (the fake provider's name for it) and the worker
  types keep their names;
- every node's object store is ``OBJECT_STORE_MB`` (Ray's default, 30 % of the memory for each
  node, would not fit several nodes on one machine);
- the GCS listens on port 6379, where the fake provider's nodes look for it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from mbpo_ray.cluster_files import NodeKind
from mbpo_ray.errors import ConfigError

HEAD_TYPE = "ray.head.default"
HEAD_NODE_ID = "f" * 51 + "00000"  # the fake provider gives the head this Ray node id
# CPUs of a node type that states none (Ray would count the machine's cores): a modest machine
UNSTATED_CPUS = 8.0
GCS_PORT = 6379
PORT_WAIT_S = 20.0  # how long a start waits for the ports of a Ray that has just stopped
MAX_NODES_PER_TYPE = 2
SPARE_NODES = 2
OBJECT_STORE_MB = 150
NODE_ID_VARIABLE = "RAY_OVERRIDE_NODE_ID_FOR_TESTING"
# Every process of one rehearsal's cluster carries this variable (set for `ray start`, inherited by
# the autoscaler's fake nodes and every worker): stopping the cluster stops those processes only,
# never another Ray instance on the machine (`ray stop` would stop them all).
CLUSTER_ID_VARIABLE = "MBPO_RAY_REHEARSAL_CLUSTER"
NODE_TYPE_VARIABLE = "RAY_NODE_TYPE_NAME"


@dataclass
class RehearsedType:
    """A node type as the rehearsal starts it."""

    name: str
    resources: Dict[str, float]
    min_workers: int
    max_workers: int
    head: bool = False
    original_max: int = 0
    notes: List[str] = field(default_factory=list)


def rehearsed_types(kinds: List[NodeKind]) -> List[RehearsedType]:
    """The node kinds of a cluster file as the fake provider's node types."""
    out = []
    for kind in kinds:
        resources = {k: float(v) for k, v in kind.resources.items()}
        resources.setdefault("CPU", UNSTATED_CPUS)
        if kind.head:
            out.append(RehearsedType(HEAD_TYPE, resources, 0, 0, head=True))
            continue
        most = max(min(kind.max_count, MAX_NODES_PER_TYPE), min(kind.min_count, MAX_NODES_PER_TYPE))
        out.append(RehearsedType(kind.name, resources, min(kind.min_count, most), most,
                                 original_max=kind.max_count))
    if not any(t.head for t in out):
        raise ConfigError("the cluster file has no head node type (head_node_type or headGroupSpec)")
    return out


def autoscaling_config(types: List[RehearsedType], idle_timeout_minutes: float = 5.0) -> Dict:
    """The fake provider's cluster config for ``types``."""
    node_types = {}
    for t in types:
        resources = {**t.resources, "object_store_memory": OBJECT_STORE_MB * 1024 * 1024}
        spec = {"resources": resources, "node_config": {},
                "max_workers": t.max_workers + (0 if t.head else SPARE_NODES)}
        if not t.head:
            spec["min_workers"] = t.min_workers
        node_types[t.name] = spec
    return {
        "cluster_name": "mbpo-ray-rehearsal",
        "max_workers": sum(t.max_workers + SPARE_NODES for t in types if not t.head),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "disable_launch_config_check": True,
                     "disable_node_updaters": True, "use_node_id_as_ip": True},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": node_types,
        "head_node_type": HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _ray_command() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def _free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers that bind it
        try:
            sock.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


class FakeCluster:
    """``with FakeCluster(types, folder, env) as cluster:`` a head with an autoscaler that adds
    ``types``; ``cluster.dashboard`` is the Jobs API's address. ``env`` is added to every
    process of the cluster (the head's, and so every node's and every job's)."""

    def __init__(self, types: List[RehearsedType], folder: Path, env: Optional[Dict[str, str]] = None,
                 dashboard_port: int = 8265):
        self.types, self.folder = types, Path(folder)
        # Ray's token authentication is on when ~/.ray/auth_token exists and off otherwise: off
        # here, so that a rehearsal runs the same on every machine (the head binds 127.0.0.1)
        self.cluster_id = f"{os.getpid()}-{time.time_ns()}"
        self.env = {**os.environ, **(env or {}), "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "disabled",
                    CLUSTER_ID_VARIABLE: self.cluster_id}
        self.dashboard_port = dashboard_port
        self.config_path = self.folder / "autoscaling.yaml"
        self.started = False

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> "FakeCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + PORT_WAIT_S
        while not (_port_free(GCS_PORT) and _port_free(self.dashboard_port)) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not _port_free(GCS_PORT):
            raise ConfigError(f"port {GCS_PORT} is taken (another Ray cluster on this machine?): the rehearsal's "
                              f"head needs it; stop that cluster (ray stop) and rehearse again")
        if not _port_free(self.dashboard_port):
            raise ConfigError(f"port {self.dashboard_port} (the dashboard and Jobs API) is taken; pass another "
                              f"--dashboard-port")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(autoscaling_config(self.types), sort_keys=False))
        head = next(t for t in self.types if t.head)
        custom = {k: v for k, v in head.resources.items() if k not in ("CPU", "GPU")}
        command = [_ray_command(), "start", "--head", f"--port={GCS_PORT}",
                   f"--autoscaling-config={self.config_path}", f"--num-cpus={int(head.resources.get('CPU', 0))}",
                   f"--num-gpus={int(head.resources.get('GPU', 0))}", f"--resources={json.dumps(custom)}",
                   f"--object-store-memory={OBJECT_STORE_MB * 1024 * 1024}", "--include-dashboard=true",
                   "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}", "--disable-usage-stats",
                   # the head's agents on free ports: their defaults (52365 for the job agent) may be
                   # taken by another Ray instance of this machine, which left jobs with no agent
                   f"--dashboard-agent-listen-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]
        log = self.folder / "ray-start.log"
        with open(log, "wb") as out:
            result = subprocess.run(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
        self.started = True
        if result.returncode != 0:
            raise ConfigError(f"ray start --head failed (exit {result.returncode}); its output: {log}")
        self.wait_for_dashboard(timeout_s)

    def wait_for_dashboard(self, timeout_s: float) -> None:
        import urllib.request

        import urllib.error

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5):
                    return
            except urllib.error.HTTPError:  # it answers (Ray's token authentication may refuse us)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"the head's dashboard (the Jobs API) did not answer at {self.dashboard} within "
                                  f"{timeout_s:g} s")
            time.sleep(1.0)

    def stop(self) -> None:
        if not self.started:
            return
        stop_processes(CLUSTER_ID_VARIABLE, self.cluster_id)
        self.started = False
        deadline = time.monotonic() + 30  # the next cluster on this machine needs the ports
        while not (_port_free(GCS_PORT) and _port_free(self.dashboard_port)) and time.monotonic() < deadline:
            time.sleep(0.5)


# --- nodes of the fake provider ------------------------------------------------------------------

def _environ(pid: str) -> Dict[str, str]:
    try:
        raw = Path("/proc", pid, "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def processes_with(variable: str, value: str) -> List[int]:
    """The processes (not this one) whose environment sets ``variable`` to ``value``."""
    return [int(pid) for pid in os.listdir("/proc")
            if pid.isdigit() and int(pid) != os.getpid() and _environ(pid).get(variable) == value]


def node_processes(node_id: str) -> List[int]:
    """The processes of one fake node (its raylet and everything it started), found by the node
    id the fake provider puts into their environment."""
    return processes_with(NODE_ID_VARIABLE, node_id)


def stop_processes(variable: str, value: str, grace_s: float = 10.0) -> None:
    """SIGTERM the processes that ``processes_with`` finds, then SIGKILL those left after
    ``grace_s`` (and any started meanwhile)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_with(variable, value)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and processes_with(variable, value) and time.monotonic() < deadline:
            time.sleep(0.2)


def kill_node(node_id: str) -> int:
    """SIGKILL every process of a fake node, as a spot instance that disappears; returns how many."""
    pids = node_processes(node_id)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)
