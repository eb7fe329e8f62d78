"""The dsim command as a subprocess, as a user or an integration test runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Sink
from .support import KATCPCMD, TIMEOUT, DsimProcess, check_contiguous, check_counter


async def test_katcpcmd_and_sigterm(dsim_processes: Callable[..., Any], sink: Sink) -> None:
    dsim: DsimProcess = await dsim_processes(sink.dest, "--rate", "50e6", "--heap-size", "4096")
    out = await dsim.katcpcmd("capture-start")
    assert re.search(r"!capture-start\[\d+\] ok 0", out)
    await asyncio.sleep(0.3)
    out = await dsim.katcpcmd("capture-stop")
    sent = int(re.search(r"!capture-stop\[\d+\] ok (\d+)", out).group(1))  # type: ignore[union-attr]
    received = await sink.receiver.collect()
    assert received.ends == 1 and len(received.heaps) == sent > 0
    check_contiguous(received.heaps, 0)
    check_counter(received.heaps)
    dsim.process.send_signal(signal.SIGTERM)
    assert await dsim.finish() == 0
    log = "".join(dsim.log)
    assert "received SIGTERM" in log and "shut down" in log
    assert "Traceback" not in log


async def test_halt_and_start_flag(dsim_processes: Callable[..., Any], sink: Sink) -> None:
    dsim: DsimProcess = await dsim_processes(sink.dest, "--rate", "50e6", "--start")
    await asyncio.sleep(0.3)
    out = await dsim.katcpcmd("halt")
    assert re.search(r"!halt\[\d+\] ok", out)
    assert await dsim.finish() == 0
    received = await sink.receiver.collect()
    assert received.ends == 1 and len(received.heaps) > 0


BAD_COMMAND_LINES = [
    (["--heap-size", "banana"], "argument --heap-size: not an integer: 'banana'"),
    (["--heap-size", "1_0"], "argument --heap-size: not an integer: '1_0'"),
    (["--heap-size", "0"], "heap size must be positive, not 0"),
    (["--rate", "-5"], "rate must be a finite number >= 0"),
    (["--rate", "inf"], "argument --rate: must be a finite number, not 'inf'"),
    (["--adc-sample-rate", "inf"], "argument --adc-sample-rate: must be a finite number"),
    (["--adc-sample-rate=-1e6"], "ADC sample rate must be positive"),
    (["--adc-sample-rate", "1e6", "--sync-time", "nan"], "--sync-time: must be a finite"),
    (["--descriptor-interval", "nan"], "--descriptor-interval: must be a finite number"),
    (["--nominal-sample-rate", "0"], "nominal sample rate must be positive"),
    (["--packet-size", "20"], "packet size must be"),
    (["--max-packet-size", "70000"], "packet size must be"),
    (["--main-affinity", "9999"], "CPU core 9999 is not available"),
    (["--katcp-port", "70000"], "katcp port must be 0-65535"),
    (["--katcp-host", ""], "katcp host is empty"),
    (["--katcp-host", "999.1.1.1"], "katcp host '999.1.1.1' is not an address of this machine"),
    (["--katcp-host", "10.9.9.9"], "katcp host '10.9.9.9' is not an address of this machine"),
    (["--interface", "banana"], "interface 'banana' is not an IPv4 address"),
    (["--interface", "10.9.9.9"], "interface address 10.9.9.9 is not an address of this machine"),
    (["nonexistent.invalid:7148"], "does not resolve"),
    (["127.0.0.1:99999"], "port must be 1-65535"),
    (["239.1.2.3+x:7148"], "expected ADDRESS+N with a whole N"),
    (["host+3:7148"], "ADDRESS+N needs a numeric IPv4 address"),
    (["239.255.255.255+2:7148"], "leaves the multicast range"),
    (["--ibv", "127.0.0.1:7148", "--interface", "127.0.0.1"], "only to IPv4 multicast"),
    (["--affinity", "9999"], "CPU core 9999 is not available"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--log-level", "chatty"], "argument --log-level: invalid choice"),
    (["--format", "meerkat", "--packet-size", "9000"], "drop --packet-size"),
    (["--format", "meerkat", "--heap-size", "5121"], "whole groups of 10-bit samples"),
    (["--format", "meerkat", "--heap-size", "20480"], "one packet per heap"),
    (
        ["--format", "meerkat", "--digitiser-id", "5", "127.0.0.1:7148", "127.0.0.1:7149"],
        "digitiser id 5 is odd",
    ),
    (["--format", "meerkat", "--digitiser-id", "99999999999999999999999"], "48-bit immediate"),
    (["--format", "meerkat", "--digitiser-id", str(1 << 48)], "48-bit immediate"),
    (["--format", "meerkat", "--sample-bits", "40"], "sample bits must be 2-16"),
    (["--format", "tutorial", "--sample-bits", "10"], "8-bit samples"),
    (["--format", "vinyl"], "argument --format: invalid choice"),
    (["--sync-time", "5"], "--sync-time needs --adc-sample-rate"),
    (["--adc-sample-rate", "1e6", "--rate", "5"], "give one"),
    (
        ["--format", "meerkat", "--adc-sample-rate", "1e8", "--align-samples", "1000"],
        "alignment of 1000 samples (--align-samples) is not a multiple of the heap's 4096",
    ),
    (["--period", "0"], "period must be a positive sample count"),
    (["--max-period", str(1 << 40)], "max period must be a sample count from 1 to 2**31"),
    (["--period", str(1 << 28)], "exceeds the maximum period"),
    (["--dither-seed=-1"], "dither seed must be a non-negative integer"),
    (["--prometheus-port", "70000"], "Prometheus port must be 0-65535"),
    (["--buffer-size", "999999999999999999999"], "buffer size must be 1 to 2147483647"),
    (["--interface", ""], "interface is empty"),
    (["--interface", "255.255.255.255"], "not an address of this machine"),
    (["239.1.1.1+999:7148"], "at most 256 addresses"),
    (["--adc-sample-rate", "1e300"], "past 2**62"),
    (
        ["--signals", "cw(0.5, 1e5);", "--nominal-sample-rate", "1e-300"],
        "above Nyquist",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_COMMAND_LINES)
def test_bad_command_lines_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim", *args], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 2, result.stderr
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
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dsim: cannot listen for katcp on 127.0.0.1:{port}: Address already in use"
    ]


def test_ibverbs_unavailable_exits_1_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim", "--ibv", "239.102.0.1:7148", "--interface", "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
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
    for flag in [
        "--katcp-host",
        "--katcp-port",
        "--heap-size",
        "--packet-size",
        "--rate",
        "--ttl",
        "--interface",
        "--ibv",
        "--affinity",
        "--start",
        "--log-level",
        "--max-packet-size",
        "--main-affinity",
        "--signals",
        "--period",
        "--max-period",
        "--dither-seed",
        "--end-of-stream",
        "--prometheus-port",
    ]:
        assert flag in out


def test_console_scripts_are_installed() -> None:
    for name in ("dsim", "dsim-verify"):
        path = Path(sys.executable).with_name(name)
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.startswith(f"{name} ")
    assert os.access(KATCPCMD, os.X_OK)


async def test_startup_log_and_gso_warning_only_when_it_matters(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    dsim: DsimProcess = await dsim_processes(
        sink.dest, "--heap-size", "16384", "--affinity", "0", "--main-affinity", "0"
    )
    await asyncio.sleep(0.2)
    await dsim.katcpcmd("capture-start", "10")
    await asyncio.sleep(0.3)
    dsim.process.send_signal(signal.SIGTERM)
    assert await dsim.finish() == 0
    log = "".join(dsim.log)
    size = 8248 if "with segmentation offload" in log else 8972
    assert f"heap size 16384, packet size {size} (picked, at most 8972), rate unlimited" in log
    assert re.search(r"spead2 \S+ sends UDP (with|without) segmentation offload", log)
    before_capture = log[: log.index("capture started")]
    assert "WARNING" not in before_capture  # nothing is being sent yet: nothing to warn about
    if "without segmentation offload" in log:
        assert "with a spead2 built without GSO" in log[log.index("capture started") - 200 :]


async def test_the_katcp_address_is_announced_at_any_log_level(
    dsim_processes: Callable[..., Any], sink: Sink
) -> None:
    dsim: DsimProcess = await dsim_processes(sink.dest, "--log-level", "ERROR")
    assert dsim.log[-1].startswith("dsim: katcp server listening on 127.0.0.1:")
    await dsim.katcpcmd("halt")
    assert await dsim.finish() == 0


def test_integers_read_as_a_person_means_them() -> None:
    import argparse

    from dsim.cliutil import integer

    assert [integer(t) for t in ("10", "010", " 7 ", "-3", "0x10", "0X1f")] == [
        10,
        10,
        7,
        -3,
        16,
        31,
    ]
    for bad in ("1_0", "+", "1e3", "٣", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
            integer(bad)
