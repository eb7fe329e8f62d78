"""Exceptions that carry a message meant for the person running dsim."""


class DsimError(Exception):
    """Base class for errors dsim reports to its user as one line."""


class ConfigError(DsimError, ValueError):
    """A setting is invalid or cannot be put into effect on this machine.

    The message is complete and fits on one line, so that a command line or a
    katcp ``!fail`` reply can show it as it is.
    """


class TransportError(DsimError):
    """The network side cannot be set up on this machine (no RDMA device, socket errors).

    Unlike :exc:`ConfigError`, the settings may be fine: the command line
    reports it as a start-up failure (exit status 1), not as bad input.
    """
