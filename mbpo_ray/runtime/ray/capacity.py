"""What a Ray cluster can hold: the nodes alive now and, on an autoscaling cluster, the nodes its
autoscaler may add (docs/clusters.md, "Autoscaling").

A run or study is refused only when no cluster this one could grow into would hold it; when it
fits the cluster's node types but not the nodes alive now, it waits for the autoscaler, which
starts nodes for the placement groups and actors that wait (a `ray up` or KubeRay cluster
starts with a head of ``CPU: 0`` and no worker).

Where the node types come from, first found:

1. the cluster config that an autoscaler reports to the GCS (autoscaler v2, KubeRay);
2. the ``--autoscaling-config`` file of the autoscaler's monitor process on this machine (a
   driver on the head of a `ray up` cluster, as `ray job submit` runs it; the rehearsal);
3. none: the autoscaler's node types are not known here, and nothing is refused for lack of
   resources (the summary says the trials wait for the autoscaler).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

INFINITE = math.inf
READONLY_NODE_TYPE = re.compile(r"node_[0-9a-f]+")
AUTOSCALING_CONFIG_FLAG = "--autoscaling-config="


@dataclass
class NodeType:
    """A kind of node the autoscaler may start: its resources (a resource it does not state,
    e.g. CPUs Ray detects at start, counts as unbounded) and how many such nodes there may be."""

    name: str
    resources: Dict[str, float]
    max_count: int

    def amount(self, resource: str) -> float:
        if resource in self.resources:
            return self.resources[resource]
        return INFINITE if resource in ("CPU", "memory", "object_store_memory") else 0.0


@dataclass
class Capacity:
    """The live nodes' resources, whether an autoscaler may add nodes, and its node types
    (empty where they are not known here)."""

    nodes: List[Dict[str, float]]
    autoscaling: bool = False
    node_types: List[NodeType] = field(default_factory=list)
    source: str = ""

    @property
    def types_known(self) -> bool:
        return not self.autoscaling or bool(self.node_types)

    def now(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for node in self.nodes:
            for name, amount in node.items():
                out[name] = out.get(name, 0.0) + amount
        return out

    def most(self, resource: str) -> float:
        """The most of ``resource`` the cluster can ever have: its live nodes' total, or with an
        autoscaler the larger of that and every node type at its maximum count."""
        now = self.now().get(resource, 0.0)
        if not self.autoscaling:
            return now
        if not self.node_types:
            return INFINITE
        grown = sum(t.max_count * t.amount(resource) for t in self.node_types if t.max_count > 0)
        return max(now, grown)

    def node_fits(self, bundle: Dict[str, float], ever: bool) -> bool:
        """Whether one node holds ``bundle``: a live one, or (``ever``) one of a node type."""
        if any(all(v <= node.get(k, 0.0) + 1e-9 for k, v in bundle.items()) for node in self.nodes):
            return True
        if not ever or not self.autoscaling:
            return False
        if not self.node_types:
            return True
        return any(t.max_count > 0 and all(v <= t.amount(k) + 1e-9 for k, v in bundle.items())
                   for t in self.node_types)

    def fits_now(self, bundles: Iterable[Dict[str, float]]) -> bool:
        bundles = list(bundles)
        have = self.now()
        need = total(bundles)
        return all(v <= have.get(k, 0.0) + 1e-9 for k, v in need.items()) and \
            all(self.node_fits(b, ever=False) for b in bundles)

    def describe_types(self) -> str:
        if not self.autoscaling:
            return ""
        if not self.node_types:
            return "an autoscaler whose node types are not known here"
        shown = "; ".join(f"{t.name} (up to {t.max_count}): {fmt(t.resources)}" for t in self.node_types)
        return f"an autoscaler with the node types {shown} ({self.source})"


def total(bundles: Iterable[Dict[str, float]]) -> Dict[str, float]:
    """Each resource summed over ``bundles`` (a placement group's, or an actor group's)."""
    out: Dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            out[name] = out.get(name, 0.0) + amount
    return out


def fmt(resources: Dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


# --- the autoscaler --------------------------------------------------------------------------------

def autoscaler_adds_nodes(status: Optional[bytes]) -> bool:
    """Whether the status that Ray's autoscaler (v1) publishes comes from one that launches
    nodes. Every Ray head runs the autoscaler's monitor; on a cluster started by hand it only
    mirrors the nodes that are there, each under a node type made of its id (``node_<hex>``),
    while a launching autoscaler (`ray up`, KubeRay) names the node types of its config."""
    if not status:
        return False
    try:
        report = json.loads(status).get("autoscaler_report") or {}
    except ValueError:
        return False
    types = set(report.get("active_nodes") or {}) | set(report.get("idle_nodes") or {})
    types |= set(report.get("pending_launches") or {})
    types |= {entry[1] for entry in (report.get("pending_nodes") or []) + (report.get("failed_nodes") or [])
              if len(entry) > 1}
    return any(not READONLY_NODE_TYPE.fullmatch(str(t)) for t in types)


def autoscaling() -> bool:
    """Whether an autoscaler may add nodes to the cluster Ray joined: the status the v1
    autoscaler publishes in the GCS key-value store (``autoscaler_adds_nodes``), or the flag
    there that switches autoscaler v2 on."""
    try:
        import ray._raylet as raylet
        from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return False
        if autoscaler_adds_nodes(_internal_kv_get(DEBUG_AUTOSCALING_STATUS)):
            return True
        return _internal_kv_get(raylet.GCS_AUTOSCALER_V2_ENABLED_KEY,
                                namespace=raylet.GCS_AUTOSCALER_STATE_NAMESPACE) == b"1"
    except Exception:  # noqa: BLE001  (internal keys of Ray: no answer means no autoscaler seen)
        return False


def node_types_of_config(config: dict) -> List[NodeType]:
    """The node types of a cluster config (`ray up`'s format): the head type counts once, a
    worker type up to its ``max_workers`` (else the config's)."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    default_max = int(config.get("max_workers", 0) or 0)
    out = []
    for name, spec in types.items():
        spec = spec or {}
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        count = 1 if name == head else int(spec.get("max_workers", default_max) or 0)
        out.append(NodeType(str(name), resources, count))
    return out


def _reported_node_types() -> List[NodeType]:
    """The node groups of the cluster config an autoscaler reported to the GCS (v2, KubeRay)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001
        return []
    if config is None:
        return []
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                     g.max_count if g.max_count >= 0 else 10 ** 6) for g in config.node_group_configs]


def monitor_config_path(proc: str = "/proc") -> Optional[Path]:
    """The ``--autoscaling-config`` file of an autoscaler monitor running on this machine."""
    try:
        entries = os.listdir(proc)
    except OSError:
        return None
    for pid in entries:
        if not pid.isdigit():
            continue
        try:
            args = Path(proc, pid, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            if arg.startswith(AUTOSCALING_CONFIG_FLAG.encode()):
                path = Path(os.path.expanduser(arg[len(AUTOSCALING_CONFIG_FLAG):].decode()))
                if path.is_file():
                    return path
    return None


def cluster_capacity() -> Capacity:
    """The capacity of the cluster Ray joined (the module docstring says how)."""
    import ray

    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    if not autoscaling():
        return Capacity(nodes)
    types = _reported_node_types()
    if types:
        return Capacity(nodes, True, types, "as the autoscaler reports them")
    path = monitor_config_path()
    if path is not None:
        import yaml

        try:
            types = node_types_of_config(yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError, ValueError, TypeError, AttributeError):
            types = []
        if types:
            return Capacity(nodes, True, types, f"from {path}")
    return Capacity(nodes, True)
