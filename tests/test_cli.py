"""The dsim command as a subprocess, as a user or an integration test runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .helpers import Receiver, check_contiguous, udp_socket

KATCPCMD = Path(sys.executable).with_name("katcpcmd")
TIMEOUT = 20.0


class Dsim:
    """A running ``python -m dsim`` whose katcp port has been read from its log."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.log: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Dsim:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dsim", "--katcp-port", "0", *args,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stderr is not None
        log: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, f"dsim exited early: {log}"
                log.append(line)
                if match := re.search(r"katcp server listening on 127\.0\.0\.1:(\d+)", line):
                    break
        dsim = cls(process, int(match.group(1)))
        dsim.log = log
        return dsim

    async def finish(self) -> int:
        assert self.process.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            rest = await self.process.stderr.read()
            self.log += rest.decode().splitlines(keepends=True)
            return await self.process.wait()

    async def katcpcmd(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(KATCPCMD), f"127.0.0.1:{self.port}", *args, stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate()
        assert proc.returncode == 0
        return out.decode()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Receiver, int]]:
    sock = udp_socket()
    receiver = Receiver(sock)
    yield receiver, sock.getsockname()[1]
    receiver.close()
    sock.close()


async def test_katcpcmd_and_sigterm(sink: tuple[Receiver, int]) -> None:
    receiver, port = sink
    dsim = await Dsim.start(f"127.0.0.1:{port}", "--rate", "50e6", "--heap-size", "4096")
    try:
        out = await dsim.katcpcmd("capture-start")
        assert re.fullmatch(r"!capture-start\[\d+\] ok 0\n", out)
        await asyncio.sleep(0.3)
        out = await dsim.katcpcmd("sensor-value", "capture-active")
        assert re.search(r"#sensor-value\[\d+\] \S+ 1 capture-active nominal 1", out)
    finally:
        dsim.process.send_signal(signal.SIGTERM)
        code = await dsim.finish()
    assert code == 0, "".join(dsim.log)
    received = await receiver.collect()
    assert received.ends == 1  # the end-of-stream heap arrived
    assert len(received.heaps) > 0
    check_contiguous(received.heaps)
    log = "".join(dsim.log)
    assert "capture started at timestamp 0" in log
    assert f"capture stopped: {len(received.heaps)} heaps sent" in log
    assert "Traceback" not in log


async def test_halt_and_start_flag(sink: tuple[Receiver, int]) -> None:
    receiver, port = sink
    dsim = await Dsim.start(f"127.0.0.1:{port}", "--rate", "50e6", "--start")
    await asyncio.sleep(0.3)
    out = await dsim.katcpcmd("halt")
    assert re.search(r"!halt\[\d+\] ok", out)
    assert await dsim.finish() == 0
    received = await receiver.collect()
    assert received.ends == 1 and len(received.heaps) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heap-size", "banana"], "argument --heap-size: not an integer: 'banana'"),
        (["--heap-size", "0"], "heap size must be positive, not 0"),
        (["--rate", "-5"], "rate must be >= 0"),
        (["--packet-size", "20"], "packet size must be"),
        (["--max-packet-size", "70000"], "packet size must be"),
        (["--main-affinity", "9999"], "CPU core 9999 is not available"),
        (["--katcp-port", "70000"], "--katcp-port: must be 0-65535"),
        (["nonexistent.invalid:7148"], "does not resolve"),
        (["127.0.0.1:99999"], "port must be 1-65535"),
        (["--ibv", "127.0.0.1:7148", "--interface", "127.0.0.1"], "only to IPv4 multicast"),
        (["--affinity", "9999"], "CPU core 9999 is not available"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--log-level", "chatty"], "argument --log-level: invalid choice"),
        (["--format", "meerkat", "--packet-size", "9000"], "drop --packet-size"),
        (["--format", "meerkat", "--heap-size", "5121"], "whole groups of 10-bit samples"),
        (["--format", "meerkat", "--heap-size", "20480"], "one packet per heap"),
        (["--format", "tutorial", "--sample-bits", "10"], "8-bit samples"),
        (["--format", "vinyl"], "argument --format: invalid choice"),
        (["--sync-time", "5"], "--sync-time needs --adc-sample-rate"),
        (["--adc-sample-rate", "1e6", "--rate", "5"], "give one"),
        (["--format", "meerkat", "--adc-sample-rate", "1e8", "--align-samples", "1000"],
         "not a multiple of the heap's 4096 samples"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim", *args], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dsim: error: ")
    assert message in lines[0]


def test_port_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "dsim", "--katcp-port", str(port)],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dsim: cannot listen for katcp on 127.0.0.1:{port}: Address already in use"
    ]


def test_ibverbs_unavailable_exits_1_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim", "--ibv", "239.102.0.1:7148", "--interface", "127.0.0.1"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsim: cannot start ibverbs transport: ")


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dsim", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert re.fullmatch(r"dsim \S+\n", out)
    out = subprocess.run(
        [sys.executable, "-m", "dsim", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ["--katcp-host", "--katcp-port", "--heap-size", "--packet-size", "--rate",
                 "--ttl", "--interface", "--ibv", "--affinity", "--start", "--log-level",
                 "--max-packet-size", "--main-affinity"]:
        assert flag in out


def test_console_script_is_installed() -> None:
    dsim = Path(sys.executable).with_name("dsim")
    assert dsim.exists()
    out = subprocess.run([str(dsim), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("dsim ")
    assert os.access(KATCPCMD, os.X_OK)


async def test_startup_log_names_the_spead2_build_and_packet_size(
    sink: tuple[Receiver, int],
) -> None:
    receiver, port = sink
    dsim = await Dsim.start(f"127.0.0.1:{port}", "--heap-size", "16384", "--affinity", "0",
                            "--main-affinity", "0")
    dsim.process.send_signal(signal.SIGTERM)
    assert await dsim.finish() == 0
    log = "".join(dsim.log)
    size = 8248 if "with segmentation offload" in log else 8972
    assert f"heap size 16384, packet size {size} (picked, at most 8972), rate unlimited" in log
    assert re.search(r"spead2 \S+ sends UDP (with|without) segmentation offload", log)
    if "without segmentation offload" in log:
        assert "WARNING dsim: at unlimited rate, spead2 without GSO" in log
