"""One running dsim: engine, katcp server and metrics, as the command and the API use it.

:class:`Simulator` is what the ``dsim`` command runs and what a Python
program or a test uses directly::

    async with dsim.Simulator(destinations=["127.0.0.1:7148"], format="meerkat",
                              heap_size=5120) as sim:
        first = await sim.capture_start(heaps=1000)
        print(await sim.sensor("transmitted-heaps"))

Its methods go through its own katcp client, so a program sees exactly what
any katcp client of the device sees (failures are :exc:`aiokatcp.FailReply`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from types import TracebackType
from typing import Any

import aiokatcp

from .background import in_thread
from .engine import Engine
from .errors import DsimError, TransportError
from .metrics import Metrics
from .server import DeviceServer
from .settings import Settings
from .signals import RenderCancelled

logger = logging.getLogger(__name__)
#: Seconds a request of the API may take before it is abandoned.
REQUEST_TIMEOUT = 60.0


class StartupError(DsimError):
    """dsim could not start (the katcp port is taken, no RDMA device, ...)."""


class Simulator:
    """A dsim in this process; every option of the command line is a keyword.

    Without `katcp_port` the katcp server takes a free port (see
    :attr:`katcp_address`); the other defaults are the command line's.
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        if settings is None:
            options.setdefault("katcp_port", 0)
            settings = Settings.from_options(**options)
        elif options:
            raise TypeError("give either settings or options, not both")
        self.settings = settings
        self.engine: Engine | None = None
        self.server: DeviceServer | None = None
        self._client: aiokatcp.Client | None = None
        self._metrics: Metrics | None = None
        self._started = False
        #: Set by :meth:`halt`: stops a start-up still building the engine.
        self._cancel = threading.Event()
        self._halted = asyncio.Event()

    # ----------------------------------------------------------- life cycle

    async def start(self, *, connect_client: bool = True) -> None:
        """Build and start everything; raises ConfigError or :exc:`StartupError`.

        A Simulator runs once: start a new one to run again.
        """
        if self._started:
            raise DsimError("this Simulator has been started already: make a new one")
        self._started = True
        settings = self.settings
        settings.check()
        # Rendering a start-up signal can take seconds: keep the event loop free, and
        # let a halt meanwhile cancel it.
        build = asyncio.ensure_future(in_thread(settings.build_engine, self._cancel))
        halted = asyncio.ensure_future(self._halted.wait())
        await asyncio.wait([build, halted], return_when=asyncio.FIRST_COMPLETED)
        halted.cancel()
        if not build.done():  # a render stage that cannot stop mid-way (an FFT) is left
            build.add_done_callback(_discard)
            return
        try:
            engine = build.result()
        except TransportError as exc:
            raise StartupError(str(exc)) from None
        except RenderCancelled:
            return
        self.engine = engine
        if self._cancel.is_set():  # halted while building
            await engine.close()
            return
        server = DeviceServer(
            engine,
            settings.katcp_host,
            settings.katcp_port,
            destinations=settings.destinations_text,
        )
        try:
            await server.start()
        except OSError as exc:
            await engine.close()
            raise StartupError(
                f"cannot listen for katcp on {settings.katcp_host}:{settings.katcp_port}: "
                f"{_reason(exc)}"
            ) from None
        self.server = server
        if settings.prometheus_port is not None:
            try:
                self._metrics = Metrics(engine, settings.katcp_host, settings.prometheus_port)
            except OSError as exc:
                await self.stop()
                raise StartupError(
                    f"cannot serve Prometheus metrics on port {settings.prometheus_port}: "
                    f"{_reason(exc)}"
                ) from None
        if settings.main_affinity is not None:
            # After the engine made spead2's thread, which would otherwise inherit this.
            os.sched_setaffinity(0, {settings.main_affinity})
        if settings.start:
            engine.start()
        if connect_client:
            host, port = self.katcp_address
            async with asyncio.timeout(REQUEST_TIMEOUT):
                self._client = await aiokatcp.Client.connect(host, port)

    async def stop(self) -> None:
        """Stop any capture, close the server and the client (idempotent)."""
        if self._client is not None:
            self._client.close()
            await self._client.wait_closed()
            self._client = None
        if self.server is not None:
            await self.server.stop()
        elif self.engine is not None:
            await self.engine.close()
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    async def join(self) -> None:
        """Wait until the server stops (``?halt``, or :meth:`halt`); at once if halted."""
        if self.server is not None:
            await self.server.join()

    @property
    def halted(self) -> bool:
        """Whether :meth:`halt` was called (a start-up then stops early)."""
        return self._cancel.is_set()

    def halt(self) -> None:
        """Stop the server as ``?halt`` does (returns at once; :meth:`join` waits).

        During :meth:`start` it cancels the start-up (a signal being rendered included).
        """
        self._cancel.set()
        self._halted.set()
        if self.server is not None:
            self.server.halt()

    async def __aenter__(self) -> Simulator:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------- katcp side

    @property
    def katcp_address(self) -> tuple[str, int]:
        """Host and port of the katcp server."""
        if self.server is None or not self.server.sockets:
            raise DsimError("the simulator is not running")
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def prometheus_port(self) -> int | None:
        """The port the metrics are served on (None without metrics)."""
        return None if self._metrics is None else int(self._metrics.port)

    @property
    def client(self) -> aiokatcp.Client:
        """A connected katcp client of this simulator."""
        if self._client is None:
            raise DsimError("the simulator is not running (or was started without a client)")
        return self._client

    async def request(self, name: str, *args: Any) -> list[bytes]:
        """Send a katcp request; returns the reply's arguments (raises FailReply)."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            reply, _ = await self.client.request(name, *args)
        return reply

    async def capture_start(self, heaps: int | None = None, timestamp: int | None = None) -> int:
        """``?capture-start``: returns the first timestamp."""
        args: list[Any] = []
        if heaps is not None or timestamp is not None:
            args.append(heaps or 0)  # katcp arguments are positional: 0 = no limit
        if timestamp is not None:
            args.append(timestamp)
        return aiokatcp.decode(int, (await self.request("capture-start", *args))[0])

    async def capture_stop(self) -> int:
        """``?capture-stop``: returns the heaps the capture sent."""
        return aiokatcp.decode(int, (await self.request("capture-stop"))[0])

    async def set_signals(
        self, spec: str, period: int | None = None, timestamp: int | None = None
    ) -> int:
        """``?signals``: returns the first timestamp carrying the new signal."""
        args: list[Any] = [spec]
        if period is not None or timestamp is not None:
            args.append(self.engine.period if period is None and self.engine else period)
        if timestamp is not None:
            args.append(timestamp)
        return aiokatcp.decode(int, (await self.request("signals", *args))[0])

    async def set_heap_size(self, heap_size: int) -> int:
        """``?heap-size``: returns the first timestamp at the new size."""
        return aiokatcp.decode(int, (await self.request("heap-size", heap_size))[1])

    @property
    def heap_size(self) -> int:
        if self.engine is None:
            raise DsimError("the simulator is not running")
        return self.engine.heap_size

    async def sensor(self, name: str) -> Any:
        """The value of sensor `name`, decoded to its type (katcp strings as ``str``)."""
        async with asyncio.timeout(REQUEST_TIMEOUT):
            value = await self.client.sensor_value(name)
        return value.decode() if isinstance(value, bytes) else value


def _discard(future: asyncio.Future[Engine]) -> None:
    """Close an engine whose build finished after the start-up was abandoned."""
    if not future.cancelled() and future.exception() is None:
        future.result()._release()


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else str(exc)
