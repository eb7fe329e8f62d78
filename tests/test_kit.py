"""The correlator test kit: the pytest plugin's `dsim` fixture and Prometheus metrics."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

import pytest

from dsim import Simulator

from .conftest import TEST_RATE, Sink
from .support import check_counter


@pytest.fixture
def dsim_options(sink: Sink) -> dict[str, object]:
    """Point the plugin's `dsim` fixture at this test's sink (overriding the marker default)."""
    return {"destinations": [sink.dest], "rate": TEST_RATE, "heap_size": 4096}


async def test_the_dsim_fixture_is_a_running_simulator(dsim: Simulator, sink: Sink) -> None:
    host, port = dsim.katcp_address
    assert host == "127.0.0.1" and port > 0
    assert await dsim.capture_start(heaps=200) == 0
    assert dsim.engine is not None
    await dsim.engine.wait_capture()
    received = await sink.receiver.collect()
    assert len(received.heaps) == 200
    check_counter(received.heaps)
    assert await dsim.sensor("transmitted-heaps") == 200


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if match := re.fullmatch(r"(dsim_\w+) (\S+)", line):
            values[match.group(1)] = float(match.group(2))
    return values


async def test_prometheus_metrics_agree_with_the_sensors(sink: Sink) -> None:
    async with Simulator(
        destinations=[sink.dest], rate=TEST_RATE, prometheus_port=0, heap_size=4096
    ) as sim:
        port = sim.prometheus_port
        assert port is not None
        idle = await asyncio.to_thread(scrape, port)
        assert idle["dsim_output_heaps_total"] == 0 and idle["dsim_capture_active"] == 0
        await sim.capture_start()
        await asyncio.sleep(0.5)
        busy = await asyncio.to_thread(scrape, port)
        assert busy["dsim_capture_active"] == 1 and busy["dsim_output_heaps_total"] > 0
        sent = await sim.capture_stop()
        after = await asyncio.to_thread(scrape, port)
        assert after["dsim_output_heaps_total"] == sent == await sim.sensor("transmitted-heaps")
        assert after["dsim_output_bytes_total"] == await sim.sensor("transmitted-bytes")
        assert after["dsim_send_errors_total"] == await sim.sensor("send-errors") == 0
        assert after["dsim_heap_size_bytes"] == 4096
        assert after["dsim_next_timestamp"] == await sim.sensor("next-timestamp")
        assert "dsim_time_error_s" in after and "dsim_signals_seconds" in after


async def test_the_metrics_port_in_use_is_a_clear_start_up_failure(sink: Sink) -> None:
    import socket

    from dsim.simulator import StartupError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StartupError, match=f"Prometheus metrics on port {port}"):
            async with Simulator(destinations=[sink.dest], prometheus_port=port):
                pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"signals": 123}, "signals must be a string"),
        ({"align_samples": 8192.0}, "align_samples must be an integer"),
        ({"end_of_stream": "no"}, "end_of_stream must be True or False"),
        ({"rate": "1e6"}, "rate must be a number"),
        ({"katcp_port": True}, "katcp_port must be an integer"),
        ({"destinations": "127.0.0.1:7148"}, "destinations must be a list of strings"),
        ({"heap_sise": 4096}, "unknown option"),
    ],
)
def test_api_keywords_of_the_wrong_type_are_refused_in_words(
    options: dict[str, Any], message: str
) -> None:
    from dsim.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Simulator(**options)


async def test_a_simulator_runs_once(sink: Sink) -> None:
    from dsim.errors import DsimError

    sim = Simulator(destinations=[sink.dest], rate=TEST_RATE)
    async with sim:
        with pytest.raises(DsimError, match="started already"):
            await sim.start()
    with pytest.raises(DsimError, match="not running"):
        _ = sim.katcp_address
    with pytest.raises(DsimError, match="not running"):
        await sim.capture_start()
    with pytest.raises(DsimError, match="started already"):
        async with sim:
            pass
