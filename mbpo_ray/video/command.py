"""`mbpo-ray video RUN_DIR`: the run's policy in its env, and with --dream the model's dream
beside reality (docs/video.md)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from mbpo_ray.errors import ConfigError


def add_video_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `mbpo-ray train` (or a sweep trial's)")
    parser.add_argument("--out", metavar="DIR", help="where the files go (default RUN_DIR/videos)")
    parser.add_argument("--episodes", type=int, default=1, metavar="N", help="policy episodes to film (default 1)")
    parser.add_argument("--checkpoint", type=int, metavar="ENV_STEPS",
                        help="the networks of a kept copy (checkpoints/step_ENV_STEPS.pt) instead of checkpoint.pt")
    parser.add_argument("--dream", action="store_true",
                        help="also the model's open-loop dream beside the real env (mbpo and pets runs)")
    parser.add_argument("--steps", type=int, default=100, metavar="H",
                        help="steps of the dream (default 100; fewer when the real episode ends sooner)")
    parser.add_argument("--members", type=int, default=1, metavar="M",
                        help="elite members shown in the dream, each its own panel (default 1: the best)")
    parser.add_argument("--max-episode-steps", type=int, metavar="T",
                        help="cut each policy episode after T steps (default: the env's own limit)")
    parser.add_argument("--size", type=int, default=320, metavar="PX", help="frame side in pixels (default 320)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the filmed episodes' starts (default 0)")


def run_video_command(args) -> int:
    for name in ("episodes", "steps", "members", "size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} {getattr(args, name)} is not allowed: a whole number of at least 1")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        raise ConfigError(f"--max-episode-steps {args.max_episode_steps} is not allowed: at least 1")
    from mbpo_ray.video.render import choose_gl_backend

    choose_gl_backend()  # before MuJoCo is imported
    from mbpo_ray.diagnostics.load import Run
    from mbpo_ray.video.make import DREAM_ALGOS, dream_model, dream_video, policy_video, write_numbers, write_video
    from mbpo_ray.video.policy import load_policy
    from mbpo_ray.video.render import VideoError

    run = Run(Path(args.run_dir))
    if args.dream and run.cfg.algo not in DREAM_ALGOS:
        raise VideoError(f"--dream needs a run with a probabilistic ensemble ({', '.join(DREAM_ALGOS)}); "
                         f"{run.path} is a {run.cfg.algo} run")
    if args.dream and not 1 <= args.members <= run.cfg.model.num_elites:
        raise VideoError(f"--members {args.members}: between 1 and the ensemble's {run.cfg.model.num_elites} elites")
    out = Path(args.out) if args.out else run.path / "videos"
    policy = load_policy(run, args.checkpoint)
    try:
        start = time.perf_counter()
        video = policy_video(run, policy, args.episodes, args.size, args.seed, args.max_episode_steps)
        files = write_video(video.frames, video.fps, out, "policy")
        print(f"policy: {len(video.frames)} frames, returns {', '.join(f'{r:.1f}' for r in video.returns)} "
              f"({time.perf_counter() - start:.1f} s): {files['mp4']}, {files['gif']}", file=sys.stderr)
        if args.dream:
            start = time.perf_counter()
            dream = dream_video(run, dream_model(run, policy, args.checkpoint), policy, args.steps, args.members,
                                args.size, args.seed)
            files = write_video(dream.frames, dream.fps, out, "dream")
            write_numbers(dream.numbers, out / "dream.json")
            left = dream.numbers["left_real_at"]
            print(f"dream: {dream.numbers['steps']} steps, the model left the real trajectory "
                  f"{'at step ' + str(left) if left else 'at no step'} (error above {dream.numbers['threshold']:g}) "
                  f"({time.perf_counter() - start:.1f} s): {files['mp4']}, {files['sheet']}", file=sys.stderr)
    finally:
        policy.close()
    return 0
