"""`analyze shift`: the model's generalisation under policy shift, the MBPO paper's Figure 1
(docs/diagnostics.md#shift).

The run's policy (checkpoint.pt) is the data-collecting policy pi_D. Fresh real transitions of
pi_D train new ensembles (the run's model config, fits capped at ``fit_epochs``) on increasing
amounts of data. The policy is then optimised further as MBPO optimises it, without retraining
any model (the paper's protocol): the run's SAC agent makes ``updates_per_policy`` more updates
between snapshots on batches of ``mbpo.real_ratio`` D_env data and model data, the model data
being branched rollouts (the run's batch size and k) of the current policy in the run's own,
frozen, ensemble, one batch of them before each policy's updates. That gives ``policies``
policies pi_1, pi_2, ... at increasing distance from pi_D. Each policy
collects ``eval_steps`` real transitions; on them every model is scored (the mean over its
elites of each member's squared error of the mean prediction of [reward, obs change], as
model/holdout_mse) against KL(pi_j || pi_D), averaged over those transitions' states (pi_0 =
pi_D itself, on fresh transitions: KL 0). Panel (b): the slope of model error against KL at
KL = 0, a least-squares line through the points with the smaller half of the KLs (at least
three), for each amount of data; the paper finds it falls as the data grows.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List

import numpy as np
import torch

from mbpo_ray.data.buffers import ReplayBuffer, sample_mixed
from mbpo_ray.diagnostics.common import linear_fit, plt, policy_actor, run_episodes, write_outputs
from mbpo_ray.live_metrics import elite_mse, gaussian_kl
from mbpo_ray.diagnostics.params import DiagnosticsError, ShiftParams
from mbpo_ray.models import EnsembleTrainer, ProbabilisticEnsemble
from mbpo_ray.models.rollout import branched_rollout, rollout_length_at


def collect(cfg, policy, device, steps: int, seed: int, layout) -> torch.Tensor:
    """``steps`` real transitions of the stochastic ``policy`` as rows, episodes restarted as
    they end (time-limit truncation is not terminal)."""
    rows: List[np.ndarray] = []
    episode = 0
    act = policy_actor(policy, device, deterministic=False)
    while sum(r.shape[0] for r in rows) < steps:
        ep = run_episodes(cfg, act, 1, steps, seed * 1000 + episode)[0]
        terminal = np.zeros(len(ep), np.float32)
        terminal[-1] = float(ep.terminated)
        rows.append(layout.pack_numpy(ep.obs[:-1], ep.act, ep.rew, ep.obs[1:], terminal))
        episode += 1
    return torch.as_tensor(np.concatenate(rows)[:steps], device=device)


@torch.no_grad()
def mean_kl(policy, reference, obs: torch.Tensor) -> float:
    """Mean over ``obs`` of KL(policy || reference) (nats)."""
    return float(gaussian_kl(*policy.gaussian(obs), *reference.gaussian(obs)).mean())


def analyze_shift(run, out, params: ShiftParams) -> Dict[str, Any]:
    run.require_mbpo("shift")
    torch.manual_seed(params.seed)
    device, layout, cfg = run.device, run.layout, run.cfg
    agent = run.agent()
    pi_d = copy.deepcopy(agent.policy).eval()
    sizes = sorted(set(params.data_sizes))
    data = collect(cfg, pi_d, device, sizes[-1] + params.eval_steps, params.seed, layout)
    train_pool, fresh = data[:sizes[-1]], data[sizes[-1]:]

    # models trained on increasing amounts of pi_D's data
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.max_fit_epochs = min(params.fit_epochs, model_cfg.max_fit_epochs or params.fit_epochs)
    models = []
    for n in sizes:
        model = ProbabilisticEnsemble(*run.dims, model_cfg).to(device)
        fit = EnsembleTrainer(model, model_cfg).fit_rows(train_pool[:n], layout)
        models.append((n, model.eval(), fit))

    # the policy optimised further as MBPO does, the run's ensemble frozen: branched rollouts of
    # the current policy in it, then SAC on mixed batches of D_env and those rollouts
    real = ReplayBuffer(*run.dims, max(1, run.real_rows().shape[0]), device)
    real.add_rows(run.real_rows())
    if len(real) < cfg.sac.batch_size:
        raise DiagnosticsError(f"analyze shift: D_env holds {len(real)} transitions, fewer than one SAC batch "
                               f"({cfg.sac.batch_size})")
    frozen = run.networks()
    k = rollout_length_at(run.state["env_steps"], cfg.mbpo)
    model_data = ReplayBuffer(*run.dims, max(1, cfg.mbpo.rollout_batch_size * k), device)
    points = [{"policy": 0, "updates": 0, "kl": 0.0, "data": fresh}]
    for j in range(1, params.policies + 1):
        branched_rollout(frozen.model, agent.policy, real.sample(cfg.mbpo.rollout_batch_size)[0], k,
                         frozen.termination, model_data)
        for _ in range(params.updates_per_policy):
            agent.update(*sample_mixed(real, model_data, cfg.sac.batch_size, cfg.mbpo.real_ratio))
        policy = copy.deepcopy(agent.policy).eval()
        rows = collect(cfg, policy, device, params.eval_steps, params.seed + j, layout)
        points.append({"policy": j, "updates": j * params.updates_per_policy,
                       "kl": mean_kl(policy, pi_d, rows[:, layout.obs]), "data": rows})

    errors = {n: [elite_mse(model, p["data"], layout) for p in points] for n, model, _ in models}
    kls = [p["kl"] for p in points]
    near = np.argsort(kls)[:max(3, (len(kls) + 1) // 2)]
    slopes = []
    for n, _, fit in models:
        line = linear_fit([kls[i] for i in near], [errors[n][i] for i in near])
        slopes.append({"data": n, "slope": None if line is None else line["slope"],
                       "intercept": None if line is None else line["intercept"],
                       "holdout_mse": fit["model/holdout_mse"], "fit_epochs": fit["model/epochs"]})
    numbers = {
        "run": str(run.path), "env_steps": run.state["env_steps"], "params": vars(params),
        "error_unit": "mean over the elites of the squared error of the mean prediction of [reward, obs change] "
                      "(model/holdout_mse's definition)",
        "policies": [{k: v for k, v in p.items() if k != "data"} for p in points],
        "kl": kls, "errors": {str(n): e for n, e in errors.items()}, "slopes": slopes,
    }
    numbers["files"] = write_outputs(out, "shift", numbers, _plot(numbers))
    return numbers


def _plot(numbers: Dict[str, Any]):
    pyplot = plt()
    fig, (a, b) = pyplot.subplots(1, 2, figsize=(10, 4.2))
    kls = numbers["kl"]
    order = np.argsort(kls)
    for s in numbers["slopes"]:
        err = numbers["errors"][str(s["data"])]
        line, = a.plot([kls[i] for i in order], [err[i] for i in order], "o-", label=f"{s['data']} transitions")
        if s["slope"] is not None:
            xs = np.linspace(0, max(kls) if max(kls) > 0 else 1, 20)
            a.plot(xs, s["intercept"] + s["slope"] * xs, ":", color=line.get_color(), lw=1)
    a.set_xlabel("policy shift KL(pi || pi_D) (nats)")
    a.set_ylabel("model error (MSE)")
    a.set_title("(a) model error under policy shift")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    fitted = [s for s in numbers["slopes"] if s["slope"] is not None]
    b.plot([s["data"] for s in fitted], [s["slope"] for s in fitted], "o-")
    b.set_xscale("log")
    b.set_xlabel("transitions the model was trained on")
    b.set_ylabel("d error / d KL at KL = 0")
    b.set_title("(b) slope at zero shift")
    b.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig
