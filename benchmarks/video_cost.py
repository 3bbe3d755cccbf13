"""What videos cost on this machine (docs/video.md, RESULTS.md "Videos"):

1. a 1,000-frame Hopper-v5 episode (a fixed action; reset when the hopper falls) rendered
   off-screen at each ``--sizes`` side, captioned, and encoded as MP4 and as GIF: seconds for each
   part, env steps excluded;
2. with ``--run RUN_DIR`` (a Hopper mbpo run with checkpoint.pt): ``epoch_videos`` (what
   ``video_every_epochs`` makes at an epoch: the policy's episode of up to 500 steps and a
   100-step dream) timed ``--repeats`` times, against the run's mean epoch wall time from its
   metrics.jsonl: the share of a run's wall time at one video every ``--period`` epochs.

    MUJOCO_GL=egl .venv/bin/python benchmarks/video_cost.py --run runs/hopper --out benchmarks/results/video_cost.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_stamp, write_results  # benchmarks/machine.py  # noqa: E402


def episode_cost(size: int, frames: int) -> dict:
    import numpy as np

    from mbpo_ray.config import make_config
    from mbpo_ray.video import encode
    from mbpo_ray.video.frames import caption
    from mbpo_ray.video.render import make_render_env, render

    cfg = make_config("Hopper-v5", {})
    env = make_render_env(cfg, size)
    env.reset(seed=0)
    action = np.full(env.action_space.shape, 0.1, np.float32)
    times = {"env_step_s": 0.0, "render_s": 0.0, "caption_s": 0.0}
    shot = []
    for t in range(frames):
        start = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        times["env_step_s"] += time.perf_counter() - start
        start = time.perf_counter()
        frame = render(env)
        times["render_s"] += time.perf_counter() - start
        start = time.perf_counter()
        shot.append(caption(frame, ["Hopper-v5", f"step {t}"]))
        times["caption_s"] += time.perf_counter() - start
    env.close()
    folder = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        mp4 = encode.write_mp4(shot, folder / "a.mp4", 125)
        times["mp4_s"] = time.perf_counter() - start
        start = time.perf_counter()
        gif = encode.write_gif(shot, folder / "a.gif", 125)
        times["gif_s"] = time.perf_counter() - start
        sizes = {"mp4_bytes": mp4.stat().st_size, "gif_bytes": gif.stat().st_size}
    finally:
        shutil.rmtree(folder)
    made = times["render_s"] + times["caption_s"] + times["mp4_s"]
    return {"size": size, "frames": frames, **{k: round(v, 3) for k, v in times.items()}, **sizes,
            "render_caption_mp4_s": round(made, 3)}


def run_cost(run_dir: Path, repeats: int, period: int) -> dict:
    from mbpo_ray.run_dir import RunDirectory
    from mbpo_ray.video.make import epoch_videos

    records = RunDirectory(run_dir).read_metrics()
    trained = [r["perf/epoch_seconds"] for r in records if r.get("rollout/k") is not None] or \
        [r["perf/epoch_seconds"] for r in records]
    epoch_s = sum(trained) / len(trained)
    copy = Path(tempfile.mkdtemp()) / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("videos", "wandb"))
    seconds = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            files = epoch_videos(copy, records[-1]["env_steps"])
            seconds.append(time.perf_counter() - start)
        dream = json.loads((files["dream"].parent / "dream.json").read_text())
    finally:
        shutil.rmtree(copy.parent)
    best = min(seconds)
    return {"run": str(run_dir), "epoch_videos_s": [round(s, 2) for s in seconds], "dream_steps": dream["steps"],
            "mean_epoch_s": round(epoch_s, 2), "epochs_averaged": len(trained), "period_epochs": period,
            "share_of_wall_time": round(best / (best + period * epoch_s), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[240, 320, 480])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--run", help="a Hopper mbpo run directory with checkpoint.pt")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--period", type=int, default=10, help="epochs between videos (video_every_epochs)")
    args = parser.parse_args()
    from mbpo_ray.video.render import choose_gl_backend

    backend = choose_gl_backend()
    import torch

    torch.set_num_threads(2)
    result = {"command": "benchmarks/video_cost.py " + " ".join(a for a in sys.argv[1:]), **machine_stamp(),
              "mujoco_gl": backend, "episodes": []}
    for size in args.sizes:
        result["episodes"].append(episode_cost(size, args.frames))
        write_results(args.out, result)
    if args.run:
        result["run_videos"] = run_cost(Path(args.run), args.repeats, args.period)
        write_results(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
