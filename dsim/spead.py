"""The SPEAD vocabulary that dsim's senders and its verifier share.

One home for the facts of the wire: the flavour, the item ids, the
``digitiser_status`` bits, how timestamps wrap and how heap ids are spent.

Heap ids (``cnt``) follow one rule in every format: data heaps take even ids
that go up by two for every data heap handed to spead2 (across polarisations
and destinations, in sending order), while descriptor and end-of-stream heaps
take odd ids of their own. A receiver that sees every data heap therefore sees
consecutive even ids, and a gap in them is a lost heap, whatever the
timestamps do.
"""

from __future__ import annotations

import numpy as np
import spead2

#: SPEAD-64-48: 64-bit item pointers with 48-bit heap addresses (as MeerKAT uses).
FLAVOUR = spead2.Flavour(4, 64, 48, 0)
#: Bits of an immediate item, and so of a timestamp on the wire.
IMMEDIATE_BITS = FLAVOUR.heap_address_bits
#: Timestamps on the wire are taken modulo this (2**48).
TIMESTAMP_MODULUS = 1 << IMMEDIATE_BITS
#: The largest timestamp dsim starts or switches at (or whose ADC clock it runs): at
#: 1712e6 samples/s that is still 85 years short of 2**63, where the signed 64-bit sample
#: counts of numpy and of receivers overflow.
MAX_TIMESTAMP = 1 << 62

TIMESTAMP_ID = 0x1600
DIGITISER_ID_ID = 0x3101
DIGITISER_STATUS_ID = 0x3102
ADC_SAMPLES_ID = 0x3300

#: digitiser_status: bit 1 is the saturation flag ...
STATUS_SATURATED = 1 << 1
#: ... and bits 47..32 the count of samples at full scale in the heap (capped).
STATUS_COUNT_SHIFT = 32
STATUS_COUNT_MAX = 0xFFFF

#: Default UDP port of a digitiser's SPEAD stream, and of its katcp server.
DEFAULT_DATA_PORT = 7148
DEFAULT_KATCP_PORT = 7147


def full_scale(bits: int) -> int:
    """The largest sample magnitude, ``2**(bits-1) - 1`` (511 for 10 bits): at or beyond it a
    sample is saturated, and the quantiser never goes past it."""
    return (1 << (bits - 1)) - 1


def wrap_signed(values: np.ndarray | int, bits: int) -> np.ndarray:
    """`values` (any integers) wrapped into the signed `bits`-bit range, as int64."""
    half = 1 << (bits - 1)
    return (np.asarray(values, dtype=np.int64) + half) % (1 << bits) - half


def status_word(saturated_counts: np.ndarray | int) -> np.ndarray:
    """digitiser_status for heaps with these counts of samples at full scale (uint64)."""
    counts = np.minimum(np.asarray(saturated_counts, dtype=np.uint64), STATUS_COUNT_MAX)
    flag = np.where(counts > 0, np.uint64(STATUS_SATURATED), np.uint64(0))
    return (counts << np.uint64(STATUS_COUNT_SHIFT)) | flag


def signed_distance(a: int, b: int) -> int:
    """``a - b`` as a signed distance modulo the timestamp range (wire timestamps wrap)."""
    half = TIMESTAMP_MODULUS // 2
    return (a - b + half) % TIMESTAMP_MODULUS - half
