"""`analyze disagreement`: the ensemble's epistemic spread along real trajectories against how
much training data lies near each state (docs/diagnostics.md#disagreement).

Spread: ``ProbabilisticEnsemble.disagreement`` per (state, action), the variance
across the elites of their mean predictions of [reward, obs change] (the same quantity as
rollout/start_disagreement). Nearness to the data: in the model's own standardised input space
((obs, action) minus its mean, divided by its std over the fit's training data), the mean
distance to the ``neighbours`` nearest D_env transitions, and the count of D_env transitions
within the radius r, r being the median over D_env rows of that same k-NN distance. Along the
trajectories the spread is summarised per quantile bin of the distance, with Spearman's rank
correlation. A probe checks the spread far from the data: D_env rows moved by growing distances
along random directions of the standardised space.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch

from mbpo_ray.diagnostics.common import plt, policy_actor, rank_correlation, run_episodes, write_outputs
from mbpo_ray.diagnostics.params import DiagnosticsError, DisagreementParams

BINS = 5
CHUNK = 512  # query rows per distance block (CHUNK x reference rows floats)


def standardise(model, inputs: torch.Tensor) -> torch.Tensor:
    return (inputs - model.input_mean) / model.input_std


@torch.no_grad()
def knn(queries: torch.Tensor, reference: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """Mean distance of each query to its k nearest reference rows ([Q]); with
    ``exclude_self`` the queries are reference rows and the nearest (itself) is skipped."""
    out = []
    take = k + 1 if exclude_self else k
    for chunk in queries.split(CHUNK):
        d = torch.cdist(chunk, reference)
        near = d.topk(min(take, reference.shape[0]), dim=1, largest=False).values
        out.append((near[:, 1:] if exclude_self else near).mean(dim=1))
    return torch.cat(out)


@torch.no_grad()
def count_within(queries: torch.Tensor, reference: torch.Tensor, radius: float) -> torch.Tensor:
    return torch.cat([(torch.cdist(c, reference) <= radius).sum(dim=1) for c in queries.split(CHUNK)])


def analyze_disagreement(run, out, params: DisagreementParams) -> Dict[str, Any]:
    run.require_mbpo("disagreement")
    torch.manual_seed(params.seed)
    nets = run.networks()
    model, layout, device = nets.model, run.layout, run.device
    rows = run.real_rows()
    if rows.shape[0] < params.neighbours + 1:
        raise DiagnosticsError(f"analyze disagreement: D_env holds {rows.shape[0]} transitions; neighbours="
                               f"{params.neighbours} needs more")
    stride = max(1, -(-rows.shape[0] // params.max_data))
    data_in = torch.cat([rows[::stride, layout.obs], rows[::stride, layout.act]], dim=-1)
    reference = standardise(model, data_in)

    episodes = run_episodes(run.cfg, policy_actor(nets.policy, device, params.deterministic), params.episodes,
                            params.max_episode_steps, params.seed)
    obs = torch.as_tensor(np.concatenate([ep.obs[:-1] for ep in episodes]), device=device)
    act = torch.as_tensor(np.concatenate([ep.act for ep in episodes]), device=device)
    spread = model.disagreement(obs, act, per_row=True).cpu().numpy()
    queries = standardise(model, torch.cat([obs, act], dim=-1))
    distance = knn(queries, reference, params.neighbours).cpu().numpy()
    # the radius: the typical k-NN distance of D_env's own rows (a sample of them)
    sample = reference[torch.randperm(reference.shape[0], device=device)[:params.probes]]
    self_distance = knn(sample, reference, params.neighbours, exclude_self=True)
    radius = float(self_distance.median())
    counts = count_within(queries, reference, radius).cpu().numpy()

    edges = np.quantile(distance, np.linspace(0, 1, BINS + 1))
    bins = []
    for i in range(BINS):
        inside = (distance >= edges[i]) & ((distance <= edges[i + 1]) if i == BINS - 1 else (distance < edges[i + 1]))
        if inside.any():
            bins.append({"distance_from": float(edges[i]), "distance_to": float(edges[i + 1]), "states": int(inside.sum()),
                         "mean_distance": float(distance[inside].mean()), "mean_disagreement": float(spread[inside].mean()),
                         "mean_neighbours_within_r": float(counts[inside].mean())})

    # the probe: D_env rows, and the same rows moved away from the data
    on_data = model.disagreement(_unstandardise_obs(model, sample, layout),
                                 _unstandardise_act(model, sample, layout))
    directions = torch.randn_like(sample)
    directions = directions / directions.norm(dim=1, keepdim=True)
    probe = [{"shift": 0.0, "mean_disagreement": float(on_data), "mean_knn_distance": float(self_distance.mean())}]
    for shift in params.shifts:
        moved = sample + shift * directions
        o, a = _unstandardise_obs(model, moved, layout), _unstandardise_act(model, moved, layout)
        probe.append({"shift": float(shift), "mean_disagreement": float(model.disagreement(o, a)),
                      "mean_knn_distance": float(knn(moved, reference, params.neighbours).mean())})
    numbers = {
        "run": str(run.path), "env_steps": nets.env_steps, "params": vars(params),
        "disagreement_unit": "variance across the elites of the mean prediction of [reward, obs change], mean over "
                             "outputs (target units squared)",
        "distance_unit": "Euclidean distance in the model's standardised (obs, action) input space",
        "reference_rows": int(reference.shape[0]), "radius": radius, "trajectory_states": int(len(spread)),
        "rank_correlation": rank_correlation(distance, spread),
        "bins": bins, "probe": probe,
        "on_data_disagreement": probe[0]["mean_disagreement"],
        "trajectory": {"distance": distance, "disagreement": spread, "neighbours_within_r": counts},
    }
    numbers["files"] = write_outputs(out, "disagreement", numbers, _plot(numbers))
    return numbers


def _unstandardise_obs(model, z: torch.Tensor, layout) -> torch.Tensor:
    x = z * model.input_std + model.input_mean
    return x[:, layout.obs]


def _unstandardise_act(model, z: torch.Tensor, layout) -> torch.Tensor:
    x = z * model.input_std + model.input_mean
    return x[:, layout.obs_dim:]


def _plot(numbers: Dict[str, Any]):
    pyplot = plt()
    fig, (a, b) = pyplot.subplots(1, 2, figsize=(10, 4.2))
    t = numbers["trajectory"]
    a.scatter(t["distance"], np.maximum(t["disagreement"], 1e-12), s=6, alpha=0.4, label="states of the policy's episodes")
    bins = numbers["bins"]
    a.plot([b_["mean_distance"] for b_ in bins], [b_["mean_disagreement"] for b_ in bins], "ko-",
           label="mean per distance quintile")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel(f"mean distance to the {numbers['params']['neighbours']} nearest D_env transitions")
    a.set_ylabel("ensemble disagreement")
    corr = numbers["rank_correlation"]
    a.set_title("along real trajectories" + (f" (Spearman {corr:.2f})" if corr is not None else ""))
    a.grid(alpha=0.3, which="both")
    a.legend(fontsize=8)
    probe = numbers["probe"]
    b.plot([p["mean_knn_distance"] for p in probe], [max(p["mean_disagreement"], 1e-12) for p in probe], "o-")
    for p in probe:
        b.annotate(f"+{p['shift']:g}", (p["mean_knn_distance"], max(p["mean_disagreement"], 1e-12)),
                   textcoords="offset points", xytext=(4, 4), fontsize=7)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("mean k-NN distance to D_env")
    b.set_ylabel("ensemble disagreement")
    b.set_title("probe: D_env rows moved away from the data")
    b.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
