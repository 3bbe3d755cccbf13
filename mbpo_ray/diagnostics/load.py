"""A run for the analyses: its config, metrics, D_env and networks, rebuilt from checkpoint.pt
(or from the copies that ``keep_checkpoints_every`` keeps) without starting the run: no
runtime, no Ray. The one place that knows where a checkpoint of the local and of the Ray runtime
holds the policy, the ensemble and D_env (``train --resume`` rebuilds the whole algorithm
instead, which for the Ray runtime starts its actors)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from mbpo_ray.agents.sac import SAC, TanhGaussianPolicy
from mbpo_ray.config import TrainConfig
from mbpo_ray.data.buffers import ReplayBuffer
from mbpo_ray.data.rows import RowLayout
from mbpo_ray.diagnostics.params import DiagnosticsError
from mbpo_ray.envs import make_termination, prepare_config
from mbpo_ray.errors import ConfigError, RunDirError
from mbpo_ray.models.ensemble import ProbabilisticEnsemble
from mbpo_ray.models.model_env import TerminationFn
from mbpo_ray.models.termination import LearnedTermination
from mbpo_ray.run_dir import RunDirectory

SETTING = "--set keep_checkpoints_every=1"


def _runtime_state(algorithm: Dict[str, Any]) -> Dict[str, Any]:
    runtime = algorithm.get("runtime") if isinstance(algorithm, dict) else None
    if not isinstance(runtime, dict):
        raise KeyError("runtime")
    return runtime


def networks_of_state(algorithm: Dict[str, Any]) -> Dict[str, Any]:
    """The policy, the ensemble and (``mbpo.termination: learned``) the termination classifier of
    an mbpo run's algorithm state, local or Ray runtime: what a kept copy
    (checkpoints/step_N.pt) holds. Tensors are shared with ``algorithm``, not copied."""
    rt = _runtime_state(algorithm)
    if "learner" in rt:  # the Ray runtime (mbpo_ray.runtime.ray.driver.RayRuntime.state_dict)
        module = rt["learner"]["agent"]["module"]
        weights = rt["model_trainer"]["weights"]
        model, termination = weights["model"], weights.get("termination")
    else:  # the local runtime (mbpo_ray.runtime.local.LocalRuntime.state_dict)
        module = rt["agent"]["module"]
        model, termination = rt["model"], rt.get("learned_termination")
    out = {"policy": {k[len("policy."):]: v for k, v in module.items() if k.startswith("policy.")},
           "model": model}
    if termination is not None:
        out["termination"] = {"classifier": termination["classifier"], "active": termination["active"]}
    return out


@dataclass
class Networks:
    """The networks of one point of a run."""

    env_steps: int
    policy: TanhGaussianPolicy
    model: ProbabilisticEnsemble
    termination: TerminationFn


class Run:
    """A run directory opened for analysis. Everything is read lazily and once."""

    def __init__(self, path: Path, device: torch.device | str = "cpu"):
        self.path = Path(path)
        self.dir = RunDirectory(self.path)
        self.device = torch.device(device)
        if not self.path.is_dir():
            raise DiagnosticsError(f"RUN_DIR {self.path}: no such directory (expected a run directory of "
                                   f"`mbpo-ray train`)")
        if not self.dir.config_path.is_file():
            raise DiagnosticsError(f"RUN_DIR {self.path} has no config.yaml: not a run directory of "
                                   f"`mbpo-ray train`")
        try:
            cfg = self.dir.load_config()
            self.cfg: TrainConfig = prepare_config(cfg)[0]
        except (RunDirError, ConfigError) as exc:
            raise DiagnosticsError(f"RUN_DIR {self.path}: {exc}") from None
        try:
            self.records: List[Dict[str, Any]] = self.dir.read_metrics()
        except ValueError as exc:  # a line that is not JSON
            raise DiagnosticsError(f"{self.dir.metrics_path} is not a metrics file of `mbpo-ray train` "
                                   f"({exc})") from None
        self._state: Optional[Dict[str, Any]] = None
        self._dims: Optional[tuple] = None

    # --- what the run is ---
    def require_mbpo(self, kind: str) -> None:
        if self.cfg.algo != "mbpo":
            raise DiagnosticsError(f"analyze {kind} needs an mbpo run (its policy and dynamics ensemble); "
                                   f"{self.path} is a {self.cfg.algo} run")

    @property
    def dims(self) -> tuple:
        if self._dims is None:
            model = self.state["model_state"]
            width = model["input_mean"].shape[0]
            obs_dim = model["max_logvar"].shape[0] - 1
            self._dims = (obs_dim, width - obs_dim)
        return self._dims

    @property
    def layout(self) -> RowLayout:
        return RowLayout(*self.dims)

    # --- checkpoint.pt ---
    @property
    def state(self) -> Dict[str, Any]:
        """checkpoint.pt's parts that the analyses use: env_steps, the SAC agent's full state,
        the networks and D_env's rows (oldest first)."""
        if self._state is None:
            if not self.dir.checkpoint_path.is_file():
                raise DiagnosticsError(f"{self.path} has no checkpoint.pt yet (the run stopped before its first "
                                       f"checkpoint)")
            try:
                checkpoint = self.dir.load_checkpoint()
            except RunDirError as exc:
                raise DiagnosticsError(str(exc)) from None
            try:
                algorithm = checkpoint["algorithm"]
                rt = _runtime_state(algorithm)
                networks = networks_of_state(algorithm)
                if "learner" in rt:
                    agent, real = rt["learner"]["agent"], ReplayBuffer.saved_rows_in_order(rt["buffer"]["real"])
                else:
                    agent, real = rt["agent"], ReplayBuffer.saved_rows_in_order(rt["real_buffer"])
                self._state = {"env_steps": int(checkpoint["env_steps"]), "agent": agent,
                               "networks": networks, "model_state": networks["model"], "real_rows": real}
            except (KeyError, TypeError):
                raise DiagnosticsError(f"{self.dir.checkpoint_path} does not hold an mbpo run's networks (expected "
                                       f"the state of the local or the Ray runtime)") from None
        return self._state

    def networks(self) -> Networks:
        """The policy, ensemble and termination rule of checkpoint.pt."""
        return self._build(self.state["env_steps"], self.state["networks"], self.dir.checkpoint_path)

    def agent(self) -> SAC:
        """The SAC agent of checkpoint.pt, optimiser included (to train it further)."""
        obs_dim, act_dim = self.dims
        agent = SAC(obs_dim, act_dim, self.cfg.sac, self.device)
        try:
            agent.load_full_state_dict(self.state["agent"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DiagnosticsError(f"{self.dir.checkpoint_path}: its agent does not fit the run's config "
                                   f"({type(exc).__name__})") from None
        return agent

    def real_rows(self) -> torch.Tensor:
        """D_env's transition rows (``RowLayout``), oldest first."""
        return self.state["real_rows"].to(self.device)

    # --- the kept copies ---
    def snapshots(self) -> List[Path]:
        return self.dir.snapshot_paths()

    def require_snapshots(self, kind: str, at_least: int = 2) -> List[Path]:
        paths = self.snapshots()
        if len(paths) < at_least:
            have = f"only {len(paths)} kept checkpoint" if paths else "only its latest checkpoint.pt"
            raise DiagnosticsError(f"analyze {kind} needs the run's networks at several points of training; "
                                   f"{self.path} has {have}: train it with {SETTING} (or every N epochs; "
                                   f"docs/diagnostics.md)")
        return paths

    @staticmethod
    def snapshot_env_steps(path: Path) -> int:
        """N of checkpoints/step_N.pt."""
        return int(path.stem[len("step_"):])

    def load_snapshot(self, path: Path) -> Networks:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            return self._build(int(state["env_steps"]), state, path)
        except DiagnosticsError:
            raise
        except Exception as exc:  # any failure to unpickle or to read the parts
            raise DiagnosticsError(f"{path} is not a readable kept checkpoint ({type(exc).__name__}: {exc})") \
                from None

    # --- rebuilding ---
    def _build(self, env_steps: int, networks: Dict[str, Any], source: Path) -> Networks:
        cfg = self.cfg
        obs_dim, act_dim = self.dims
        policy = TanhGaussianPolicy.from_config(obs_dim, act_dim, cfg.sac)
        model = ProbabilisticEnsemble(obs_dim, act_dim, cfg.model)
        try:
            policy.load_state_dict(networks["policy"])
            model.load_state_dict(networks["model"])
        except (KeyError, RuntimeError) as exc:
            raise DiagnosticsError(f"{source}: its networks do not fit the run's config ({type(exc).__name__})") \
                from None
        policy.to(self.device).eval()
        model.to(self.device).eval()
        termination = make_termination(cfg, obs_dim, self.device)
        if isinstance(termination, LearnedTermination):
            if "termination" not in networks:
                raise DiagnosticsError(f"{source} has no termination classifier (mbpo.termination: learned)")
            termination.load_weights(networks["termination"])
        return Networks(env_steps, policy, model, termination)
