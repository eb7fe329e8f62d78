"""An array of simulated antennas, each dsim on a "host" of its own (a network namespace).

The test builds a small network out of namespaces it creates: a hub with a
bridge, and one namespace per antenna joined to it by a veth pair. Four dsim
processes (one per antenna, started through :class:`dsim.array.Array` under
``ip netns exec``) send the MeerKAT format to multicast groups on that bridge;
a receiver in the hub joins every group. All antennas render one spec with a
shared, seeded noise source and a per-antenna delay, share one sync time and
start on one timestamp. The receiver then finds identical samples where the
delays are equal, and the cross-correlation peak of every pair at the lag the
delays imply. No packet leaves the namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from dsim.array import Array, ArrayError

from .conftest import needs_netns

DELAYS = [0, 0, 3, -5]

ORCHESTRATOR = textwrap.dedent(
    """
    import asyncio, json, sys
    import numpy as np
    import spead2, spead2.recv.asyncio
    from dsim import packing
    from dsim.array import Array
    from dsim.address import parse_destination
    from dsim.verify.receiver import udp_socket

    PREFIX, DELAYS = sys.argv[1], json.loads(sys.argv[2])
    PERIOD, SAMPLES, HEAPS = 1 << 18, 4096, 64

    def group(k, pol):
        return f"239.102.0.{64 + 16 * k + 8 * pol}"

    async def main():
        # One socket in the hub, joined to all 8 groups of every polarisation of every antenna.
        groups = [str(e.host) for k in range(len(DELAYS)) for pol in (0, 1)
                  for e in parse_destination(f"{group(k, pol)}+7:7148")]
        sock = udp_socket(7148, buffer_size=256 << 20, groups=groups, interface="10.99.0.1")
        stream = spead2.recv.asyncio.Stream(
            spead2.ThreadPool(), spead2.recv.StreamConfig(max_heaps=64),
            spead2.recv.RingStreamConfig(heaps=4096))
        stream.add_udp_reader(sock, max_size=9000)

        spec = lambda k: (f"c = wgn(0.1, 1234); nodither(delay(c, {DELAYS[k]}));"
                          f" nodither(delay(c, {DELAYS[k]}));")
        array = await Array.start(
            len(DELAYS), signals=spec, adc_sample_rate=1712e6 / 64, period=PERIOD,
            dither_seed=99, align_samples=PERIOD,
            destinations=lambda k: [f"{group(k, 0)}+7:7148", f"{group(k, 1)}+7:7148"],
            katcp_host=lambda k: f"10.99.0.{10 + k}",
            prefix=lambda k: ["ip", "netns", "exec", f"{PREFIX}a{k}"],
            interface=None, ttl=1,
        )
        try:
            ids = [await a.sensor("signals") for a in array.antennas]
            first = await array.capture_start(HEAPS, margin=1.0)
            samples = {}
            while len(samples) < 8 * HEAPS:
                async with asyncio.timeout(10):
                    heap = await stream.get()
                items = {i.id: i for i in heap.get_items()}
                if 0x1600 not in items:
                    continue
                t = items[0x1600].immediate_value
                did = items[0x3101].immediate_value
                data = np.frombuffer(memoryview(items[0x3300]), np.uint8)
                samples[(did, t)] = packing.unpack(data, 10)
        finally:
            await array.close()
            stream.stop()
        x = {did: np.concatenate([samples[(did, first + i * SAMPLES)] for i in range(HEAPS)])
             for did in range(8)}
        out = {"first": first, "ids": sorted({d for d, _ in samples}), "signals": ids,
               "equal": {}, "lag": {}}
        for i in range(4):
            for j in range(4):
                a, b = x[2 * i].astype(float), x[2 * j].astype(float)
                out["equal"][f"{i}{j}"] = bool(np.array_equal(x[2 * i], x[2 * j]))
                xc = np.fft.irfft(np.fft.rfft(b) * np.conj(np.fft.rfft(a)), PERIOD)
                lag = int(np.argmax(xc))
                out["lag"][f"{i}{j}"] = lag if lag < PERIOD // 2 else lag - PERIOD
        out["pols_equal"] = all(np.array_equal(x[2 * k], x[2 * k + 1]) for k in range(4))
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def sh(*commands: str) -> None:
    for command in commands:
        subprocess.run(command.split(), check=True, capture_output=True)


@pytest.fixture
def network() -> object:
    """Namespaces hub and a0..a3, bridged; yields the name prefix; removed afterwards."""
    prefix = f"dsim{os.getpid() % 100000}"
    hub = f"{prefix}h"
    names = [hub] + [f"{prefix}a{k}" for k in range(len(DELAYS))]
    try:
        sh(
            f"ip netns add {hub}",
            f"ip -n {hub} link set lo up",
            f"ip -n {hub} link add br0 type bridge mcast_snooping 0",
            f"ip -n {hub} addr add 10.99.0.1/24 dev br0",
            f"ip -n {hub} link set br0 up",
            f"ip -n {hub} route add 239.0.0.0/8 dev br0",
            # One receiving socket joins all 64 groups (the default limit is 20).
            f"ip netns exec {hub} sysctl -qw net.ipv4.igmp_max_memberships=128",
        )
        for k in range(len(DELAYS)):
            ns, veth = f"{prefix}a{k}", f"v{prefix[-6:]}{k}"
            sh(
                f"ip netns add {ns}",
                f"ip -n {ns} link set lo up",
                f"ip link add {veth} netns {hub} type veth peer name eth0 netns {ns}",
                f"ip -n {hub} link set {veth} master br0",
                f"ip -n {hub} link set {veth} up",
                f"ip -n {ns} addr add 10.99.0.{10 + k}/24 dev eth0",
                f"ip -n {ns} link set eth0 up",
                f"ip -n {ns} route add 239.0.0.0/8 dev eth0",
            )
        yield prefix
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@needs_netns
def test_four_antennas_on_four_hosts_line_up(network: str) -> None:
    result = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            f"{network}h",
            sys.executable,
            "-c",
            ORCHESTRATOR,
            network,
            json.dumps(DELAYS),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["ids"] == list(range(8))  # digitiser ids 2k and 2k+1 for antenna k
    assert out["first"] % (1 << 18) == 0  # every antenna started on one aligned sample
    assert out["pols_equal"]  # both polarisations of an antenna carry the same noise
    for i in range(4):
        for j in range(4):
            assert out["equal"][f"{i}{j}"] == (DELAYS[i] == DELAYS[j]), (i, j)
            assert out["lag"][f"{i}{j}"] == DELAYS[j] - DELAYS[i], (i, j, out["lag"])


async def test_the_heap_size_is_the_antennas_own() -> None:
    """With 8-bit samples the meerkat default heap is 4096 samples, not what 10 bits
    would give: the array asks the antennas, so its default switch time is aligned."""
    array = await Array.start(2, sample_bits=8, adc_sample_rate=1e7, period=1 << 16)
    try:
        assert array.heap_samples == 4096
        timestamp = await array.set_signals("cw(0.1, 1e5); cw(0.1, 2e5);", margin=0.5)
        assert timestamp % 4096 == 0
        assert [await a.sensor("steady-state-timestamp") for a in array.antennas] == [timestamp] * 2
    finally:
        await array.close()


async def test_a_failed_start_leaves_no_process_behind() -> None:
    """Antenna 1 cannot start: the error names it, and antenna 0 (started, or still
    starting) is ended too."""
    marker = repr(1e9 + os.getpid() + 0.25)  # a sync time no other test uses

    def prefix(k: int) -> list[str]:
        return ["false"] if k == 1 else []

    with pytest.raises(ArrayError, match="antenna 1: dsim exited"):
        await Array.start(2, sync_time=float(marker), prefix=prefix)
    found = subprocess.run(["pgrep", "-f", f"sync-time {marker}"], capture_output=True)
    assert found.returncode == 1, found.stdout  # 1: no such process
