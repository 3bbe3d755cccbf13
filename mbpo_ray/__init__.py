"""mbpo-ray: model-based policy optimisation (Janner et al. 2019) as a distributed
experiment platform."""
import os as _os

__version__ = "0.1.0"

# Off-screen rendering by default (docs/video.md, "Rendering"): MuJoCo reads MUJOCO_GL once, when
# it is first imported, and would otherwise take GLFW, which needs a display. A process of the
# platform (a run that logs videos, a test, a Ray worker, which inherits the environment) renders
# with EGL unless the user chose a backend or has a display; `mbpo-ray video` may still pick
# another (mbpo_ray.video.render.choose_gl_backend) before MuJoCo is imported.
GL_DEFAULTED = "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY")
if GL_DEFAULTED:
    _os.environ["MUJOCO_GL"] = "egl"
    _os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
