"""Exceptions that carry a message meant for the person running dsim."""


class DsimError(Exception):
    """Base class for errors dsim reports to its user as one line."""


class ConfigError(DsimError, ValueError):
    """A setting is invalid or cannot be put into effect on this machine.

    The message is complete and fits on one line, so that a command line or a
    katcp ``!fail`` reply can show it as it is.
    """
