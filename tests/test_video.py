"""`mbpo-ray video` (mbpo_ray/video, docs/video.md): the policy video and the model's dream on
short Hopper-v5 and InvertedPendulum-v5 runs, rendered off-screen with the backend chosen here;
what the frames show is checked, not only that files exist."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import tiny_overrides
from mbpo_ray.cli import main
from mbpo_ray.video.render import VideoError

TINY_SETS = [f"--set={k}={v}".replace(" ", "") for k, v in tiny_overrides().items() if k not in ("seed", "total_steps")]


def _read_mp4(path):
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return [np.asarray(frame) for frame in reader]
    finally:
        reader.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny mbpo run of each env (600 env steps, the model fit on 400 of them)."""
    root = tmp_path_factory.mktemp("video")
    out = {}
    for env in ("InvertedPendulum-v5", "Hopper-v5"):
        run = root / env
        assert main(["train", "--env", env, "--steps", "600", "--seed", "3", "--out", str(run), "--no-progress",
                     *TINY_SETS, "--set", "keep_checkpoints_every=1"]) == 0
        out[env] = run
    return out


def test_policy_video_frames_show_the_env_moving_with_the_return_drawn(runs, capsys):
    run = runs["Hopper-v5"]
    assert main(["video", str(run), "--episodes", "2", "--max-episode-steps", "30", "--size", "160"]) == 0
    assert "policy: " in capsys.readouterr().err
    folder = run / "videos"
    frames = _read_mp4(folder / "policy.mp4")
    # two episodes of at most 30 steps, each with its first frame
    assert 4 <= len(frames) <= 62 and frames[0].shape == (160, 160, 3)
    assert all(frame.std() > 20 for frame in frames)  # not blank: a lit scene (a blank frame has std ~0)
    # the scene changes as the hopper moves (the camera follows the torso: the floor moves past)
    assert np.abs(frames[0].astype(int) - frames[len(frames) // 4].astype(int)).mean() > 1.0
    # the caption band: the top rows are darkened with white text on them, unlike the frame below
    assert frames[0][:12].mean() < frames[0][40:80].mean()
    assert (folder / "policy.gif").stat().st_size > 1000 and (folder / "policy_sheet.png").is_file()


def test_a_kept_checkpoint_is_filmed_and_a_missing_one_is_named(runs, capsys):
    run = runs["InvertedPendulum-v5"]
    assert main(["video", str(run), "--checkpoint", "400", "--max-episode-steps", "10", "--size", "96",
                 "--out", str(run / "at400")]) == 0
    assert "400 env steps" not in capsys.readouterr().err  # the caption is in the frames
    assert main(["video", str(run), "--checkpoint", "500", "--size", "96"]) == 2
    err = capsys.readouterr().err
    assert "--checkpoint 500" in err and "kept: 200, 400, 600" in err and err.count("\n") == 1


def test_the_dream_starts_on_the_real_state_and_drifts_from_it(runs):
    run = runs["InvertedPendulum-v5"]
    assert main(["video", str(run), "--dream", "--steps", "25", "--members", "2", "--size", "128",
                 "--max-episode-steps", "5"]) == 0
    numbers = json.loads((run / "videos" / "dream.json").read_text())
    best = str(numbers["members"][0])
    error = numbers["error"][best]
    assert numbers["hidden_positions"] == 0 and len(numbers["members"]) == 2
    assert numbers["steps"] == len(error) >= 3
    # open loop from the real first observation: the model's error grows with the steps
    # (InvertedPendulum: the pole falls within ~5-25 steps for a barely trained policy)
    last = min(len(error), 20) - 1
    assert error[0] < error[last], error
    frames = _read_mp4(run / "videos" / "dream.mp4")
    assert len(frames) == numbers["steps"] + 1
    width = frames[0].shape[1]
    panel = (width - 2 * 4) // 3  # three panels (real, two elites) 4 pixels apart
    real, dream = frames[0][:128, :panel].astype(int), frames[0][:128, panel + 4: 2 * panel + 4].astype(int)
    # at step 0 the dream panel is the real state written into the simulator: the same picture
    # but for the caption
    assert np.abs(real[30:] - dream[30:]).mean() < 2.0
    assert frames[0][128:].mean() > 200  # the strip under the panels: a white chart


def test_the_dream_of_hopper_integrates_the_torso_position_it_does_not_observe(runs):
    run = runs["Hopper-v5"]
    assert main(["video", str(run), "--dream", "--steps", "15", "--size", "128"]) == 0
    numbers = json.loads((run / "videos" / "dream.json").read_text())
    assert numbers["hidden_positions"] == 1  # the torso's x
    assert numbers["steps"] >= 2 and all(np.isfinite(v) for v in numbers["disagreement"])
    assert (run / "videos" / "dream_sheet.png").is_file()


def test_bad_requests_are_one_line_errors(runs, tmp_path, capsys):
    run = runs["InvertedPendulum-v5"]
    for args, words in ((["--members", "9"], "--members 9: between 1 and the ensemble's 5 elites"),
                        (["--size", "0"], "--size 0 is not allowed")):
        assert main(["video", str(run), "--dream", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert main(["video", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_an_observation_that_is_not_the_simulators_state_cannot_be_dreamed():
    import gymnasium as gym

    from mbpo_ray.video.make import StateMap

    env = gym.make("InvertedDoublePendulum-v5")
    obs, _ = env.reset(seed=0)
    with pytest.raises(VideoError, match="is not the simulator's positions and velocities"):
        StateMap.of(env, obs)
    env.close()
    env = gym.make("Walker2d-v5")
    obs, _ = env.reset(seed=0)
    assert StateMap.of(env, obs).hidden == 1
    env.close()


def test_no_working_backend_says_what_to_install(monkeypatch):
    import sys

    import mbpo_ray
    import mbpo_ray.video.render as render

    monkeypatch.setattr(mbpo_ray, "GL_DEFAULTED", True)  # MUJOCO_GL as the package set it
    monkeypatch.setattr(render, "_probe", lambda backend: f"{backend} is missing")
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)  # as before MuJoCo is imported
    with pytest.raises(VideoError, match="cannot render off-screen .egl: egl is missing; osmesa: osmesa is missing"
                                         ".: install EGL"):
        render.choose_gl_backend()


def test_video_every_epochs_needs_a_checkpoint_at_those_epochs(tmp_path, capsys):
    args = ["train", "--env", "InvertedPendulum-v5", "--out", str(tmp_path / "run"), "--set", "checkpoint_every_epochs=2"]
    assert main([*args, "--set", "video_every_epochs=3"]) == 2
    err = capsys.readouterr().err
    assert "video_every_epochs=3 is not allowed: 0 (no videos) or a multiple of checkpoint_every_epochs (2)" in err
    assert not (tmp_path / "run").exists()


def test_the_report_embeds_each_groups_final_policy_per_env(runs, tmp_path):
    root = runs["Hopper-v5"].parent
    out = tmp_path / "report"
    assert main(["report", str(root), "--videos", "--reps", "200", "--out", str(out)]) == 0
    gifs = sorted(p.name for p in out.glob("*.gif"))
    assert gifs == ["policy_mbpo_Hopper-v5.gif", "policy_mbpo_InvertedPendulum-v5.gif"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/gif;base64,") == 2 and "<h2>Policies</h2>" in page
    assert "](policy_mbpo_Hopper-v5.gif)" in (out / "report.md").read_text()
    # made again over the previous report: its GIFs are its own files, not foreign ones
    assert main(["report", str(root), "--videos", "--reps", "200", "--out", str(out)]) == 0


@pytest.mark.parametrize("algo", ["sac", "steve"])
def test_the_policy_of_other_algorithms_is_filmed(algo, tmp_path):
    run = tmp_path / algo
    assert main(["train", "--env", "InvertedPendulum-v5", "--algo", algo, "--steps", "400", "--seed", "3",
                 "--out", str(run), "--no-progress", *TINY_SETS]) == 0
    assert main(["video", str(run), "--max-episode-steps", "20", "--size", "96"]) == 0
    frames = _read_mp4(run / "videos" / "policy.mp4")
    assert 2 <= len(frames) <= 21 and all(frame.std() > 20 for frame in frames)
    assert main(["video", str(run), "--dream"]) == 2  # no probabilistic ensemble to dream with


def test_an_env_that_does_not_render_frames_is_a_one_line_error():
    import gymnasium as gym

    from mbpo_ray.video.render import render

    env = gym.make("Pendulum-v1")  # no render_mode: render() gives nothing
    env.reset(seed=0)
    with pytest.raises(VideoError, match=r"Pendulum-v1 cannot render RGB frames \(render_mode='rgb_array' gave "
                                         r"NoneType\): videos need an env that renders"):
        render(env)
    env.close()


def test_a_pets_run_dreams_with_its_ensemble_and_acts_by_its_planner(tmp_path):
    run = tmp_path / "pets"
    small = ["--set", "pets.horizon=8", "--set", "pets.population=40", "--set", "pets.num_elites=4",
             "--set", "pets.iterations=2", "--set", "pets.num_particles=5", "--set", "pets.random_episodes=2"]
    assert main(["train", "--env", "InvertedPendulum-v5", "--algo", "pets", "--steps", "400", "--seed", "3",
                 "--out", str(run), "--no-progress", *TINY_SETS, *small]) == 0
    assert main(["video", str(run), "--dream", "--steps", "8", "--members", "2", "--max-episode-steps", "5",
                 "--size", "96"]) == 0
    numbers = json.loads((run / "videos" / "dream.json").read_text())
    assert numbers["steps"] >= 2 and len(numbers["members"]) == 2 and numbers["env_steps"] == 400
    error = numbers["error"][str(numbers["members"][0])]
    assert all(np.isfinite(e) for e in error) and error[0] < 1.0  # one model step from the real state
    frames = _read_mp4(run / "videos" / "dream.mp4")
    assert len(frames) == numbers["steps"] + 1
