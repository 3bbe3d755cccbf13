"""What `mbpo-ray sweep --dry-run` prints (and the study folder keeps): the trial table, and the
study as YAML."""
from __future__ import annotations

from typing import List

import yaml

from mbpo_ray.runtime.ray.capacity import total
from mbpo_ray.group_dir import GROUP_ALGOS, format_seeds
from mbpo_ray.tune.study.model import ASHA_METRIC, ASHA_TIME_ATTR, Study
from mbpo_ray.tune.study.planning import CellPlan


# --- the trial table (--dry-run) -----------------------------------------------------------------

def _amount(value: float) -> str:
    return f"{value:g}"


def trial_table(study: Study, plans: List[CellPlan], folder: str) -> str:
    """The table `--dry-run` prints and the study folder keeps: one row per cell with its
    trials and resources, then the totals."""
    per_cell = study.trials_per_cell()
    n_trials = per_cell * len(plans)
    head = ["trial", "algo", "env", "seeds", "variant", "runtime", "steps", "trials", "CPU", "GPU", "bundles"]
    rows = []
    for p in plans:
        need = total(p.bundles)
        rows.append([p.cell.name + ("-*" if study.searched else ""), p.cell.algo, p.cell.env, format_seeds(p.cell.seeds),
                     p.cell.variant or "-", p.runtime, str(p.total_steps), str(per_cell),
                     _amount(need.get("CPU", 0)), _amount(need.get("GPU", 0)), str(len(p.bundles))])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    lines = [f"study {study.name}: {n_trials} trial{'s' if n_trials != 1 else ''} "
             f"({len(plans)} cells x {per_cell} per cell), folder {folder}"]
    if study.seeds_per_trial > 1:
        lines.append(f"seeds per trial: up to {study.seeds_per_trial} for {' and '.join(GROUP_ALGOS)} on the local "
                     f"runtime (a seed group in one process, docs/seed_groups.md); one for the others")
    if study.search:
        lines.append("search: " + "; ".join(f"{k} {s.describe()}" for k, s in study.search.items())
                     + (f"; samples {study.samples}" if study.samples > 1 else ""))
    elif study.samples > 1:
        lines.append(f"samples: {study.samples}")
    lines += ["", fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    biggest = {k: max(total(p.bundles).get(k, 0) for p in plans) for k in ("CPU", "GPU")}
    everything = {k: sum(total(p.bundles).get(k, 0) * per_cell for p in plans) for k in ("CPU", "GPU")}
    sched = "none" if study.scheduler == "none" else (
        f"ASHA on {ASHA_METRIC} over {ASHA_TIME_ATTR} (grace period "
        f"{study.grace_period or 'the random warm-up plus one epoch'}, reduction factor {study.reduction_factor:g})")
    mode = ("WANDB_MODE if set, else online if WANDB_API_KEY is set, else offline" if study.wandb.mode == "auto"
            else study.wandb.mode)
    lines += ["",
              f"per trial at most {_amount(biggest['CPU'])} CPU, {_amount(biggest['GPU'])} GPU; "
              f"all trials at once {_amount(everything['CPU'])} CPU, {_amount(everything['GPU'])} GPU",
              f"max concurrent trials: {study.max_concurrent_trials or 'as many as the cluster holds'}; "
              f"max failures per trial: {study.max_failures}; scheduler: {sched}"
              + (f"; time budget {study.time_budget_s:g} s" if study.time_budget_s else ""),
              f"wandb: {mode}"
              + ("" if study.wandb.mode == "disabled" else
                 f" (project {study.wandb.project}, group {study.wandb.group or study.name})")]
    return "\n".join(lines) + "\n"


def dump_study(study: Study) -> str:
    return yaml.safe_dump(study.to_plain(), sort_keys=False)
