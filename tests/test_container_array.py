"""An array of four dsim containers on one podman network, received by a fifth.

Builds the image with ``scripts/build_image.sh`` (quick when its layers are cached), makes
one internal podman network (no traffic leaves it) and runs four antennas on it, each
container its own network namespace (a "host") started as Kubernetes starts a pod: the
image's ``dsim-antenna`` entry point with the array's settings in the environment. They
send the MeerKAT format to multicast groups with one sync time and one signal (explicit
seed, no dither) delayed by a whole number of samples per antenna. A receiver container
(the same image running Python) joins every group, starts all captures at one timestamp
over katcp and prints what it received as JSON. Then: every polarisation carries exactly
one period from that timestamp; antennas with equal delays send identical samples; each
antenna's samples are antenna 0's shifted by its delay; and the circular
cross-correlation of every pair of antennas peaks at the difference of their delays.

Opt-in, as it builds an image (minutes the first time) and needs root with podman:
``DSIM_CONTAINER_TESTS=1`` (CI sets it). Containers and the network are removed even on
failure.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "build_image.sh"

DELAYS = [0, 0, 3, 8]  # samples, per antenna
PERIOD = 2**18  # samples: 64 heaps of 4096 samples, so a capture of 64 heaps is one period
HEAPS = 64
ADC_RATE = 1712e6 / 64  # 26.75 MHz: a capture lasts 10 ms
BASE_GROUP = ipaddress.IPv4Address("239.102.0.0")
DATA_PORT = 7148

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        os.environ.get("DSIM_CONTAINER_TESTS") != "1",
        reason="builds the container image and runs podman: set DSIM_CONTAINER_TESTS=1",
    ),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root (rootful podman with a network of its own)"
    ),
]


def spec(delay: int) -> str:
    return f"c = wgn(0.1, 1234); nodither(delay(c, {delay})); nodither(delay(c, {delay}));"


# The receiver, run with the image's Python (spead2, numpy): joins every group of every
# antenna, waits for their katcp servers, starts all captures at one timestamp (a multiple
# of the period, 2 s ahead on the shared clock), receives HEAPS heaps per polarisation and
# prints them as JSON: timestamps, digitiser ids, and the unpacked 10-bit samples.
RECEIVER = r"""
import argparse, asyncio, base64, ipaddress, json, math, socket, sys, time
import numpy as np
import spead2, spead2.recv, spead2.recv.asyncio

p = argparse.ArgumentParser()
p.add_argument("--antennas", required=True)  # katcp addresses, comma-separated
p.add_argument("--streams", required=True)  # per polarisation: GROUP+N, comma-separated
p.add_argument("--interface", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--sync-time", type=float, required=True)
p.add_argument("--rate", type=float, required=True)
p.add_argument("--period", type=int, required=True)
p.add_argument("--heaps", type=int, required=True)
a = p.parse_args()

def katcp(host, line, timeout=10.0):
    with socket.create_connection((host, 7147), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        f = s.makefile("rb")
        name = "!" + line[1:].split()[0]
        for raw in f:
            reply = raw.decode().split()
            if reply and reply[0] == name:
                return reply[1:]
    raise RuntimeError(f"{host}: no reply to {line}")

def unpack10(data):
    b = np.frombuffer(data, np.uint8).reshape(-1, 5).astype(np.uint64)
    word = (b[:, 0] << 32) | (b[:, 1] << 24) | (b[:, 2] << 16) | (b[:, 3] << 8) | b[:, 4]
    shifts = np.array([30, 20, 10, 0], np.uint64)
    v = ((word[:, None] >> shifts) & np.uint64(0x3FF)).astype(np.int16).ravel()
    return np.where(v >= 512, v - 1024, v).astype(np.int16)

async def receive(stream, n, deadline):
    heaps = {}
    try:
        async with asyncio.timeout(max(0.1, deadline - time.time())):
            async for heap in stream:
                items = {i.id: i for i in heap.get_items()}
                if 0x1600 not in items or 0x3300 not in items:
                    continue  # descriptors
                t = items[0x1600].immediate_value
                payload = bytes(memoryview(items[0x3300]))
                heaps[t] = (items[0x3101].immediate_value, unpack10(payload))
                if len(heaps) == n:
                    break
    except TimeoutError:
        pass
    stream.stop()
    return heaps

async def main():
    pool = spead2.ThreadPool(1)
    streams = []
    for text in a.streams.split(","):
        first, _, more = text.partition("+")
        base = ipaddress.IPv4Address(first)
        groups = [str(base + i) for i in range(int(more or 0) + 1)]
        stream = spead2.recv.asyncio.Stream(
            pool, spead2.recv.StreamConfig(max_heaps=len(groups) * 2),
            spead2.recv.RingStreamConfig(heaps=a.heaps))
        for g in groups:
            stream.add_udp_reader(g, a.port, max_size=9200, buffer_size=1 << 20,
                                  interface_address=a.interface)
        streams.append(stream)
    hosts = a.antennas.split(",")
    until = time.time() + 120
    for host in hosts:  # every antenna up (it renders its signal first)
        while True:
            try:
                if katcp(host, "?watchdog", 2.0)[:1] == ["ok"]:
                    break
            except OSError:
                pass
            if time.time() > until:
                raise SystemExit(f"antenna {host} never answered ?watchdog")
            await asyncio.sleep(0.2)
    now = (time.time() - a.sync_time) * a.rate
    start = math.ceil((now + 2.0 * a.rate) / a.period) * a.period
    replies = [katcp(host, f"?capture-start {a.heaps} {start}") for host in hosts]
    deadline = a.sync_time + start / a.rate + 30.0
    got = await asyncio.gather(*(receive(s, a.heaps, deadline) for s in streams))
    out = {"start": start, "replies": replies, "streams": []}
    for heaps in got:
        ts = sorted(heaps)
        samples = np.concatenate([heaps[t][1] for t in ts]) if ts else np.zeros(0, np.int16)
        out["streams"].append({
            "timestamps": ts,
            "ids": sorted({heaps[t][0] for t in ts}),
            "samples": base64.b64encode(samples.astype("<i2").tobytes()).decode(),
        })
    metrics = {}
    for host in hosts:
        with socket.create_connection((host, 9100), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            metrics[host] = b"".join(iter(lambda: s.recv(65536), b"")).split(b"\r\n")[0].decode()
    out["metrics"] = metrics
    json.dump(out, sys.stdout)

asyncio.run(main())
"""


@dataclass
class Podman:
    """Runs podman with the containers.conf that build_image.sh wrote."""

    env: dict[str, str]

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])} ...: {result.stderr.strip()}")
        return result


def build_script(*args: str, timeout: float) -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr else "failed")
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def image() -> tuple[Podman, str]:
    """The image, built (or found in the layer cache) by scripts/build_image.sh."""
    # Asked for (DSIM_CONTAINER_TESTS=1): a machine that cannot build or run the image
    # fails the test, so that CI is never green without the array having run.
    setup = build_script("--setup-only", "--engine", "podman", timeout=900)
    podman = Podman({**os.environ, "CONTAINERS_CONF": setup["containers_conf"]})
    probe = podman("info", check=False)
    assert probe.returncode == 0, f"podman cannot run here: {probe.stderr.strip()[-500:]}"
    started = time.monotonic()
    built = build_script("--engine", "podman", timeout=1500)
    print(
        f"\nimage {built['image']}: build {built['build_seconds']} s "
        f"(script {time.monotonic() - started:.1f} s), {int(built['size_bytes']) / 1e6:.0f} MB"
    )
    return podman, built["image"]


@pytest.fixture
def network(image: tuple[Podman, str]) -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """An internal podman network (no route out of it); removed at the end."""
    podman, _ = image
    name = f"dsimtest-{os.getpid()}"
    podman("network", "rm", "-f", name, check=False)
    podman("network", "create", "--internal", name)
    try:
        info = json.loads(podman("network", "inspect", name).stdout)
        subnet = ipaddress.IPv4Network(info[0]["subnets"][0]["subnet"])
        yield name, subnet
    finally:
        podman("network", "rm", "-f", name, check=False, timeout=120)


def decode(stream: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(stream["samples"]), "<i2").astype(np.int64)


def circular_lag(a: np.ndarray, b: np.ndarray) -> int:
    """The lag l at which sum_t a[t] b[t + l] (circular) peaks: b is a delayed by l."""
    spectrum = np.conj(np.fft.rfft(a)) * np.fft.rfft(b)
    xcorr = np.fft.irfft(spectrum, len(a))
    return int(np.argmax(xcorr))


def test_array_of_containers_on_one_clock(
    image: tuple[Podman, str], network: tuple[str, ipaddress.IPv4Network]
) -> None:
    podman, tag = image
    net, subnet = network
    started = time.monotonic()
    hosts = [subnet[10 + k] for k in range(len(DELAYS))]
    receiver_ip = subnet[100]
    sync_time = float(int(time.time()))
    names = [f"{net}-ant{k}" for k in range(len(DELAYS))]
    receiver = f"{net}-rx"
    try:
        # The default entry point is dsim itself.
        assert podman("run", "--rm", "--network", "none", tag, "--version").stdout.startswith(
            "dsim "
        )
        for k, (name, host) in enumerate(zip(names, hosts, strict=True)):
            settings = {
                "DSIM_ANTENNA": str(k),
                "DSIM_SYNC_TIME": repr(sync_time),
                "DSIM_ADC_SAMPLE_RATE": repr(ADC_RATE),
                "DSIM_BASE_GROUP": str(BASE_GROUP),
                "DSIM_DATA_PORT": str(DATA_PORT),
                "DSIM_SIGNALS": spec(DELAYS[k]),
                "DSIM_PERIOD": str(PERIOD),
                "DSIM_MAX_PERIOD": str(PERIOD),
                "DSIM_DITHER_SEED": "77",
                "DSIM_INTERFACE": str(host),  # no default route on an internal network
                "DSIM_TTL": "1",
            }
            podman(
                "run", "--detach", "--name", name, "--network", net, "--ip", str(host),
                "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                *(f"--env={key}={value}" for key, value in settings.items()),
                "--entrypoint", "dsim-antenna", tag,
            )  # fmt: skip
        streams = [f"{BASE_GROUP + 16 * k + 8 * p}+7" for k in range(len(DELAYS)) for p in (0, 1)]
        result = podman(
            "run", "--name", receiver, "--network", net, "--ip", str(receiver_ip),
            "--read-only", "--cap-drop", "ALL", "--entrypoint", "python", tag, "-c", RECEIVER,
            "--antennas", ",".join(map(str, hosts)), "--streams", ",".join(streams),
            "--interface", str(receiver_ip), "--port", str(DATA_PORT),
            "--sync-time", repr(sync_time), "--rate", repr(ADC_RATE),
            "--period", str(PERIOD), "--heaps", str(HEAPS),
            timeout=300, check=False,
        )  # fmt: skip
        logs = "\n".join(
            f"--- {name}:\n" + podman("logs", "--tail", "15", name, check=False).stderr
            for name in names
        )
        assert result.returncode == 0, f"receiver failed:\n{result.stderr}\n{logs}"
        health = podman("healthcheck", "run", names[0], check=False)
        assert health.returncode == 0, f"health check: {health.stdout}{health.stderr}"
    finally:
        podman("rm", "--force", "--time", "0", *names, receiver, check=False, timeout=120)
    out = json.loads(result.stdout)
    start = out["start"]
    assert start % PERIOD == 0
    assert out["replies"] == [["ok", str(start)]] * len(DELAYS)

    heap_samples = PERIOD // HEAPS
    samples: dict[tuple[int, int], np.ndarray] = {}
    for index, stream in enumerate(out["streams"]):
        k, p = divmod(index, 2)
        expected = [start + i * heap_samples for i in range(HEAPS)]
        assert stream["timestamps"] == expected, f"antenna {k} polarisation {p}: heaps lost"
        assert stream["ids"] == [2 * k + p]
        samples[k, p] = decode(stream)
        assert len(samples[k, p]) == PERIOD
    reference = samples[0, 0]
    assert 30 < reference.std() < 80, "wgn(0.1) is about 51 LSB rms at 10 bits"
    for k, delay in enumerate(DELAYS):
        # nodither, same expression: both polarisations are equal...
        assert np.array_equal(samples[k, 0], samples[k, 1])
        # ...and, since the capture is one whole period from a multiple of it, antenna k's
        # samples are antenna 0's circularly delayed by D_k - D_0.
        shifted = np.roll(reference, delay - DELAYS[0])
        assert np.array_equal(samples[k, 0], shifted), (
            f"antenna {k} is not antenna 0 delayed by {delay - DELAYS[0]} samples "
            f"(cross-correlation peak at {circular_lag(reference, samples[k, 0])})"
        )
    assert np.array_equal(samples[0, 0], samples[1, 0]), "equal delays, identical samples"
    for i in range(len(DELAYS)):
        for j in range(i + 1, len(DELAYS)):
            lag = circular_lag(samples[i, 0], samples[j, 0])
            assert lag == (DELAYS[j] - DELAYS[i]) % PERIOD, f"antennas {i}, {j}: peak at {lag}"
    for host, status in out["metrics"].items():
        assert " 200 " in status, f"Prometheus on {host}: {status}"
    print(f"array test: {time.monotonic() - started:.1f} s with the image built")


def test_the_image_streams_with_the_host_network(image: tuple[Podman, str]) -> None:
    """`podman run --network host IMAGE ...` is dsim on the host: heaps reach 127.0.0.1."""
    import socket
    import threading

    import spead2
    import spead2.recv

    podman, tag = image
    name = f"dsimtest-{os.getpid()}-host"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        stream = spead2.recv.Stream(spead2.ThreadPool(), spead2.recv.StreamConfig())
        stream.add_udp_reader(sock)
        try:
            podman(
                "run", "--detach", "--name", name, "--network", "host", tag,
                "--katcp-port", "0", "--format", "meerkat", "--rate", "10e6", "--start",
                f"127.0.0.1:{port}", f"127.0.0.1:{port}",
            )  # fmt: skip
            timestamps: set[int] = set()
            give_up = threading.Timer(30, stream.stop)  # stream.get() then raises Stopped
            give_up.start()
            try:
                while len(timestamps) < 100:
                    heap = stream.get()
                    items = {item.id: item for item in heap.get_items()}
                    if 0x1600 in items:
                        timestamps.add(items[0x1600].immediate_value)
            except spead2.Stopped:
                pass
            give_up.cancel()
        finally:
            podman("rm", "--force", "--time", "0", name, check=False, timeout=120)
            stream.stop()
    assert len(timestamps) >= 100
    assert all(t % 4096 == 0 for t in timestamps)


def test_a_window_larger_than_the_memory_limit_is_refused(image: tuple[Podman, str]) -> None:
    """Under a container memory limit a 2**27-sample window is refused at start-up with
    a one-line reason (exit 2), not killed by the OOM killer halfway through its render."""
    podman, tag = image
    result = podman(
        "run", "--rm", "--network", "none", "--no-healthcheck", "--memory", "256m", tag,
        "--format", "meerkat", "--signals", "wgn(0.1); wgn(0.1);", "--period", str(1 << 27),
        "127.0.0.1:7148", "127.0.0.1:7149",
        check=False,
    )  # fmt: skip
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "memory available" in result.stderr and "Traceback" not in result.stderr
