"""`analyze compounding`: how the model's error compounds over open-loop rollouts
(docs/diagnostics.md#compounding).

Real episodes of the run's policy give start states s_t with their exact env state (MuJoCo's
integration state, ``mbpo_ray.envs.get_env_state``) and the actions a_t, a_t+1, ... taken from
there. For each start, the real env is restored to s_t and stepped with those actions for up to
``horizon`` steps; the model is rolled open-loop from the same observation with the same actions:

* each member alone, with its mean prediction (one trajectory per member);
* MBPO's composition: at every step each of ``particles`` rollouts draws a random elite and
  samples next state and reward from its Gaussian (``ModelEnv.step`` with noise "all", as
  ``mbpo_ray.models.rollout.branched_rollout``);
* the same with each drawn elite's mean instead of a sample (noise "none"): the part of the
  composition's error that the members' disagreement, not the sampled noise, makes.

The error at k is the squared distance between the predicted and the real observation after k
steps, each dim divided by its standard deviation in D_env, averaged over dims (and over the
particles, then over the start states). Steps after the real episode ended are not scored. The
per-step growth is a least-squares fit of log error = a + b k: growth factor exp(b).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from mbpo_ray.diagnostics.common import (loglinear_fit, obs_scale, plt, policy_actor, run_episodes,
                                         spread_evenly, write_outputs)
from mbpo_ray.diagnostics.params import CompoundingParams, DiagnosticsError
from mbpo_ray.envs import ActionScaler, make_env, set_env_state
from mbpo_ray.models.model_env import ModelEnv


def pick_starts(lengths: List[int], horizon: int, count: int) -> List[tuple]:
    """(episode, t) pairs spread evenly over every step of every episode from which at least
    one real step follows; those with the whole horizon ahead come first when there are enough."""
    full = [(e, t) for e, n in enumerate(lengths) for t in range(n) if t + horizon <= n]
    pool = full if len(full) >= count else [(e, t) for e, n in enumerate(lengths) for t in range(n)]
    return [pool[i] for i in spread_evenly(len(pool), count)]


def replay_real(cfg, episodes, starts, horizon: int) -> tuple:
    """The real observations after 1..horizon steps from each start, with the env restored to the
    start's state and stepped with the recorded actions: [S, horizon, obs_dim] (NaN after the
    episode ended) and the largest difference from the recorded episode (0 when the restore is
    exact, as it is for MuJoCo)."""
    env = make_env(cfg.env_id, kwargs=cfg.env_kwargs)
    scaler = ActionScaler(env.action_space)
    obs_dim = episodes[0].obs.shape[1]
    real = np.full((len(starts), horizon, obs_dim), np.nan, np.float32)
    deviation = 0.0
    try:
        for i, (e, t) in enumerate(starts):
            ep = episodes[e]
            env.reset()
            set_env_state(env, ep.states[t])
            for j in range(min(horizon, len(ep) - t)):
                obs, _, terminated, truncated, _ = env.step(scaler.to_env(ep.act[t + j]))
                real[i, j] = obs
                deviation = max(deviation, float(np.abs(obs - ep.obs[t + j + 1]).max()))
                if terminated:
                    break
    finally:
        env.close()
    return real, deviation


@torch.no_grad()
def model_errors(model, termination, start_obs: torch.Tensor, actions: torch.Tensor, real: torch.Tensor,
                 scale: torch.Tensor, particles: int) -> Dict[str, Any]:
    """start_obs [S, obs], actions [S, H, act], real [S, H, obs] (NaN where not scored).
    Returns per-member and composition errors against k = 1..H: for each k the mean over the
    scored starts (None where no start is scored or the predictions are not finite)."""
    S, H, _ = actions.shape
    E = model.num_members
    valid = torch.isfinite(real).all(dim=-1)  # [S, H]

    def per_start_error(pred, target):  # [.., S, obs] -> [.., S]
        return (((pred - target) / scale) ** 2).mean(dim=-1)

    # each member its own mean trajectory: [E, S, obs], one batched matmul per layer
    member_obs = start_obs.unsqueeze(0).expand(E, -1, -1).clone()
    member_err = torch.full((E, S, H), float("nan"))
    # MBPO's composition: S x particles rows, a random elite per row and step, sampled
    env = ModelEnv(model, termination)
    comp_obs = start_obs.repeat_interleave(particles, dim=0)
    mean_obs = comp_obs.clone()
    comp_err = torch.full((S * particles, H), float("nan"))
    mean_err = torch.full((S * particles, H), float("nan"))
    for j in range(H):
        act = actions[:, j]
        mean, _ = model(torch.cat([member_obs, act.unsqueeze(0).expand(E, -1, -1)], dim=-1))
        member_obs = member_obs + mean[..., 1:]
        target = real[:, j]
        member_err[:, :, j] = per_start_error(member_obs, target).cpu()
        repeated_act, repeated_target = act.repeat_interleave(particles, dim=0), target.repeat_interleave(particles, dim=0)
        member = model.random_elites(comp_obs.shape[0], device=comp_obs.device)
        comp_obs = env.step(comp_obs, repeated_act, member, noise="all").next_obs
        comp_err[:, j] = per_start_error(comp_obs, repeated_target).cpu()
        member = model.random_elites(mean_obs.shape[0], device=mean_obs.device)
        mean_obs = env.step(mean_obs, repeated_act, member, noise="none").next_obs
        mean_err[:, j] = per_start_error(mean_obs, repeated_target).cpu()
    comp_err = comp_err.view(S, particles, H)
    nonfinite = float((~torch.isfinite(comp_err) & valid.cpu()[:, None, :]).float().sum() / max(1, valid.sum() * particles))
    comp_err = comp_err.mean(dim=1)  # a non-finite particle makes its start's error non-finite
    mean_err = mean_err.view(S, particles, H).mean(dim=1)

    def curve(err):  # [S, H] -> mean over scored starts per k
        out = []
        for j in range(H):
            scored = err[valid[:, j].cpu(), j]
            out.append(float(scored.mean()) if scored.numel() and bool(torch.isfinite(scored).all()) else None)
        return out

    return {"members": [curve(member_err[m]) for m in range(E)], "composition": curve(comp_err),
            "composition_mean": curve(mean_err),
            "scored_starts": valid.sum(dim=0).tolist(), "nonfinite_particle_share": nonfinite}


def analyze_compounding(run, out, params: CompoundingParams) -> Dict[str, Any]:
    run.require_mbpo("compounding")
    torch.manual_seed(params.seed)
    nets = run.networks()
    episodes = run_episodes(run.cfg, policy_actor(nets.policy, run.device, params.deterministic),
                            params.episodes, params.max_episode_steps, params.seed, keep_states=True)
    starts = pick_starts([len(ep) for ep in episodes], params.horizon, params.starts)
    if not starts:
        raise DiagnosticsError(f"analyze compounding: the policy's episodes in {run.cfg.env_id} had no steps")
    real, deviation = replay_real(run.cfg, episodes, starts, params.horizon)
    device = run.device
    start_obs = torch.as_tensor(np.stack([episodes[e].obs[t] for e, t in starts]), device=device)
    actions = np.zeros((len(starts), params.horizon, run.dims[1]), np.float32)
    for i, (e, t) in enumerate(starts):
        acts = episodes[e].act[t:t + params.horizon]
        actions[i, :len(acts)] = acts  # after the episode's end: zeros, not scored
    errors = model_errors(nets.model, nets.termination, start_obs, torch.as_tensor(actions, device=device),
                          torch.as_tensor(real, device=device), obs_scale(run.real_rows(), run.layout).to(device),
                          params.particles)
    ks = list(range(1, params.horizon + 1))
    elites = sorted(int(i) for i in nets.model.elite_idx.tolist())
    numbers = {
        "run": str(run.path), "env_steps": nets.env_steps, "params": vars(params), "k": ks,
        "error_unit": "squared error of the observation, each dim divided by its std in D_env, mean over dims",
        "composition": errors["composition"],
        "composition_fit": loglinear_fit(ks, errors["composition"]),
        "composition_mean": errors["composition_mean"],
        "composition_mean_fit": loglinear_fit(ks, errors["composition_mean"]),
        "members": errors["members"], "elites": elites,
        "member_fits": [loglinear_fit(ks, m) for m in errors["members"]],
        "scored_starts": errors["scored_starts"], "start_states": len(starts),
        "nonfinite_particle_share": errors["nonfinite_particle_share"],
        "real_replay_max_abs_diff": deviation,
        "episode_lengths": [len(ep) for ep in episodes],
    }
    numbers["files"] = write_outputs(out, "compounding", numbers, _plot(numbers))
    return numbers


def _plot(numbers: Dict[str, Any]):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7, 4.5))
    ks = numbers["k"]
    for m, curve in enumerate(numbers["members"]):
        elite = m in numbers["elites"]
        ax.plot(ks, [np.nan if v is None else v for v in curve], lw=1, alpha=0.8 if elite else 0.35,
                ls="-" if elite else ":", label=f"member {m}{' (elite)' if elite else ''}")
    ax.plot(ks, [np.nan if v is None else v for v in numbers["composition"]], "k-", lw=2.5,
            label="random elite per step, sampled (MBPO)")
    ax.plot(ks, [np.nan if v is None else v for v in numbers["composition_mean"]], "k-.", lw=1.5,
            label="random elite per step, its mean")
    fit = numbers["composition_fit"]
    title = "compounding model error (open loop, same actions)"
    if fit is not None:
        ax.plot(ks, [fit["intercept"] * fit["growth_per_step"] ** k for k in ks], "k--", lw=1,
                label=f"fit: x{fit['growth_per_step']:.3g} per step")
    ax.set_yscale("log")
    ax.set_xlabel("k (model steps from a real state)")
    ax.set_ylabel("normalised squared obs error")
    ax.set_title(f"{title}\n{numbers['env_steps']} env steps")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig
