"""Sweeps: `mbpo-ray sweep STUDY.yaml` runs a study (algorithms x envs x seeds x variants x
search spaces) as Ray Tune trials, each an ordinary run directory (docs/sweeps.md).

``study``: the study file, its validation and its trials (no Ray, no torch: a bad study is
refused before either is loaded). ``trainable``: the Tune function trainable that drives
``mbpo_ray.train``. ``sweep``: joining or starting Ray, the resource check, Tune's ``Tuner``.
"""
