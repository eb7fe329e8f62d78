#!/usr/bin/env python3
"""Sender-only throughput benchmark: dsim's batching engine against reference senders,
on one or more spead2 builds side by side.

Payload MB/s into an unread UDP socket on 127.0.0.1 of four senders putting the
tutorial format on the wire as fast as they can (``--senders``):

* ``engine``: dsim's engine (:mod:`benchkit.engine_sender`);
* ``plain``: one heap at a time, two in flight (spead2 tutorial style);
* ``tutorial``: spead2's batched tutorial sender, in Python;
* ``cxx``: spead2's C++ batched tutorial sender, built from the installed spead2's
  source with GSO by ``scripts/build_cxx_sender.sh`` (left out if not built).

Each Python build (``--python``) runs in a worker process of its own; all
measurements are interleaved across builds and senders and medians of
``--repeats`` reported, with ratios, a CSV of every repetition and a plot.
docs/benchmarks.md describes what is timed and how a run is organised.

    .venv/bin/python scripts/bench_send.py                 # full run, ~5-8 minutes
    .venv/bin/python scripts/bench_send.py --quick         # smoke run
    .venv/bin/python scripts/bench_send.py --placement     # engine variants, ~3 minutes
    .venv/bin/python scripts/bench_send.py --python gso=.venv-gso/bin/python \\
        --senders engine,cxx --heap-sizes 8K,64K,1M --packet-sizes 9000 --bytes 4G
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from benchkit import options, sendbench, worker


def main(argv: Sequence[str] | None = None) -> int:
    args = options.parse_args(argv)
    if args.worker:
        return worker.main()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return sendbench.run(args)


if __name__ == "__main__":
    sys.exit(main())
