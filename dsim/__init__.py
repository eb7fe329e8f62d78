"""dsim: a digitiser simulator that streams SPEAD heaps of ADC samples, controlled over katcp.

The package is laid out one concern per module, data flowing one way:
:mod:`dsim.cli` (the command) and :class:`dsim.Simulator` (the Python API)
build everything from :class:`dsim.settings.Settings`; :mod:`dsim.server`
(katcp) drives :mod:`dsim.engine` (captures and batches), which sends the
heaps of :mod:`dsim.ring` cut from :mod:`dsim.pattern` (counter or a window
rendered by :mod:`dsim.signals`) in a wire format of :mod:`dsim.layout`
through a stream of :mod:`dsim.transport`. :mod:`dsim.verify` checks what
arrives; :mod:`dsim.spead` is the vocabulary they share.
"""

from ._version import __version__
from .simulator import Simulator

__all__ = ["Simulator", "__version__"]
