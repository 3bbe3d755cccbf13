"""`analyze bound`: the penalty terms of the MBPO paper's monotonic-improvement bounds against the
rollout length k, and the k they recommend (docs/diagnostics.md#bound).

With eps_m the model error, eps_pi the policy shift, gamma the discount and r_max the reward
bound (the paper, section 4):

* Theorem 4.1 (full model rollouts): eta[pi] >= eta_model[pi] - C_full, with
  C_full = 2 gamma r_max (eps_m + 2 eps_pi) / (1-gamma)^2 + 4 r_max eps_pi / (1-gamma).
* Theorem 4.2 (k-step branched rollouts): eta[pi] >= eta_branch[pi] - C(k), with
  C(k) = 2 r_max [gamma^(k+1) eps_pi / (1-gamma)^2 + (gamma^k + 2) eps_pi / (1-gamma)
                  + k (eps_m + 2 eps_pi) / (1-gamma)].
  Taken literally it is smallest at k = 0.
* Theorem 4.3: C(k) with (eps_m + 2 eps_pi) replaced by eps_m', the model error on the current
  policy's distribution; the paper's empirical generalisation (its Figure 1) gives
  eps_m' = eps_m + eps_pi * slope. Then
  k* = argmin_k [gamma^(k+1) eps_pi / (1-gamma)^2 + gamma^k eps_pi / (1-gamma) + k eps_m' / (1-gamma)].
  Its step from k to k+1 is (eps_m' - eps_pi gamma^k) / (1-gamma), increasing in k, so k* is the
  smallest k >= 0 with gamma^k <= eps_m' / eps_pi: k* > 0 exactly when eps_m' < eps_pi.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

from mbpo_ray.diagnostics.common import plt, write_outputs
from mbpo_ray.diagnostics.params import BoundInputs, BoundParams, DiagnosticsError, check_bound_inputs


def full_rollout_penalty(eps_m: float, eps_pi: float, gamma: float, r_max: float) -> float:
    """C_full of Theorem 4.1."""
    return 2 * gamma * r_max * (eps_m + 2 * eps_pi) / (1 - gamma) ** 2 + 4 * r_max * eps_pi / (1 - gamma)


def branched_penalty(k: int, eps_m: float, eps_pi: float, gamma: float, r_max: float) -> float:
    """C(k) of Theorem 4.2."""
    return 2 * r_max * (gamma ** (k + 1) * eps_pi / (1 - gamma) ** 2 + (gamma ** k + 2) * eps_pi / (1 - gamma)
                        + k * (eps_m + 2 * eps_pi) / (1 - gamma))


def eps_model_shifted(eps_m: float, eps_pi: float, slope: float) -> float:
    """eps_m' = eps_m + eps_pi * slope (the paper's empirical model generalisation)."""
    return eps_m + eps_pi * slope


def branched_penalty_shifted(k: int, eps_m_shifted: float, eps_pi: float, gamma: float, r_max: float) -> float:
    """C(k) of Theorem 4.3: Theorem 4.2's with eps_m' in place of (eps_m + 2 eps_pi)."""
    return 2 * r_max * (gamma ** (k + 1) * eps_pi / (1 - gamma) ** 2 + (gamma ** k + 2) * eps_pi / (1 - gamma)
                        + k * eps_m_shifted / (1 - gamma))


def k_star_objective(k: int, eps_m_shifted: float, eps_pi: float, gamma: float) -> float:
    """The k-dependent part of Theorem 4.3's penalty (the constant 2 eps_pi / (1-gamma) and the
    factor 2 r_max dropped: they do not move the argmin)."""
    return gamma ** (k + 1) * eps_pi / (1 - gamma) ** 2 + gamma ** k * eps_pi / (1 - gamma) + k * eps_m_shifted / (1 - gamma)


def k_star(eps_m_shifted: float, eps_pi: float, gamma: float) -> int:
    """The recommended rollout length: the smallest k >= 0 with eps_pi gamma^k <= eps_m' (see
    the module docstring); 0 when eps_m' >= eps_pi."""
    if eps_m_shifted >= eps_pi:
        return 0
    if eps_m_shifted <= 0:
        raise DiagnosticsError("k* is unbounded when the model error is 0 and the policy shift is not: "
                               "give --eps-model above 0")
    k = max(0, math.ceil(math.log(eps_m_shifted / eps_pi) / math.log(gamma)))
    # guard the rounding of the logarithms: step to the smallest k whose next step does not fall
    while k > 0 and eps_pi * gamma ** (k - 1) <= eps_m_shifted:
        k -= 1
    while eps_pi * gamma ** k > eps_m_shifted:
        k += 1
    return k


def series(eps_m: float, eps_pi: float, gamma: float, r_max: float, slope: float, k_max: int) -> Dict[str, Any]:
    """Every penalty against k = 0..k_max and the recommended k, for one set of inputs."""
    check_bound_inputs(BoundInputs(eps_m, eps_pi, gamma, r_max, slope))
    ks = list(range(k_max + 1))
    shifted = eps_model_shifted(eps_m, eps_pi, slope)
    literal = [branched_penalty(k, eps_m, eps_pi, gamma, r_max) for k in ks]
    with_slope = [branched_penalty_shifted(k, shifted, eps_pi, gamma, r_max) for k in ks]
    best = k_star(shifted, eps_pi, gamma) if not (shifted <= 0 < eps_pi) else None
    return {
        "inputs": {"eps_model": eps_m, "eps_pi": eps_pi, "gamma": gamma, "r_max": r_max, "slope": slope,
                   "eps_model_shifted": shifted},
        "k": ks,
        "theorem_4_1_penalty": full_rollout_penalty(eps_m, eps_pi, gamma, r_max),
        "theorem_4_2_penalty": literal,
        "theorem_4_3_penalty": with_slope,
        "k_star_theorem_4_2": int(np.argmin(literal)),
        "k_star": best,
        "k_star_in_range": int(np.argmin(with_slope)),
    }


def _from_run(run, out, slope_flag: Optional[float]) -> Dict[str, Any]:
    """The inputs measured on a run (docs/diagnostics.md#bound): eps_m the last model/holdout_mse,
    eps_pi the last rollout/policy_kl, r_max the largest |reward| in D_env, gamma sac.discount;
    the slope from --slope, else shift.json in --out, else 0."""
    import json

    records = run.records

    def last(key):
        for r in reversed(records):
            if key in r and r[key] is not None:
                return float(r[key]), int(r["env_steps"])
        return None

    eps_m, eps_pi = last("model/holdout_mse"), last("rollout/policy_kl")
    if eps_m is None or eps_pi is None:
        missing = [k for k, v in (("model/holdout_mse", eps_m), ("rollout/policy_kl", eps_pi)) if v is None]
        raise DiagnosticsError(f"{run.dir.metrics_path} has no {' or '.join(missing)}: the bound measured on a run "
                               f"needs an mbpo run that logged them (train it again with this version, or give "
                               f"--eps-model, --eps-pi, --gamma and --r-max without RUN_DIR)")
    rows = run.real_rows()
    r_max = float(rows[:, run.layout.rew].abs().max())
    sources = {"eps_model": f"model/holdout_mse at {eps_m[1]} env steps (the paper's validation-loss proxy)",
               "eps_pi": f"rollout/policy_kl at {eps_pi[1]} env steps (KL, nats)",
               "r_max": f"largest |reward| in D_env ({rows.shape[0]} transitions)",
               "gamma": "sac.discount"}
    slope, shift_path = 0.0, out / "shift.json"
    if slope_flag is not None:
        slope, sources["slope"] = slope_flag, "--slope"
    elif shift_path.is_file():
        shift = json.loads(shift_path.read_text())
        fits = [s for s in shift.get("slopes", []) if s.get("slope") is not None]
        if fits:
            slope = max(0.0, float(fits[-1]["slope"]))
            sources["slope"] = f"{shift_path.name}: slope at eps_pi = 0 of the model trained on the most data"
    sources.setdefault("slope", "0 (no --slope and no shift.json in --out)")
    eps_direct = last("model/new_data_mse")
    return {"eps_model": eps_m[0], "eps_pi": max(eps_pi[0], 0.0), "gamma": run.cfg.sac.discount,
            "r_max": max(r_max, 1e-12), "slope": slope, "sources": sources,
            "eps_model_shifted_live": None if eps_direct is None else eps_direct[0]}


def analyze_bound(run, out, params: BoundParams, given: BoundInputs) -> Dict[str, Any]:
    numbers: Dict[str, Any] = {"series": {}}
    flags = [given.eps_model, given.eps_pi, given.gamma, given.r_max]
    measured = None
    if run is not None:
        try:
            measured = _from_run(run, out, given.slope)
        except DiagnosticsError as exc:
            if any(v is None for v in flags):
                raise
            numbers["measured_error"] = str(exc)  # every input given: the given series alone
    if any(v is not None for v in flags) or measured is None:
        fill = measured or {}
        values = {}
        for name, value in (("eps_model", given.eps_model), ("eps_pi", given.eps_pi), ("gamma", given.gamma),
                            ("r_max", given.r_max)):
            values[name] = value if value is not None else fill.get(name)
        slope = given.slope if given.slope is not None else (fill.get("slope", 0.0))
        numbers["series"]["given"] = series(values["eps_model"], values["eps_pi"], values["gamma"],
                                            values["r_max"], slope, params.k_max)
    if measured is not None:
        s = series(measured["eps_model"], measured["eps_pi"], measured["gamma"], measured["r_max"],
                   measured["slope"], params.k_max)
        s["sources"] = measured["sources"]
        live = measured["eps_model_shifted_live"]
        if live is not None and live > 0:
            # eps_m' measured directly: the model's error on real data it had not been trained
            # on, from the newest policy (model/new_data_mse)
            s["eps_model_shifted_live"] = live
            s["k_star_live"] = k_star(live, measured["eps_pi"], measured["gamma"])
        # for reference: the TV bound that Pinsker's inequality gives for the measured KL
        s["eps_pi_tv_pinsker"] = math.sqrt(measured["eps_pi"] / 2)
        numbers["series"]["measured"] = s
        numbers["run"] = str(run.path)
    numbers["units_note"] = ("eps_m and eps_pi are proxies in different units (a mean squared error and a KL in "
                             "nats), as in the paper's empirical analysis; k* depends on their ratio eps_m'/eps_pi "
                             "and on gamma only")
    fig = _plot(numbers)
    numbers["files"] = write_outputs(out, "bound", numbers, fig)
    return numbers


def _plot(numbers: Dict[str, Any]):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(7.5, 4.6))
    styles = {"given": "-", "measured": "--"}
    for name, s in numbers["series"].items():
        ks = s["k"]
        line, = ax.plot(ks, s["theorem_4_3_penalty"], styles[name],
                        label=f"{name}: Thm 4.3 penalty (eps_m' = {s['inputs']['eps_model_shifted']:.3g})")
        ax.plot(ks, s["theorem_4_2_penalty"], styles[name], color=line.get_color(), alpha=0.45,
                label=f"{name}: Thm 4.2 penalty (literal)")
        ax.axhline(s["theorem_4_1_penalty"], color=line.get_color(), ls=":", lw=1,
                   label=f"{name}: Thm 4.1 (full rollouts)")
        if s["k_star"] is not None and s["k_star"] <= ks[-1]:
            ax.plot([s["k_star"]], [s["theorem_4_3_penalty"][s["k_star"]]], "o", color=line.get_color(), ms=8)
            ax.annotate(f"k* = {s['k_star']}", (s["k_star"], s["theorem_4_3_penalty"][s["k_star"]]),
                        textcoords="offset points", xytext=(6, 6), color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("rollout length k")
    ax.set_ylabel("penalty (return units)")
    ax.set_title("MBPO bound: penalty against k")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig
