"""Errors for bad input; each message names what is wrong and what is allowed."""


class ConfigError(ValueError):
    """A config field has a wrong name or an impossible value, or asks for something this
    machine does not have (a device, GPUs)."""


class UnknownEnvError(ConfigError):
    """An env id that mbpo-ray does not support."""


class RunDirError(ValueError):
    """The run directory or its checkpoint cannot be used as asked."""
