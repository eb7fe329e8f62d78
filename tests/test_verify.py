"""dsim-verify receiving real SPEAD over UDP on 127.0.0.1, and the command itself.

A small spead2 sender built here sends heaps in dsim's formats with the heap
ids and timestamps each test chooses, so defects can be injected exactly and
the checks do not depend on dsim's engine (one end-to-end test uses it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence

import numpy as np
import pytest
import spead2
import spead2.send
import spead2.send.asyncio

from dsim.errors import ConfigError
from dsim.packing import group_samples, pack
from dsim.spead import full_scale, wrap_signed
from dsim.verify import (
    Report,
    Verifier,
    VerifyConfig,
    WindowPattern,
    multicast_groups,
    udp_socket,
)
from dsim.verify import receiver as receiver_module
from dsim.verify.cli import main

from .conftest import needs_netns
from .support import HeapSender as Sender
from .support import run_in_private_netns

TIMEOUT = 30.0


def counter(t: int, n: int, bits: int = 10) -> np.ndarray:
    return np.full(n, wrap_signed(t // n, bits))


async def receive(verifier: Verifier, send: asyncio.Future[None] | None = None) -> Report:
    async with asyncio.timeout(TIMEOUT):
        return await verifier.run()


# ------------------------------------------------------------------ receiver


async def test_injected_defects_are_located_exactly() -> None:
    n = 8192
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=10))
    task = asyncio.create_task(receive(verifier))
    sender = Sender(verifier.port)
    await sender.tutorial_descriptors(n)
    order = [i for i in range(200) if i != 50]
    order.insert(order.index(120), 119)  # heap 119 twice
    a, b = order.index(170), order.index(171)
    order[a], order[b] = order[b], order[a]  # 171 before 170
    for i in order:
        samples = np.full(n, 99) if i == 160 else None
        await sender.tutorial(2 * i, i * n, n, samples)
    await sender.end()
    report = await task
    assert report.stopped_by == "end-of-stream"
    assert report.heaps == 200 and report.descriptor_heaps == 1
    assert report.missing == 1 and report.missing_ranges == [(50 * n, 51 * n)]
    assert report.duplicates == 1 and report.duplicate_timestamps == [119 * n]
    assert report.bad_payload == 1 and report.bad_payload_timestamps == [160 * n]
    assert report.out_of_order == 1 and report.out_of_order_timestamps == [170 * n]
    assert report.incomplete == 0 and report.undescribed == 0 and report.bad_timestamp == 0
    assert not report.clean


async def test_documented_jumps_over_udp_are_not_loss() -> None:
    """Meerkat, two polarisations, no end-of-stream: a real-time capture start, then a resize."""
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=1, digitiser_ids=(2, 3)))
    task = asyncio.create_task(receive(verifier))
    sender = Sender(verifier.port)
    cnt = 0

    async def run(first: int, count: int, n: int) -> None:
        nonlocal cnt
        for i in range(count):
            t = first + i * n
            for pol in (2, 3):
                await sender.meerkat(cnt, t, pol, counter(t, n))
                cnt += 2

    await sender.meerkat_descriptors(1024)
    await run(0, 20, 1024)
    await run(1 << 20, 20, 1024)  # capture-stop, capture-start: next aligned timestamp
    await sender.meerkat_descriptors(2048)
    await run((1 << 20) + 20 * 1024, 10, 2048)  # heap-size change: next multiple of 2048
    report = await task
    assert report.clean, report
    assert report.heaps == 100 and report.captures == 2 and report.streams == [2, 3]
    assert [s.started_by for s in report.capture_starts] == ["start", "jump"]
    assert [(s.capture, s.heap_size) for s in report.segments] == [
        (0, 1024),
        (0, 1024),
        (1, 1024),
        (1, 1024),
        (1, 2048),
        (1, 2048),
    ]


async def test_heaps_of_six_bytes_or_less_are_seen_and_checked() -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=10))
    task = asyncio.create_task(receive(verifier))
    sender = Sender(verifier.port)
    await sender.tutorial_descriptors(3)
    for i in range(100):
        samples = np.array([1, 2, 3]) if i == 42 else None
        await sender.tutorial(2 * i, 3 * i, 3, samples)
    await sender.end()
    report = await task
    assert report.heaps == 100 and report.bytes == 300
    assert report.bad_payload == 1 and report.bad_payload_timestamps == [126]
    assert report.missing == 0 and report.undescribed == 0


async def test_a_five_byte_meerkat_heap_is_an_immediate_too() -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=1))
    task = asyncio.create_task(receive(verifier))
    sender = Sender(verifier.port)
    await sender.meerkat_descriptors(4)
    for i in range(600):  # through full scale: the status must count 4 saturated samples
        await sender.meerkat(2 * i, 4 * i, 0, counter(4 * i, 4))
    report = await task
    assert report.clean, report
    assert report.heaps == 600 and report.bytes == 3000


async def test_two_verifiers_cannot_share_a_port() -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=1))
    try:
        with pytest.raises(ConfigError, match=r"^cannot receive on 127\.0\.0\.1:\d+: .*in use"):
            Verifier(VerifyConfig(port=verifier.port))
        with pytest.raises(ConfigError):  # nor on every address
            udp_socket(verifier.port, "0.0.0.0")
    finally:
        verifier.stop()
        await verifier.run()


async def test_ringbuffer_full_warnings_are_counted_not_printed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(receiver_module, "RING_HEAPS", 2)
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=1))
    feed = verifier.feed

    def slow_feed(*args: object) -> None:
        time.sleep(0.002)  # a receiver that cannot keep up
        feed(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(verifier, "feed", slow_feed)
    task = asyncio.create_task(receive(verifier))
    # One batch, sent by spead2's own thread while the slow receiver holds the event loop.
    stream = spead2.send.asyncio.UdpStream(
        spead2.ThreadPool(),
        [("127.0.0.1", verifier.port)],
        spead2.send.StreamConfig(rate=0, max_heaps=512),
    )
    items = Sender.tutorial_items(1024)
    heaps = [spead2.send.HeapReference(items.get_heap(descriptors="all", data="none"), cnt=1)]
    for i in range(300):
        items["timestamp"].value = 1024 * i
        items["adc_samples"].value = np.full(1024, wrap_signed(i, 8)).astype(np.int8)
        heaps.append(spead2.send.HeapReference(items.get_heap(descriptors="none"), cnt=2 * i))
    await stream.async_send_heaps(heaps, spead2.send.GroupMode.SERIAL)
    with caplog.at_level(logging.WARNING, logger="spead2"):
        report = await task
    assert report.ringbuffer_full > 0
    assert "ringbuffer" not in caplog.text
    assert f"{report.ringbuffer_full} spead2 'ringbuffer full'" in receiver_summary(report)


async def test_an_injected_ringbuffer_warning_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=0.5))
    task = asyncio.create_task(receive(verifier))
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="spead2"):
        logging.getLogger("spead2").warning("worker thread blocked by full ringbuffer on heap 7")
        logging.getLogger("spead2").warning("something else")
        report = await task
    assert report.ringbuffer_full == 1
    assert "ringbuffer" not in caplog.text and "something else" in caplog.text


def receiver_summary(report: Report) -> str:
    from dsim.verify import summary

    return summary(report)


# -------------------------------------------------------------- signals


def signal_rows(period: int, bits: int = 10) -> list[np.ndarray]:
    """Two outputs: a 0.25 full-scale tone plus common noise; the noise alone."""
    fs = full_scale(bits)
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 0.03, period)
    tone = 0.25 * np.cos(2 * np.pi * 512 * np.arange(period) / period)
    return [np.rint(np.clip(x * fs, -fs, fs)).astype(np.int64) for x in (tone + noise, noise)]


class Window:
    def __init__(self, rows: list[np.ndarray], bits: int = 10) -> None:
        self.rows = rows
        self.packed = np.stack([pack(r, bits) for r in rows])
        full = np.abs(np.stack(rows)) >= full_scale(bits)
        self.saturated = full.reshape(len(rows), -1, group_samples(bits)).sum(axis=2)

    def samples(self, output: int) -> np.ndarray:
        return self.rows[output]


async def test_a_signal_stream_is_checked_byte_for_byte_and_measured() -> None:
    period, n = 1 << 15, 1024
    rows = signal_rows(period)
    pattern = WindowPattern(Window(rows), period, 10, "test signal")
    verifier = Verifier(VerifyConfig(port=0, idle_timeout=1, pattern=pattern, adc_sample_rate=1e9))
    task = asyncio.create_task(receive(verifier))
    sender = Sender(verifier.port)
    await sender.meerkat_descriptors(n)
    cnt = 0
    for i in range(128):
        t = i * n
        for pol in (0, 1):
            samples = rows[pol][t % period : t % period + n].copy()
            if (i, pol) == (77, 0):
                samples[5] += 1  # one wrong sample
            await sender.meerkat(cnt, t, pol, samples)
            cnt += 2
    report = await task
    assert report.heaps == 256 and report.missing == 0 and report.pattern == "test signal"
    assert report.bad_payload == 1
    (error,) = report.bad_payload_locations
    assert (error.stream, error.timestamp, error.sample) == (0, 77 * n, 5)
    first, second = report.measurements
    assert first.samples == second.samples == 128 * n
    assert first.tones[0].frequency_hz == pytest.approx(512 / period * 1e9)
    assert first.tones[0].level_dbfs == pytest.approx(20 * np.log10(0.25), abs=0.1)
    assert second.noise_rms == pytest.approx(0.03 * 511, rel=0.05)
    (correlation,) = report.correlations
    assert correlation.samples == 128 * n and 0.1 < (correlation.coefficient or 0) < 0.3
    assert len(verifier.spectra) == 2


# ------------------------------------------------------------- multicast


def test_multicast_group_ranges() -> None:
    assert multicast_groups("239.102.0.64+7") == [f"239.102.0.{64 + i}" for i in range(8)]
    assert multicast_groups("239.1.2.3") == ["239.1.2.3"]
    for bad, message in [
        ("10.0.0.1", "not a multicast group"),
        ("239.255.255.255+1", "leaves the multicast range"),
        ("239.1.2.3+x", "ADDRESS\\+N with a whole N"),
        ("239.1.2.3+-1", "ADDRESS\\+N with a whole N"),
        ("239.1.2.3++1", "ADDRESS\\+N with a whole N"),
        ("239.1.2.3:7148", "without a port"),
        ("no-such-host.invalid", "does not resolve"),
    ]:
        with pytest.raises(ConfigError, match=message):
            multicast_groups(bad)


MULTICAST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, subprocess, sys
    import numpy as np
    sys.path.insert(0, %r)
    from tests.support import HeapSender as Sender
    from dsim.verify import Verifier, VerifyConfig


    async def main():
        # One polarisation fanned out over 4 groups: heap i goes to group i mod 4.
        verifier = Verifier(VerifyConfig(
            port=7148, multicast="239.1.2.4+3", interface="127.0.0.1", idle_timeout=1))
        task = asyncio.create_task(verifier.run())
        senders = [Sender(7148, host=f"239.1.2.{4 + g}") for g in range(4)]
        other = Sender(7148, host="239.1.2.8")  # a group not joined
        await senders[0].meerkat_descriptors(1024)
        for i in range(200):
            t = i * 1024
            samples = np.full(1024, (i + 512) %% 1024 - 512)
            await senders[i %% 4].meerkat(2 * i, t, 0, samples)
            await other.meerkat(2 * i, t, 0, samples)
        report = await task
        print(json.dumps({"heaps": report.heaps, "clean": report.clean}))

    asyncio.run(main())
    """
)


@needs_netns
def test_multicast_fan_out_is_joined_in_a_private_namespace() -> None:
    script = MULTICAST_SCRIPT % os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = run_in_private_netns(script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"heaps": 200, "clean": True}


# ------------------------------------------------------------ dsim's engine


async def test_end_to_end_with_dsims_engine() -> None:
    from dsim.address import Endpoint
    from dsim.engine import Engine
    from dsim.layout import MeerkatFormat
    from dsim.transport import TransportConfig

    verifier = Verifier(VerifyConfig(port=0, idle_timeout=2, captures=0))
    task = asyncio.create_task(receive(verifier))
    engine = Engine(
        TransportConfig(destinations=[Endpoint("127.0.0.1", verifier.port)] * 2, rate=50e6),
        5120,
        wire_format=MeerkatFormat((1, 1), 10, digitiser_id=0),
    )
    try:
        engine.start(400)
        sent = await engine.wait_capture()
    finally:
        await engine.close()
    report = await task
    assert report.clean, report.to_dict()
    assert report.heaps == sent == 800 and report.streams == [0, 1]


# -------------------------------------------------------------- the command


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dsim.verify", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Wait for the 'receiving on' line, so the socket is bound before we send."""
    assert proc.stderr is not None
    line = await asyncio.to_thread(proc.stderr.readline)
    assert line.startswith("dsim-verify: receiving on"), line


async def send_counter(port: int, count: int, skip: Sequence[int] = (), n: int = 8192) -> None:
    sender = Sender(port)
    await sender.tutorial_descriptors(n)
    for i in range(count):
        if i not in skip:
            await sender.tutorial(2 * i, i * n, n)
    await sender.end()


async def test_cli_clean_stream_exit_0_and_text_summary(unused_udp_port: int) -> None:
    proc = run_cli(f"127.0.0.1:{unused_udp_port}")
    await wait_ready(proc)
    await send_counter(unused_udp_port, 30)
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.startswith("30 heaps, 245760 bytes in ")
    assert "missing 0, duplicates 0, out of order 0, bad payload 0" in out
    assert "capture 0: 30 heaps of 8192 samples from timestamp 0" in out
    assert out.rstrip().endswith("CLEAN (stopped by end-of-stream)")


async def test_cli_reports_defects_in_json_with_exit_status_1(unused_udp_port: int) -> None:
    proc = run_cli(str(unused_udp_port), "--json", "--timeout", "10")
    await wait_ready(proc)
    await send_counter(unused_udp_port, 20, skip=[7])
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    assert proc.returncode == 1, err
    report = json.loads(out)
    for key in [
        "heaps",
        "bytes",
        "missing",
        "duplicates",
        "out_of_order",
        "bad_payload",
        "incomplete",
        "captures",
        "ringbuffer_full",
    ]:
        assert isinstance(report[key], int), key
    assert report["heaps"] == 19 and report["missing"] == 1
    assert report["missing_ranges"] == [[7 * 8192, 8 * 8192]]
    assert report["clean"] is False


def test_cli_timeout_with_nothing_received_exits_1(unused_udp_port: int) -> None:
    assert main([str(unused_udp_port), "--timeout", "0.3"]) == 1


def test_cli_interrupt_still_prints_the_summary(unused_udp_port: int) -> None:
    proc = run_cli(str(unused_udp_port), "--json")
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith("dsim-verify: receiving on")
    proc.send_signal(signal.SIGINT)  # as Ctrl-C
    out, err = proc.communicate(timeout=TIMEOUT)
    assert json.loads(out)["stopped_by"] == "interrupted"
    assert proc.returncode == 1 and "Traceback" not in err


def test_cli_port_taken_exits_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    sock = udp_socket(0)
    try:
        status = main([str(sock.getsockname()[1]), "--timeout", "1"])
    finally:
        sock.close()
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and "dsim-verify: error: cannot receive on" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["banana"], "bad port"),
        (["127.0.0.1:0"], "port must be 1-65535"),
        (["7148", "--heaps", "-1"], "must be positive"),
        (["7148", "--timeout", "x"], "not a number"),
        (["7148", "--timeout", "nan"], "must be a finite number"),
        (["7148", "--timeout", "inf"], "must be a finite number"),
        (["7148", "--adc-sample-rate", "1e999"], "must be a finite number"),
        (["7148", "--captures", "-1"], "must be >= 0"),
        ([], "the following arguments are required"),
        (["7148", "--multicast", "10.0.0.1"], "not a multicast group"),
        (["7148", "--multicast", "239.1.2.3+x"], "ADDRESS+N with a whole N"),
        (["+80"], "bad port"),
        (["7148", "--buffer", "999999999999999999999"], "must be at most 2147483647"),
        (["7148", "--multicast", "239.1.1.1+99999999999"], "at most 256 addresses"),
        (["7148", "--sync-time", "5"], "--sync-time needs --adc-sample-rate"),
        (["7148", "--period", "5"], "--period and --dither-seed describe a --signals"),
        (["7148", "--signals", "cw(1,2);", "--katcp", "h:1"], "either with --signals or"),
        (["7148", "--sample-bits", "40"], "--sample-bits: sample bits must be 2-16"),
        (["7148", "--plot", "/nonexistent/dir/x.png"], "--plot: cannot write into"),
        (["7148", "--bogus"], "unrecognized arguments"),
    ],
)
def test_cli_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err and err.startswith("dsim-verify: error: ")


def test_cli_katcp_unreachable_is_one_line_exit_2(
    unused_tcp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["7148", "--katcp", f"127.0.0.1:{unused_tcp_port}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot connect to dsim's katcp server" in err


def test_cli_bad_signal_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "7148",
            "--signals",
            "cw(0.5,",
            "--period",
            "1024",
            "--dither-seed",
            "1",
            "--adc-sample-rate",
            "1e9",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and err.startswith("dsim-verify: error: ")


def test_cli_usage_error_in_a_process_has_no_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsim.verify", "7148", "--captures", "-1"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# ------------------------------------------------------------------ katcp


class FakeDsim:
    """An aiokatcp server with the sensors dsim describes its stream with."""

    def __init__(self, **values: object) -> None:
        import aiokatcp

        class Server(aiokatcp.DeviceServer):
            VERSION = "fake-dsim-1.0"
            BUILD_STATE = "fake-dsim-1.0.0"

        self.server = Server("127.0.0.1", 0)
        defaults: dict[str, object] = {
            "signals": "counter();counter();",
            "period": 1 << 20,
            "dither-seed": "12345",
            "sample-bits": 10,
            "adc-sample-rate": 1712e6,
            "format": "meerkat",
            "polarisations": 2,
            "sync-time": 0.0,
            "real-time": False,
            "heap-size": 5120,
        }
        defaults.update(values)
        for name, value in defaults.items():
            if value is None:  # leave this sensor out
                continue
            sensor = aiokatcp.Sensor(
                type(value),
                name,
                name,
                default=value,
                initial_status=aiokatcp.Sensor.Status.NOMINAL,
            )
            self.server.sensors.add(sensor)

    async def __aenter__(self) -> tuple[str, int]:
        await self.server.start()
        assert self.server.server is not None
        host, port = self.server.server.sockets[0].getsockname()[:2]
        return host, port

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()


async def test_the_stream_description_is_read_from_katcp_sensors() -> None:
    from dsim.verify.source import read_sensors

    async with FakeDsim(**{"dither-seed": "987654321987654321987654321"}) as (host, port):
        source = await read_sensors(host, port)
    assert source.signals == "counter();counter();" and source.period == 1 << 20
    assert source.dither_seed == 987654321987654321987654321
    assert (source.sample_bits, source.format, source.polarisations) == (10, "meerkat", 2)
    assert source.adc_sample_rate == 1712e6 and source.real_time is False


async def test_a_missing_sensor_is_named_as_missing() -> None:
    from dsim.errors import ConfigError
    from dsim.verify.source import read_sensors

    async with FakeDsim(signals=None) as (host, port):
        with pytest.raises(ConfigError, match="cannot read sensor 'signals'"):
            await read_sensors(host, port)
    async with FakeDsim(**{"dither-seed": "0x12"}) as (host, port):
        with pytest.raises(ConfigError, match="dither-seed sensor is not an integer"):
            await read_sensors(host, port)


async def test_cli_with_katcp_checks_a_counter_stream(unused_udp_port: int) -> None:
    async with FakeDsim() as (host, port):
        proc = run_cli(
            str(unused_udp_port), "--katcp", f"{host}:{port}", "--timeout", "1", "--json"
        )
        await wait_ready(proc)
    sender = Sender(unused_udp_port)
    await sender.meerkat_descriptors(1024)
    for i in range(50):
        for pol in (0, 1):
            await sender.meerkat(4 * i + 2 * pol, 1024 * i, pol, counter(1024 * i, 1024))
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    report = json.loads(out)
    assert proc.returncode == 0, (report, err)
    assert report["heaps"] == 100 and report["pattern"] == "counter"
    assert report["measurements"] == []  # the counter is not measured


async def test_cli_checks_a_rendered_signal_byte_for_byte(unused_udp_port: int) -> None:
    from dsim.signals import parse, render

    spec = "common = wgn(0.05, 1); cw(0.25, 100e6) + common; common;"
    period, seed, rate, n = 1 << 16, 42, 1e9, 4096
    resolved = parse(spec).resolve(period, rate)
    window = render(resolved, 10, seed)
    proc = run_cli(
        str(unused_udp_port),
        "--signals",
        spec,
        "--period",
        str(period),
        "--dither-seed",
        str(seed),
        "--adc-sample-rate",
        str(rate),
        "--timeout",
        "1",
        "--json",
    )
    await wait_ready(proc)
    sender = Sender(unused_udp_port)
    await sender.meerkat_descriptors(n)
    for i in range(64):
        t = i * n
        for pol in (0, 1):
            samples = np.asarray(window.samples(pol), np.int64)[t % period : t % period + n]
            if (i, pol) == (33, 1):
                samples = samples.copy()
                samples[-1] ^= 1
            await sender.meerkat(4 * i + 2 * pol, t, pol, samples)
    out, err = await asyncio.to_thread(proc.communicate, timeout=TIMEOUT)
    report = json.loads(out)
    assert proc.returncode == 1, err
    assert report["bad_payload"] == 1 and report["missing"] == 0
    assert report["bad_payload_locations"][0]["timestamp"] == 33 * n
    assert report["bad_payload_locations"][0]["sample"] == n - 1
    tone = report["measurements"][0]["tones"][0]
    expected = resolved.tones()[0][0][0]
    assert tone["frequency_hz"] == pytest.approx(expected, rel=1e-4)
    assert tone["level_dbfs"] == pytest.approx(20 * np.log10(0.25), abs=0.2)


@pytest.mark.parametrize("value", ["1_0", "+5x", "inf", "nan", "\u0661"])
def test_cli_numbers_are_parsed_strictly(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """dsim-verify shares dsim's number arguments: no '1_0', non-finite or non-ASCII values."""
    from dsim.verify.cli import main

    with pytest.raises(SystemExit) as info:
        main(["7148", "--heaps" if value != "inf" and value != "nan" else "--timeout", value])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_a_spec_with_unseeded_noise_is_refused_not_reported_as_bad_payload() -> None:
    from dsim.errors import ConfigError
    from dsim.verify.source import expected_signal

    with pytest.raises(ConfigError, match="noise without a seed"):
        expected_signal("wgn(0.1);", 1 << 16, 1, None, 8)
    # Seeded, and with no ADC rate given: read against dsim's nominal 1712e6, as dsim does.
    expected = expected_signal("wgn(0.1, 5) + cw(0.1, 1e8);", 1 << 16, 1, None, 8)
    assert expected.tones and abs(expected.tones[0][0] - 1e8) < 1712e6 / (1 << 16)
