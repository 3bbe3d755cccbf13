"""The two videos of a run (docs/video.md): its policy in the real env, and the model's dream
beside reality.

Dream: from a start state of the real env, the run's policy acts in the real env for up to
``steps`` steps; the same actions are played open-loop through the ensemble from the same first
observation (each shown elite member its own mean trajectory, as `analyze compounding` does), and
each predicted observation is rendered by writing it into a copy of the simulator. That needs an
observation made of the simulator's positions and velocities: ``obs = [qpos[k:], qvel]`` with the
first ``k`` positions (the torso's x, or x and y) left out, which then follow from the predicted
velocities (``x += vx * dt``). Hopper, Walker2d, HalfCheetah, Swimmer, InvertedPendulum and the
paper's Ant and Humanoid (their truncated observations) are such envs; the check is made on the
env itself, and an env that is not is a one-line error. Errors are in the units of `analyze
compounding` (squared distance, each dim divided by its standard deviation in D_env, averaged
over dims); the disagreement is the variance of the elites' predicted observations in the same
units.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from mbpo_ray.atomic import write_atomic
from mbpo_ray.video import encode, frames as draw
from mbpo_ray.video.policy import Policy
from mbpo_ray.video.render import VideoError, make_render_env, render

# reset seeds of the videos' episodes: apart from training's and evaluation's (as the analyses')
VIDEO_SEED_BASE = 60_000_000
DEFAULT_THRESHOLD = 1.0  # normalised squared error: one standard deviation per dim on average


@dataclass
class PolicyVideo:
    frames: List[np.ndarray]
    returns: List[float]
    lengths: List[int]
    fps: int


def episode_fps(env) -> int:
    fps = env.metadata.get("render_fps") or 30
    return int(max(1, min(fps, 60)))


def policy_video(run, policy: Policy, episodes: int, size: int, seed: int, max_steps: Optional[int] = None) -> PolicyVideo:
    """``episodes`` episodes of ``policy`` in the run's env, each frame captioned with the run,
    the episode, the step and the return so far."""
    from mbpo_ray.envs import ActionScaler

    env = make_render_env(run.cfg, size)
    scaler = ActionScaler(env.action_space)
    title = f"{run.cfg.algo} {run.cfg.env_id} seed {run.cfg.seed}, {policy.env_steps} env steps"
    out = PolicyVideo([], [], [], episode_fps(env))
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=VIDEO_SEED_BASE + seed + i)
            policy.reset()
            total, t, done = 0.0, 0, False
            out.frames.append(draw.caption(render(env), [title, f"episode {i + 1}/{episodes}  step 0  return 0.0"]))
            while not done and (max_steps is None or t < max_steps):
                obs, reward, terminated, truncated, _ = env.step(scaler.to_env(policy.act(obs)))
                total, t, done = total + float(reward), t + 1, terminated or truncated
                out.frames.append(draw.caption(render(env), [title, f"episode {i + 1}/{episodes}  step {t}  "
                                                                    f"return {total:.1f}"]))
            out.returns.append(total)
            out.lengths.append(t)
    finally:
        env.close()
    return out


@dataclass
class StateMap:
    """How an observation is the simulator's state: ``obs = [qpos[hidden:], qvel]``."""

    nq: int
    nv: int
    hidden: int
    dt: float

    @classmethod
    def of(cls, env, obs: np.ndarray) -> "StateMap":
        base = env.unwrapped
        data = getattr(base, "data", None)
        if data is None or not hasattr(base, "set_state"):
            raise VideoError(f"--dream renders the model's states by writing them into a MuJoCo simulator; "
                             f"{env.spec.id if env.spec else env} is not a MuJoCo env")
        qpos, qvel = np.asarray(data.qpos, np.float64), np.asarray(data.qvel, np.float64)
        hidden = qpos.size + qvel.size - obs.size
        expected = np.concatenate([qpos[hidden:], qvel]) if 0 <= hidden <= 3 else None
        if expected is None or expected.shape != obs.shape or not np.allclose(expected, obs, atol=1e-5):
            raise VideoError(f"--dream cannot render {env.spec.id if env.spec else env}: its observation "
                             f"({obs.size} numbers) is not the simulator's positions and velocities "
                             f"(qpos {qpos.size}, qvel {qvel.size}; docs/video.md lists the envs it can show)")
        return cls(qpos.size, qvel.size, hidden, float(base.dt))

    @property
    def observed_positions(self) -> int:
        return self.nq - self.hidden

    def state(self, obs: np.ndarray, hidden_pos: np.ndarray) -> tuple:
        """(qpos, qvel) of an observation, with the left-out positions ``hidden_pos``."""
        n = self.observed_positions
        return np.concatenate([hidden_pos, obs[:n]]), np.asarray(obs[n:], np.float64)

    def advance(self, hidden_pos: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """The left-out positions one step on, from their velocities (the first of ``obs``'s)."""
        n = self.observed_positions
        return hidden_pos + self.dt * np.asarray(obs[n: n + self.hidden])


@dataclass
class Dream:
    frames: List[np.ndarray]
    fps: int
    numbers: Dict[str, Any] = field(default_factory=dict)


DREAM_ALGOS = ("mbpo", "pets")  # a probabilistic ensemble and something that acts


@dataclass
class DreamModel:
    """What a dream needs of a run: its ensemble and termination rule, the env steps of the
    checkpoint they come from, and each observation dim's standard deviation in the run's real
    data (the unit of the errors)."""

    model: Any
    termination: Any
    env_steps: int
    scale: torch.Tensor


def dream_model(run, policy: Policy, checkpoint: Optional[int] = None) -> DreamModel:
    """mbpo: the ensemble of checkpoint.pt (or of the kept copy at ``checkpoint`` env steps) and
    D_env's spread; pets: the rebuilt algorithm's ensemble (``policy.source``) and its buffer's."""
    from mbpo_ray.diagnostics.common import obs_scale

    if run.cfg.algo == "pets":
        algorithm = policy.source
        obs = algorithm.buffer.all()[0]
        return DreamModel(algorithm.model.eval(), algorithm.sampler.termination, policy.env_steps,
                          obs.std(dim=0, unbiased=False).clamp_min(1e-6))
    if run.cfg.algo != "mbpo":
        raise VideoError(f"--dream needs a run with a probabilistic ensemble ({', '.join(DREAM_ALGOS)}); "
                         f"{run.path} is a {run.cfg.algo} run")
    from mbpo_ray.video.policy import kept_copy

    nets = run.load_snapshot(kept_copy(run, checkpoint)) if checkpoint is not None else run.networks()
    return DreamModel(nets.model, nets.termination, nets.env_steps, obs_scale(run.real_rows(), run.layout))


@torch.no_grad()
def dream_video(run, nets: DreamModel, policy: Policy, steps: int, members: int, size: int, seed: int,
                threshold: float = DEFAULT_THRESHOLD) -> Dream:
    """The real env and ``members`` elites' open-loop dreams of the same actions, side by side,
    with the error strip under them (module docstring)."""
    from mbpo_ray.envs import ActionScaler

    model, termination = nets.model, nets.termination
    if not 1 <= members <= model.num_elites:
        raise VideoError(f"--members {members}: between 1 and the ensemble's {model.num_elites} elites")
    real_env = make_render_env(run.cfg, size)
    dream_envs = [make_render_env(run.cfg, size) for _ in range(members)]
    scaler = ActionScaler(real_env.action_space)
    try:
        obs, _ = real_env.reset(seed=VIDEO_SEED_BASE + seed)
        state_map = StateMap.of(real_env, np.asarray(obs, np.float64))
        for env in dream_envs:
            env.reset(seed=VIDEO_SEED_BASE + seed)
        policy.reset()
        first_hidden = np.asarray(real_env.unwrapped.data.qpos[:state_map.hidden], np.float64)
        real_obs, actions, real_frames = [np.asarray(obs, np.float32)], [], [render(real_env)]
        real_ended = None
        for t in range(steps):
            action = np.asarray(policy.act(obs), np.float32)
            obs, _, terminated, truncated, _ = real_env.step(scaler.to_env(action))
            actions.append(action)
            real_obs.append(np.asarray(obs, np.float32))
            real_frames.append(render(real_env))
            if terminated or truncated:
                real_ended = t + 1 if terminated else None
                break
        horizon = len(actions)
        device = run.device
        acts = torch.as_tensor(np.stack(actions), device=device)
        real = torch.as_tensor(np.stack(real_obs), device=device)
        scale = nets.scale.to(device)
        elites = model.elite_idx.tolist()
        # every member's mean trajectory (one batched pass a step); the elites' spread, the
        # shown members' errors
        E = model.num_members
        pred = torch.zeros(horizon + 1, E, real.shape[1], device=device)
        pred[0] = real[0]
        ended = [None] * E
        for t in range(horizon):
            x = torch.cat([pred[t], acts[t].expand(E, -1)], dim=-1).unsqueeze(1)
            mean, _ = model(x)
            pred[t + 1] = pred[t] + mean[:, 0, 1:]
            done = termination(pred[t], acts[t].expand(E, -1), pred[t + 1])
            for m in range(E):
                if ended[m] is None and bool(done[m]):
                    ended[m] = t + 1
        shown = elites[:members]
        error = (((pred[1:, shown] - real[1:, None]) / scale) ** 2).mean(dim=-1)  # [H, members]
        spread = (pred[1:, elites].var(dim=1, unbiased=False) / scale ** 2).mean(dim=-1)  # [H]
        first_error = [float(v) for v in error[:, 0].cpu()]
        left_at = next((k + 1 for k, v in enumerate(first_error) if not v <= threshold), None)

        hidden = [first_hidden.copy() for _ in shown]
        ended_panels: List[Optional[np.ndarray]] = [None] * len(shown)  # a panel frozen where its model ended
        spread_list = [float(v) for v in spread.cpu()]
        out_frames: List[np.ndarray] = []
        fps = episode_fps(real_env)
        for t in range(horizon + 1):
            panels = [draw.caption(real_frames[t], ["real env", f"step {t}"])]
            for i, m in enumerate(shown):
                if ended_panels[i] is not None:
                    panels.append(ended_panels[i])
                    continue
                stop = ended[m]
                k = t if stop is None else min(t, stop)
                predicted = pred[k, m].cpu().numpy().astype(np.float64)
                if t and (stop is None or t <= stop):
                    hidden[i] = state_map.advance(hidden[i], predicted)
                if np.all(np.isfinite(predicted)):
                    qpos, qvel = state_map.state(predicted, hidden[i])
                    dream_envs[i].unwrapped.set_state(qpos, qvel)
                    frame = render(dream_envs[i])
                else:
                    frame = np.full_like(real_frames[t], 200)
                label = f"model, elite {m}" + (" (best)" if i == 0 else "")
                lines = [label, f"step {k}" + (f"  error {float(error[k - 1, i]):.2g}" if k else "")]
                if stop is not None and t >= stop:
                    frame, lines = draw.greyed(frame), lines + [f"the model ends the episode at step {stop}"]
                panels.append(draw.caption(frame, lines))
                if stop is not None and t >= stop:
                    ended_panels[i] = panels[-1]
            row = draw.side_by_side(panels)
            chart = draw.strip(row.shape[1], max(60, size // 4), first_error, spread_list, t, horizon, threshold,
                               left_at)
            out_frames.append(np.concatenate([row, chart], axis=0))
        numbers = {"env": run.cfg.env_id, "env_steps": nets.env_steps, "steps": horizon, "members": shown,
                   "threshold": threshold, "left_real_at": left_at, "real_terminated_at": real_ended,
                   "model_ended_at": {str(m): ended[m] for m in shown},
                   "error": {str(m): [float(v) for v in error[:, i].cpu()] for i, m in enumerate(shown)},
                   "disagreement": spread_list, "hidden_positions": state_map.hidden}
        return Dream(out_frames, fps, numbers)
    finally:
        real_env.close()
        for env in dream_envs:
            env.close()


def write_video(frames: List[np.ndarray], fps: int, out: Path, stem: str) -> Dict[str, Path]:
    """``stem``.mp4, ``stem``.gif and ``stem``_sheet.png (eight frames spread over the video, in
    rows of two to four frames, at most 1,600 pixels wide)."""
    from mbpo_ray.diagnostics.common import spread_evenly

    columns = max(2, min(4, 1600 // frames[0].shape[1]))  # a wide dream frame: two a row, scaled
    sheet = draw.contact_sheet([frames[i] for i in spread_evenly(len(frames), 8)], columns=columns,
                               width=min(1600, columns * frames[0].shape[1]))
    return {"mp4": encode.write_mp4(frames, out / f"{stem}.mp4", fps),
            "gif": encode.write_gif(frames, out / f"{stem}.gif", fps),
            "sheet": encode.write_png(sheet, out / f"{stem}_sheet.png")}


def write_numbers(numbers: Dict[str, Any], path: Path) -> Path:
    write_atomic(path, (json.dumps(numbers, indent=1) + "\n").encode())
    return path


EPOCH_VIDEO_STEPS = 500  # at most this many steps of the policy's episode in an epoch's video (its cost: docs/video.md)
EPOCH_DREAM_STEPS = 100
EPOCH_VIDEO_SIZE = 240


def epoch_videos(run_dir: Path, env_steps: int) -> Dict[str, Path]:
    """The videos of ``video_every_epochs``: the policy (and for mbpo and pets the dream) of the run's
    checkpoint.pt just written, as MP4s in RUN/videos/step_<env_steps>/ (``policy``, ``dream``)."""
    from mbpo_ray.diagnostics.load import Run
    from mbpo_ray.video.policy import load_policy

    run = Run(Path(run_dir))
    out = Path(run_dir) / "videos" / f"step_{env_steps}"
    policy = load_policy(run)
    try:
        video = policy_video(run, policy, 1, EPOCH_VIDEO_SIZE, 0, EPOCH_VIDEO_STEPS)
        files = {"policy": encode.write_mp4(video.frames, out / "policy.mp4", video.fps)}
        if run.cfg.algo in DREAM_ALGOS:
            dream = dream_video(run, dream_model(run, policy), policy, EPOCH_DREAM_STEPS, 1, EPOCH_VIDEO_SIZE, 0)
            files["dream"] = encode.write_mp4(dream.frames, out / "dream.mp4", dream.fps)
            write_numbers(dream.numbers, out / "dream.json")
    finally:
        policy.close()
    return files
