"""dsim-verify as a library: receive a dsim stream and check every heap.

* :class:`Verifier` (with a :class:`VerifyConfig`) binds a UDP port and, in
  :meth:`Verifier.run`, receives with spead2 until a stop condition, then
  returns a :class:`Report`.
* :class:`Checker` is the same checks as pure logic: feed it
  :class:`DataHeap`\\ s and end-of-stream markers.
* Patterns say what payloads hold: :class:`CounterPattern` (dsim's default),
  :class:`WindowPattern` (a rendered signal), :class:`UncheckedPattern`.
* :func:`udp_socket` is the exclusively bound, big-buffer UDP socket the
  verifier receives on, for anyone who needs one.

Modules: :mod:`.checker` (the rules), :mod:`.expect` (what a heap should
contain), :mod:`.decode` (spead2 heaps to data heaps), :mod:`.receiver`
(socket, stream, Verifier), :mod:`.analysis` (tones, noise, correlation),
:mod:`.plot`, :mod:`.source` (the signal from the command line or katcp),
:mod:`.report`, :mod:`.bits` (N-bit packing) and :mod:`.cli` (the command).
"""

from .analysis import SampleCollector, measure
from .checker import Checker, DataHeap
from .expect import CounterPattern, Pattern, UncheckedPattern, WindowPattern
from .receiver import DEFAULT_BUFFER, Verifier, VerifyConfig, multicast_groups, udp_socket, verify
from .report import (
    CaptureStart,
    Correlation,
    Measurement,
    PayloadError,
    Report,
    Segment,
    Tone,
    summary,
)

__all__ = [
    "DEFAULT_BUFFER",
    "CaptureStart",
    "Checker",
    "Correlation",
    "CounterPattern",
    "DataHeap",
    "Measurement",
    "Pattern",
    "PayloadError",
    "Report",
    "SampleCollector",
    "Segment",
    "Tone",
    "UncheckedPattern",
    "Verifier",
    "VerifyConfig",
    "WindowPattern",
    "measure",
    "multicast_groups",
    "summary",
    "udp_socket",
    "verify",
]
