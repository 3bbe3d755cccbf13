"""mbpo-ray: model-based policy optimisation (Janner et al. 2019) as a distributed
experiment platform."""
__version__ = "0.1.0"
