"""dsim: a digitiser simulator that streams SPEAD heaps of ADC samples.

The package is laid out one concern per module:

* :mod:`dsim.layout`: the wire format (items, descriptors, heaps).
* :mod:`dsim.generator`: the running sample and timestamp counters.
* :mod:`dsim.transport`: creating the spead2 send stream (UDP, ibverbs, in-process).
* :mod:`dsim.engine`: the batching engine, capture state and statistics.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dsim")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
