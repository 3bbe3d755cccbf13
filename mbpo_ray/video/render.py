"""Off-screen rendering of a run's env (docs/video.md, "Rendering").

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported, so the
choice is made before that: the user's ``MUJOCO_GL`` when set; otherwise EGL (set when ``mbpo_ray``
is imported: Mesa's software renderer on a CPU machine, the GPU's on a cluster node), which
`mbpo-ray video` checks in a short child process before MuJoCo loads, falling back to OSMesa.
No display is needed. When none works the error says what to install.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Dict, Optional

import numpy as np

from mbpo_ray.errors import ConfigError

BACKENDS = ("egl", "osmesa")
INSTALL_HINT = ("install EGL (Debian: apt-get install libegl1 libgl1-mesa-dri) or OSMesa (libosmesa6), or set "
                "MUJOCO_GL to a backend that works here")
_PROBE = "import mujoco; c = mujoco.GLContext(16, 16); c.make_current(); c.free()"


class VideoError(ConfigError):
    """A video that cannot be made: one line saying why and what to do."""


def _probe(backend: str) -> Optional[str]:
    """None when MuJoCo can make an off-screen context with ``backend``, else why not."""
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "no answer in 60 s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else f"exit status {done.returncode}"


def choose_gl_backend() -> str:
    """Make sure MuJoCo renders off-screen, before it is imported: the user's ``MUJOCO_GL`` when
    set; else the first of ``BACKENDS`` that can make a context here (``mbpo_ray`` set EGL when
    it was imported; this checks it and falls back to OSMesa). Returns the backend; raises
    VideoError when none works. Once MuJoCo is imported its backend is fixed: nothing is chosen."""
    import mbpo_ray

    current = os.environ.get("MUJOCO_GL", "")
    if "mujoco" in sys.modules or (current and not mbpo_ray.GL_DEFAULTED):
        return current
    failures = []
    for backend in BACKENDS:
        why = _probe(backend)
        if why is None:
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
        failures.append(f"{backend}: {why}")
    raise VideoError(f"cannot render off-screen ({'; '.join(failures)}): {INSTALL_HINT}")


def make_render_env(cfg, size: int):
    """The run's env (its id and env_kwargs) rendering ``size`` x ``size`` RGB frames."""
    from mbpo_ray.envs import make_env

    kwargs: Dict[str, Any] = {**cfg.env_kwargs, "render_mode": "rgb_array"}
    try:
        env = make_env(cfg.env_id, kwargs={**kwargs, "width": size, "height": size})
    except ConfigError:  # an env without width/height keywords: its own size
        env = make_env(cfg.env_id, kwargs=kwargs)
    return env


def render(env) -> np.ndarray:
    """One RGB frame [H, W, 3] uint8, or a VideoError naming the env and the backend."""
    try:
        frame = env.render()
    except Exception as exc:  # noqa: BLE001  (the GL stack's errors have many types)
        raise VideoError(f"{env.spec.id if env.spec else env}: rendering failed with MUJOCO_GL="
                         f"{os.environ.get('MUJOCO_GL', '(unset)')} ({type(exc).__name__}: {str(exc)[:160]}); "
                         f"{INSTALL_HINT}") from None
    if frame is None or not hasattr(frame, "shape") or frame.ndim != 3:
        raise VideoError(f"{env.spec.id if env.spec else env} cannot render RGB frames (render_mode="
                         f"'rgb_array' gave {type(frame).__name__}): videos need an env that renders")
    return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
