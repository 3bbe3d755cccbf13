"""Runtimes: where an algorithm's work happens. ``local``: everything in one process;
``ray/``: one run as a group of Ray actors. Algorithms build one with ``factory.make_runtime``
and use it through the interfaces of ``base`` only; nothing here imports ``mbpo_ray.algos``."""
