"""Videos of a run (`mbpo-ray video`, docs/video.md): its policy in the real env, and the model's
dream beside reality. Importing this package is cheap; MuJoCo, torch and the encoders load when
a video is made."""
