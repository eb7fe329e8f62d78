"""The render threads: a small pool at low priority, cancellable between tasks."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DsimError
from .nodes import Context

#: Samples per task handed to a worker thread (a whole number of chunks).
TASK = 1 << 19


class RenderCancelled(DsimError):
    """A render was stopped before it finished (the engine is closing)."""


#: Render threads run at this niceness (Linux: per thread), so that the event loop and
#: the sending threads of the process (and everything else) preempt them at once.
RENDER_NICE = 10


def _lower_priority() -> None:
    """Make the calling thread a background one (best effort; Linux sets nice per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RENDER_NICE)
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or not allowed
        pass


class Workers:
    """A small pool of background threads running loops over numbered tasks.

    Each thread has its own Context. Every piece of rendering work, including a
    single-threaded FFT, runs in these threads (never the caller's), at
    RENDER_NICE.
    """

    def __init__(self, threads: int, period: int, quiet: bool = False) -> None:
        self.threads = threads
        self.period = period
        self.quiet = quiet  # silence numpy's overflow warnings (a plan that is not safe)
        self.executor = ThreadPoolExecutor(threads, "dsim-render", initializer=_lower_priority)

    def call(self, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """Run `fn` in one of the threads and return its result."""
        return self.executor.submit(self._quietly, fn).result()

    def _quietly(self, fn: Callable[[], np.ndarray]) -> np.ndarray:
        if self.quiet:
            with np.errstate(over="ignore", invalid="ignore"):
                return fn()
        return fn()

    def run(
        self,
        n_tasks: int,
        task: Callable[[Context, int], None],
        cancel: threading.Event | None = None,
    ) -> None:
        """Run ``task(ctx, i)`` for i in range(n_tasks), spread over the threads.

        Setting `cancel` stops the threads at their next task and raises
        :exc:`RenderCancelled` (a closing engine must not wait for a long render).
        """
        counter = itertools.count()
        lock = threading.Lock()
        # A task's failure stops the other threads here; it must never touch `cancel`,
        # which belongs to the caller (the engine's: setting it would close the engine).
        failed = threading.Event()

        def stopped() -> bool:
            return failed.is_set() or (cancel is not None and cancel.is_set())

        def loop() -> None:
            ctx = Context(self.period)
            while not stopped():
                with lock:
                    i = next(counter)
                if i >= n_tasks:
                    return
                try:
                    if self.quiet:
                        with np.errstate(over="ignore", invalid="ignore"):
                            task(ctx, i)
                    else:
                        task(ctx, i)
                except BaseException:
                    failed.set()
                    raise

        futures = [self.executor.submit(loop) for _ in range(max(1, min(self.threads, n_tasks)))]
        for future in futures:
            future.result()
        if cancel is not None and cancel.is_set():
            raise RenderCancelled("rendering was cancelled")

    def close(self) -> None:
        self.executor.shutdown()
