"""`analyze flow`: the data flow of a run drawn with the measured rate of each stage
(docs/diagnostics.md#flow), from metrics.jsonl and config.yaml alone (no checkpoint needed).

Stages: env steps into D_env, model fits on D_env, branched rollouts into D_model, SAC updates
on mixed batches. Counts per epoch come from the config (fits and rollout batches by the
schedule's frequencies) and the records (env steps, rollout/transitions, train/updates); speeds
from the perf/ keys (docs/metrics.md#perf): the local runtime and the Ray sync schedule time
each phase (perf/<phase>_seconds); the Ray runtime also reports each role's own speed, per actor
(perf/collector_env_steps_per_s, perf/learner_updates_per_s,
perf/rollout_transitions_per_s_per_worker, model/actor_seconds). The figures are means over the
last ``epochs`` records after the warm-up.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from mbpo_ray.data.buffers import d_env_capacity
from mbpo_ray.diagnostics.common import plt, write_outputs
from mbpo_ray.diagnostics.params import DiagnosticsError, FlowParams

PHASES = ("env", "model", "rollout", "sac", "eval")
ACTOR_RATES = {"perf/collector_env_steps_per_s": "collector env steps/s",
               "perf/learner_updates_per_s": "learner SAC updates/s",
               "perf/rollout_transitions_per_s_per_worker": "rollout worker transitions/s"}


def _mean(records: List[Dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def _events_between(start: int, end: int, first: int, every: int) -> int:
    """How many t in [start, end) satisfy t >= first and (t - first) % every == 0."""
    lo = max(start, first)
    if end <= lo:
        return 0
    first_m = -((first - lo) // every)  # ceil((lo - first) / every)
    return max(0, (end - 1 - first) // every - first_m + 1)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b is not None and b > 0 else None


def analyze_flow(run, out, params: FlowParams) -> Dict[str, Any]:
    cfg, b = run.cfg, run.cfg.mbpo
    if not run.records:
        raise DiagnosticsError(f"{run.dir.metrics_path} has no records yet (the run has not finished an epoch)")
    # per-record counts of the epoch that record closes
    per_epoch = []
    previous = 0
    rollout_freq = b.rollout_freq or b.model_train_freq
    uses_model = b.real_ratio < 1 and cfg.algo == "mbpo"
    for r in run.records:
        steps = r["env_steps"] - previous
        row = {"env_steps": r["env_steps"], "steps": steps, "updates": r.get("train/updates", 0),
               "fits": _events_between(previous, r["env_steps"], b.init_random_steps, b.model_train_freq)
               if uses_model else 0,
               "rollout_batches": _events_between(previous, r["env_steps"], b.init_random_steps, rollout_freq)
               if uses_model else 0,
               "rollout_transitions_per_batch": r.get("rollout/transitions"),
               "epoch_seconds": r.get("perf/epoch_seconds")}
        row.update({f"{p}_seconds": r.get(f"perf/{p}_seconds") for p in PHASES})
        row.update({key: r[key] for key in ACTOR_RATES if key in r})
        per_epoch.append(row)
        previous = r["env_steps"]
    learning = [row for row, r in zip(per_epoch, run.records) if r["env_steps"] > b.init_random_steps] or per_epoch
    recent_rows = learning[-params.epochs:]
    recent = run.records[len(per_epoch) - len(recent_rows):]

    def total(key):
        values = [row[key] for row in recent_rows if row[key] is not None]
        return float(np.sum(values)) if values else None

    steps, updates, fits, batches = total("steps"), total("updates"), total("fits"), total("rollout_batches")
    transitions = sum((row["rollout_transitions_per_batch"] or 0) * row["rollout_batches"] for row in recent_rows)
    seconds = {p: total(f"{p}_seconds") for p in PHASES}
    epoch_seconds = total("epoch_seconds")
    async_schedule = cfg.runtime == "ray" and cfg.ray.schedule == "async"
    measured_phases = not async_schedule and any((seconds[p] or 0) > 0 for p in ("env", "sac"))
    share = {p: _ratio(seconds[p], epoch_seconds) for p in PHASES} if measured_phases else {}

    stages: Dict[str, Dict[str, Any]] = {
        "env": {"per_epoch": _ratio(steps, len(recent_rows)), "unit": "env steps",
                "rate": _ratio(steps, seconds["env"]) if measured_phases else None,
                "time_share": share.get("env")},
        "model": {"per_epoch": _ratio(fits, len(recent_rows)), "unit": "fits",
                  "seconds_per_fit": _ratio(seconds["model"], fits) if measured_phases else None,
                  "fit_seconds_in_trainer": _mean(recent, "model/fit_seconds"),
                  "time_share": share.get("model")},
        "rollout": {"per_epoch": _ratio(transitions, len(recent_rows)), "unit": "model transitions",
                    "rate": _ratio(transitions, seconds["rollout"]) if measured_phases else None,
                    "batches_per_epoch": _ratio(batches, len(recent_rows)), "k": _mean(recent, "rollout/k"),
                    "time_share": share.get("rollout")},
        "sac": {"per_epoch": _ratio(updates, len(recent_rows)), "unit": "SAC updates",
                "rate": _ratio(updates, seconds["sac"]) if measured_phases else None,
                "updates_per_env_step": _ratio(updates, steps), "time_share": share.get("sac")},
        "eval": {"seconds_per_epoch": _ratio(seconds["eval"], len(recent_rows)), "time_share": share.get("eval")},
    }
    if not uses_model:
        stages.pop("model")
        stages.pop("rollout")
    actors = None
    if cfg.runtime == "ray":
        r = cfg.ray
        actors = {
            "collectors": {"count": r.num_collectors, "env_steps_per_s_each": _mean(recent, "perf/collector_env_steps_per_s"),
                           "policy_lag": _mean(recent, "perf/collector_policy_lag")},
            "model_trainer": {"count": 1, "seconds_per_fit": _mean(recent, "model/actor_seconds")},
            "rollout_workers": {"count": r.num_rollout_workers,
                                "transitions_per_s_each": _mean(recent, "perf/rollout_transitions_per_s_per_worker"),
                                "model_lag": _mean(recent, "perf/rollout_model_lag"),
                                "policy_lag": _mean(recent, "perf/rollout_policy_lag")},
            "learner": {"count": 1, "updates_per_s": _mean(recent, "perf/learner_updates_per_s")},
            "driver": {"wait_seconds_per_epoch": _mean(recent, "perf/driver_wait_seconds"),
                       "updates_per_env_step_total": _mean(recent, "perf/updates_per_env_step_total")},
        }
    last = run.records[-1]
    buffers = {"d_env": min(last["env_steps"], cfg.sac.replay_size),
               "d_env_capacity": d_env_capacity(cfg),
               "d_model": next((r["rollout/model_buffer_size"] for r in reversed(run.records)
                                if "rollout/model_buffer_size" in r), None)}
    numbers = {
        "run": str(run.path), "algo": cfg.algo, "runtime": cfg.runtime,
        "schedule": cfg.ray.schedule if cfg.runtime == "ray" else "step by step",
        "epochs_used": [row["env_steps"] for row in recent_rows], "real_ratio": b.real_ratio,
        "sps": _mean(recent, "perf/sps"), "epoch_seconds": _ratio(epoch_seconds, len(recent_rows)),
        "stages": stages, "actors": actors, "buffers": buffers, "per_epoch": per_epoch,
        "phases_measured": measured_phases,
    }
    numbers["files"] = write_outputs(out, "flow", numbers, _plot(numbers))
    return numbers


def _fmt(value: Optional[float], unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text}{unit}"


def _plot(numbers: Dict[str, Any]):
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    pyplot = plt()
    fig, (ax, bx) = pyplot.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.5, 1]})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    st, actors, buf = numbers["stages"], numbers["actors"], numbers["buffers"]

    def share(stage):
        s = st.get(stage, {}).get("time_share")
        return f"\n{s * 100:.0f} % of the epoch" if s is not None else ""

    env_label = "real env"
    if actors:
        env_label = (f"collectors x{actors['collectors']['count']}\n"
                     f"{_fmt(actors['collectors']['env_steps_per_s_each'], ' steps/s each')}")
    else:
        env_label += f"\n{_fmt(st['env']['rate'], ' steps/s')}"
    boxes = {"env": (0.13, 0.78, env_label + share("env")),
             "d_env": (0.5, 0.78, f"D_env\n{buf['d_env']:,} / {buf['d_env_capacity']:,}"),
             "sac": (0.13, 0.22, "SAC learner\n" + _fmt(actors["learner"]["updates_per_s"] if actors else st["sac"]["rate"],
                                                      " updates/s") + share("sac"))}
    if "model" in st:
        fit_s = actors["model_trainer"]["seconds_per_fit"] if actors else st["model"]["seconds_per_fit"]
        roll = (f"rollout workers x{actors['rollout_workers']['count']}\n"
                f"{_fmt(actors['rollout_workers']['transitions_per_s_each'], ' trans./s each')}") if actors else \
            f"rollouts (k = {_fmt(st['rollout']['k'])})\n{_fmt(st['rollout']['rate'], ' trans./s')}"
        boxes["model"] = (0.87, 0.78, f"model fit\n{_fmt(fit_s, ' s per fit')}" + share("model"))
        boxes["rollout"] = (0.87, 0.22, roll + share("rollout"))
        boxes["d_model"] = (0.5, 0.22, f"D_model\n{_fmt(buf['d_model'])}")
    for name, (x, y, text) in boxes.items():
        buffer = name.startswith("d_")
        ax.add_patch(FancyBboxPatch((x - 0.12, y - 0.1), 0.24, 0.2, boxstyle="round,pad=0.01",
                                    fc="#e8f0fb" if buffer else "#fdf2e3", ec="#555"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def arrow(a, b, label, dashed=False, bend=0.0):
        (x0, y0, _), (x1, y1, _) = boxes[a], boxes[b]
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, shrinkA=42, shrinkB=42,
                                     ls="--" if dashed else "-", color="#333", connectionstyle=f"arc3,rad={bend}"))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + (0.05 if bend == 0 else bend * 0.3), label, ha="center", fontsize=7,
                color="#333", bbox=dict(fc="white", ec="none", alpha=0.8))

    arrow("env", "d_env", f"{_fmt(st['env']['per_epoch'])} steps/epoch")
    real_ratio = numbers["real_ratio"]
    arrow("d_env", "sac", f"{real_ratio * 100:.0f} % of each batch (real)")
    arrow("sac", "env", "policy", dashed=True, bend=0.0)
    if "model" in st:
        arrow("d_env", "model", f"{_fmt(st['model']['per_epoch'])} fits/epoch")
        arrow("model", "rollout", "weights", dashed=True)
        arrow("d_env", "rollout", "start states", bend=-0.15)
        arrow("rollout", "d_model", f"{_fmt(st['rollout']['per_epoch'])} trans./epoch")
        arrow("d_model", "sac", f"{(1 - real_ratio) * 100:.0f} % of each batch")
    title = f"{numbers['algo']} data flow ({numbers['runtime']}, {numbers['schedule']}): " \
            f"{_fmt(st['sac']['per_epoch'])} SAC updates/epoch, {_fmt(numbers['sps'], ' env steps/s')} overall"
    ax.set_title(title, fontsize=9)

    rows = numbers["per_epoch"]
    steps = [r["env_steps"] for r in rows]
    if numbers["phases_measured"]:
        bottom = np.zeros(len(rows))
        for p in PHASES:
            vals = np.array([r[f"{p}_seconds"] or 0.0 for r in rows])
            bx.bar(range(len(rows)), vals, bottom=bottom, label=p)
            bottom += vals
        bx.set_xticks(range(len(rows)))
        bx.set_xticklabels([f"{s // 1000}k" if s >= 1000 else str(s) for s in steps], rotation=90, fontsize=6)
        bx.set_ylabel("seconds per epoch")
        bx.set_title("time per phase, epoch by epoch", fontsize=9)
        bx.legend(fontsize=7)
    elif any(r.get(k) for r in rows for k in ACTOR_RATES):
        # the async schedule overlaps the phases: each role's own speed, epoch by epoch
        for key, label in ACTOR_RATES.items():
            pts = [(r["env_steps"], r[key]) for r in rows if r.get(key)]
            if pts:
                bx.plot(*zip(*pts), "o-", label=label)
        bx.set_yscale("log")
        bx.set_ylabel("per second of the actor's busy time")
        bx.set_title("each role's speed, epoch by epoch (phases overlap)", fontsize=9)
        bx.legend(fontsize=7)
        bx.grid(alpha=0.3, which="both")
    else:
        bx.text(0.5, 0.5, "no phase timings or per-actor rates in these records", ha="center", va="center",
                fontsize=8)
        bx.axis("off")
    bx.set_xlabel("epoch (env steps)")
    fig.tight_layout()
    return fig
