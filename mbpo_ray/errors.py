"""Errors for bad input; each message names what is wrong and what is allowed."""


class ConfigError(ValueError):
    """A config field has a wrong name or an impossible value."""


class UnknownEnvError(ConfigError):
    """An env id that mbpo-ray does not support."""
