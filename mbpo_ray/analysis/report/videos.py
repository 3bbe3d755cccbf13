"""`mbpo-ray report --videos` (docs/report.md, docs/video.md): for each group and env, a GIF of
the final policy of its first seed's run (its checkpoint.pt), one episode of at most
``MAX_STEPS`` steps. A run whose policy cannot be filmed gets a line saying why instead."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import List

from mbpo_ray.analysis.report.document import Block, Figure, ordered_envs, ordered_groups, safe_name

MAX_STEPS = 1000
SIZE = 240


def video_blocks(runs) -> List[Block]:
    from mbpo_ray.video.render import choose_gl_backend

    blocks: List[Block] = [("h2", "Policies"),
                           ("p", f"Each group's final policy in each env: the first seed's checkpoint, one episode of at "
                                 f"most {MAX_STEPS} steps (`mbpo-ray video`, docs/video.md).")]
    try:
        choose_gl_backend()
    except Exception as exc:  # noqa: BLE001
        return blocks + [("p", f"No videos: {exc}")]
    for env in ordered_envs({r.env for r in runs}):
        for group in ordered_groups([r for r in runs if r.env == env]):
            mine = sorted((r for r in runs if r.env == env and r.group == group and r.has_checkpoint),
                          key=lambda r: r.seed)
            if not mine:
                continue
            run = mine[0]
            try:
                gif, ret, steps = _film(run.path)
            except Exception as exc:  # noqa: BLE001  (a report never fails for a video)
                print(f"mbpo-ray report: no video of {run.path}: {exc}", file=sys.stderr)
                blocks.append(("p", f"{group} on {env}: no video ({type(exc).__name__}: {str(exc)[:160]})"))
                continue
            name = f"policy_{safe_name(group)}_{safe_name(env)}.gif"
            blocks.append(("figure", Figure(f"video-{safe_name(group)}-{safe_name(env)}", name,
                                            f"{group} on {env}, seed {run.seed}: return {ret:.1f} in {steps} steps",
                                            gif)))
    return blocks


def _film(path: Path):
    from mbpo_ray.diagnostics.load import Run
    from mbpo_ray.video import encode
    from mbpo_ray.video.make import policy_video
    from mbpo_ray.video.policy import load_policy

    run = Run(path)
    policy = load_policy(run)
    folder = Path(tempfile.mkdtemp())
    try:
        video = policy_video(run, policy, 1, SIZE, 0, MAX_STEPS)
        gif = encode.write_gif(video.frames, folder / "policy.gif", video.fps).read_bytes()
    finally:
        policy.close()
        shutil.rmtree(folder, ignore_errors=True)
    return gif, video.returns[0], video.lengths[0]
