"""Slow work off the event loop, in threads that never hold up a shutdown.

``asyncio.to_thread`` runs in the loop's default executor, which ``asyncio.run``
waits for at exit: a signal window being rendered would then delay a SIGTERM
by seconds. :func:`in_thread` runs the work in a daemon thread instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


async def in_thread(func: Callable[..., _T], *args: Any) -> _T:
    """Run ``func(*args)`` in a daemon thread and wait for its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        if not future.done():
            setter(value)

    def run() -> None:
        try:
            result = func(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome: tuple[Callable[[Any], None], Any] = (future.set_exception, exc)
        else:
            outcome = (future.set_result, result)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="dsim-build", daemon=True).start()
    return await future
