"""An array of simulated antennas: one dsim process per antenna, on one ADC clock.

A correlator makes sense of its antennas only if their samples line up. Each
antenna ``k`` here is a ``dsim`` process in the MeerKAT format with digitiser
ids ``2k`` and ``2k + 1`` (one per polarisation), all with the same
``--sync-time`` and ADC rate, so that timestamp ``t`` means the same instant
everywhere; given the same signal spec with explicit seeds they send identical
samples at equal timestamps. Captures and signal changes are requested for an
exact timestamp, so every antenna starts or switches on the same sample.

Processes can be started under a command prefix (``ip netns exec NAME``, say)
to put each antenna on a "host" of its own.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiokatcp

from .clock import DEFAULT_ALIGN_SAMPLES
from .errors import DsimError

logger = logging.getLogger(__name__)
#: Seconds a process may take to start (it renders its start-up signal first).
START_TIMEOUT = 60.0
#: Seconds an antenna may take to exit once asked, before it is killed.
STOP_TIMEOUT = 5.0
#: Seconds any one katcp request may take.
REQUEST_TIMEOUT = 60.0
_LISTENING = re.compile(r"katcp server listening on (\S+):(\d+)\s*$")


def katcp_address_from_log(line: str) -> tuple[str, int] | None:
    """The katcp address a ``dsim`` process announces in this log line, if it does.

    dsim writes ``katcp server listening on HOST:PORT`` to stderr at start-up (at any
    log level), which is how a launcher learns the port of ``--katcp-port 0``.
    """
    match = _LISTENING.search(line)
    return (match.group(1), int(match.group(2))) if match else None


class ArrayError(DsimError):
    """An antenna did not start or did not answer."""


@dataclass
class Launched:
    """A ``dsim`` process that has announced its katcp address."""

    process: asyncio.subprocess.Process
    katcp_address: tuple[str, int]
    #: Its log so far (stderr is still open: keep reading it, or dsim may block).
    log: list[str]


async def launch(
    args: Sequence[str], *, prefix: Sequence[str] = (), timeout: float = START_TIMEOUT
) -> Launched:
    """Start ``python -m dsim ARGS`` (under the command `prefix`) and wait until it
    announces its katcp address; a process that exits or times out first is ended and
    :exc:`ArrayError` raised. Pass ``--katcp-port 0`` for a free port."""
    process = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "dsim", *args, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await process.stderr.readline()).decode(errors="replace")
                if not line:
                    raise ArrayError(f"dsim exited: {''.join(log[-5:]).strip()}")
                log.append(line)
                if address := katcp_address_from_log(line):
                    return Launched(process, address, log)
    except BaseException as exc:
        if process.returncode is None:
            process.kill()
        await process.wait()
        if isinstance(exc, TimeoutError):
            raise ArrayError(f"dsim did not start within {timeout} s") from None
        raise


def option_args(options: dict[str, Any]) -> list[str]:
    """Keyword options as command-line flags: ``heap_size=5120`` -> ``--heap-size 5120``."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is False and name == "end_of_stream":  # the one flag with a --no- form
            args.append("--no-end-of-stream")
            continue
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        else:
            args += [flag, str(value)]
    return args


@dataclass
class Antenna:
    """One simulated antenna: its process, katcp address and client."""

    index: int
    process: asyncio.subprocess.Process
    katcp_address: tuple[str, int]
    client: aiokatcp.Client
    log: list[str] = field(default_factory=list)

    @property
    def digitiser_ids(self) -> tuple[int, int]:
        return 2 * self.index, 2 * self.index + 1

    async def request(self, name: str, *args: Any) -> list[bytes]:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            reply, _ = await self.client.request(name, *args)
        return reply

    async def sensor(self, name: str) -> Any:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            value = await self.client.sensor_value(name)
        return value.decode() if isinstance(value, bytes) else value


class Array:
    """N running dsim processes that share one ADC clock. Use :meth:`start`."""

    def __init__(
        self,
        antennas: list[Antenna],
        sync_time: float,
        adc_sample_rate: float,
        align_samples: int,
        heap_samples: int,
    ) -> None:
        self.antennas = antennas
        self.sync_time = sync_time
        self.adc_sample_rate = adc_sample_rate
        self.align_samples = align_samples
        self.heap_samples = heap_samples
        self._processes: list[asyncio.subprocess.Process] = []  # every one started
        self._drains: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        n: int,
        *,
        signals: str | Callable[[int], str] | None = None,
        sync_time: float | None = None,
        adc_sample_rate: float = 1712e6 / 256,
        destinations: Callable[[int], Sequence[str]] | None = None,
        katcp_host: str | Callable[[int], str] = "127.0.0.1",
        prefix: Callable[[int], Sequence[str]] | None = None,
        align_samples: int = DEFAULT_ALIGN_SAMPLES,
        **options: Any,
    ) -> Array:
        """Start `n` antennas; every keyword of the command line is accepted.

        `signals` may be one spec for all, or a function of the antenna index
        (a per-antenna delay, say). `destinations(k)` gives antenna k's DESTs,
        one per polarisation (default 127.0.0.1, ports 7148 + 2k and 7149 + 2k).
        `prefix(k)` is a command prefix, e.g. ``["ip", "netns", "exec", "ant0"]``.
        """
        if n < 1:
            raise ArrayError(f"an array needs at least one antenna, not {n}")
        sync = time.time() if sync_time is None else sync_time
        array = cls([], sync, adc_sample_rate, align_samples, heap_samples=0)
        starts = [
            asyncio.create_task(
                array._start_one(k, signals, destinations, katcp_host, prefix, options)
            )
            for k in range(n)
        ]
        try:
            await asyncio.gather(*starts)
            array.antennas.sort(key=lambda a: a.index)
            # The heap size as the antennas chose it (the format's default, unless given).
            first = array.antennas[0]
            heap_bits = int(await first.sensor("heap-size")) * 8
            array.heap_samples = heap_bits // int(await first.sensor("sample-bits"))
        except BaseException:
            for task in starts:  # one antenna failed: stop starting the others
                task.cancel()
            await asyncio.gather(*starts, return_exceptions=True)
            await array.close()
            raise
        return array

    async def _start_one(
        self,
        k: int,
        signals: str | Callable[[int], str] | None,
        destinations: Callable[[int], Sequence[str]] | None,
        katcp_host: str | Callable[[int], str],
        prefix: Callable[[int], Sequence[str]] | None,
        options: dict[str, Any],
    ) -> Antenna:
        host = katcp_host(k) if callable(katcp_host) else katcp_host
        spec = signals(k) if callable(signals) else signals
        dests = (
            destinations(k)
            if destinations
            else [f"127.0.0.1:{7148 + 2 * k}", f"127.0.0.1:{7149 + 2 * k}"]
        )
        args = [
            "--format",
            "meerkat",
            "--digitiser-id",
            str(2 * k),
            "--sync-time",
            repr(self.sync_time),
            "--adc-sample-rate",
            repr(self.adc_sample_rate),
            "--align-samples",
            str(self.align_samples),
            "--katcp-host",
            host,
            "--katcp-port",
            "0",
            *option_args({"signals": spec, **options}),
            *dests,
        ]
        try:
            launched = await launch(args, prefix=prefix(k) if prefix else ())
        except ArrayError as exc:
            raise ArrayError(f"antenna {k}: {exc}") from None
        process, address, log = launched.process, launched.katcp_address, launched.log
        self._processes.append(process)  # from here on, close() ends it whatever happens
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                client = await aiokatcp.Client.connect(*address)
        except (OSError, TimeoutError) as exc:
            raise ArrayError(f"antenna {k}: cannot connect to {address}: {exc}") from None
        antenna = Antenna(k, process, address, client, log)
        self.antennas.append(antenna)
        self._drains.append(asyncio.create_task(_drain(process, log)))
        return antenna

    # ------------------------------------------------------------- control

    def timestamp_after(self, seconds: float) -> int:
        """The first heap boundary at least `seconds` from now (on the shared clock)."""
        t = (time.time() + seconds - self.sync_time) * self.adc_sample_rate
        return math.ceil(t / self.heap_samples) * self.heap_samples

    async def capture_start(
        self, heaps: int | None = None, timestamp: int | None = None, margin: float = 0.5
    ) -> int:
        """Start every antenna on the same sample (default: aligned, `margin` s ahead)."""
        if timestamp is None:
            t = self.timestamp_after(margin)
            timestamp = -(-t // self.align_samples) * self.align_samples
        await asyncio.gather(
            *(a.request("capture-start", heaps or 0, timestamp) for a in self.antennas)
        )
        return timestamp

    async def capture_stop(self) -> list[int]:
        replies = await asyncio.gather(*(a.request("capture-stop") for a in self.antennas))
        return [int(r[0]) for r in replies]

    async def set_signals(
        self,
        spec: str | Callable[[int], str],
        period: int | None = None,
        timestamp: int | None = None,
        margin: float | None = None,
    ) -> int:
        """Switch every antenna's signal at one timestamp (default: `margin` s ahead).

        Each antenna renders its window before the switch, so the default margin
        allows for rendering while streaming: 2 s plus 2 s per 2**25 samples of
        period (measured: 0.75 s median, 1.35 s at worst, for 2**25).
        """
        windows = [
            period if period is not None else int(await a.sensor("period")) for a in self.antennas
        ]
        if timestamp is None:
            if margin is None:
                margin = 2.0 + 2.0 * max(windows, default=0) / (1 << 25)
            timestamp = self.timestamp_after(margin)

        async def one(antenna: Antenna, window: int) -> None:
            text = spec(antenna.index) if callable(spec) else spec
            await antenna.request("signals", text, window, timestamp)

        await asyncio.gather(*(one(a, w) for a, w in zip(self.antennas, windows, strict=True)))
        return timestamp

    async def close(self) -> None:
        """Halt every antenna, and end every process started (killing any that does
        not exit within `STOP_TIMEOUT`), even those that never answered; safe to call
        twice."""

        async def halt(antenna: Antenna) -> None:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await antenna.client.request("halt")
            except (Exception, TimeoutError) as exc:  # it is ended below in any case
                logger.warning("antenna %d did not halt: %s", antenna.index, exc or "timed out")
            antenna.client.close()
            await antenna.client.wait_closed()

        halted = {id(a.process) for a in self.antennas}
        await asyncio.gather(*(halt(a) for a in self.antennas))
        await asyncio.gather(*(_end(p, id(p) in halted) for p in self._processes))
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self.antennas, self._processes, self._drains = [], [], []


async def _end(process: asyncio.subprocess.Process, halted: bool) -> None:
    """Wait for a process to exit: after ?halt, or else after SIGTERM; kill at the last."""
    if process.returncode is None and not halted:
        process.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def _drain(process: asyncio.subprocess.Process, log: list[str]) -> None:
    """Keep reading a process's log, so that it never blocks on a full pipe."""
    assert process.stderr is not None
    while line := await process.stderr.readline():
        log.append(line.decode())
        del log[:-1000]
