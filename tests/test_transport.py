"""Transport creation errors: one clear ConfigError each, ready for a one-line message."""

from __future__ import annotations

import json
import textwrap

import pytest

from dsim.address import Endpoint, parse_destination
from dsim.engine import Engine
from dsim.errors import ConfigError, TransportError
from dsim.transport import TransportConfig, TransportKind

from .conftest import needs_netns
from .support import run_in_private_netns


def test_parse_destination() -> None:
    assert parse_destination("127.0.0.1:7150") == [Endpoint("127.0.0.1", 7150)]
    assert parse_destination("localhost") == [Endpoint("127.0.0.1", 7148)]
    assert parse_destination("239.1.2.3:7148")[0].is_multicast
    with pytest.raises(ConfigError, match="one address expected"):
        parse_destination("239.1.2.3+1:7148", fanout=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no-such-host.invalid:7148", "does not resolve"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("127.0.0.1:70000", "port must be 1-65535"),
        ("127.0.0.1:http", "bad port"),
        ("127.0.0.1:+80", "bad port"),
        ("127.0.0.1:8_0", "bad port"),
        ("127.0.0.1:٨٠", "bad port"),
        (":7148", "no host"),
    ],
)
def test_bad_endpoints(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_destination(text)
    assert "\n" not in str(info.value)


async def test_ibverbs_without_rdma_device_fails_clearly() -> None:
    config = TransportConfig(
        kind=TransportKind.IBVERBS,
        destinations=[Endpoint("239.102.0.1", 7148)],
        interface="127.0.0.1",
    )
    with pytest.raises(TransportError, match="^cannot start ibverbs transport: no RDMA device"):
        Engine(config)


async def test_ibverbs_rejects_unicast() -> None:
    config = TransportConfig(
        kind=TransportKind.IBVERBS,
        destinations=[Endpoint("127.0.0.1", 7148)],
        interface="127.0.0.1",
    )
    with pytest.raises(ConfigError, match="only to IPv4 multicast.*127.0.0.1:7148"):
        Engine(config)


async def test_ibverbs_needs_an_interface() -> None:
    config = TransportConfig(kind=TransportKind.IBVERBS, destinations=[Endpoint("239.1.1.1", 1)])
    with pytest.raises(ConfigError, match="--interface"):
        Engine(config)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_packet_size": 10}, "packet size"),
        ({"max_packet_size": 70000}, "packet size"),
        ({"rate": -1.0}, "rate"),
        ({"rate": float("nan")}, "rate"),
        ({"ttl": 300}, "TTL"),
        ({"send_core": 4096}, "CPU core 4096 is not available"),
        ({"destinations": []}, "at least one destination"),
    ],
)
async def test_bad_settings(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Engine(TransportConfig(**settings))  # type: ignore[arg-type]


SEND_FAILURE_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, subprocess
    from dsim.engine import Engine
    from dsim.address import Endpoint
    from dsim.transport import TransportConfig

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    async def main():
        # In a fresh network namespace loopback is down: every send fails.
        engine = Engine(TransportConfig(destinations=[Endpoint("127.0.0.1", 7148)], rate=50e6))
        engine.start()
        await asyncio.sleep(2.5)
        failing = engine.statistics()
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        await asyncio.sleep(0.5)
        alive = engine.capturing
        sent = await engine.stop()
        print(json.dumps({"failing_errors": failing.send_errors, "failing_heaps": failing.heaps,
                          "alive": alive, "sent": sent, "stats": engine.statistics().heaps}))

    asyncio.run(main())
    """
)


@needs_netns
def test_send_failures_are_counted_and_the_engine_carries_on() -> None:
    result = run_in_private_netns(SEND_FAILURE_SCRIPT, loopback=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["failing_heaps"] == 0
    assert out["failing_errors"] > 10  # every batch failed
    assert out["alive"]
    assert out["sent"] > 0 and out["sent"] == out["stats"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    # Logged at most once a second over ~2.5 s of failures, each with a count.
    assert 1 <= len(warnings) <= 4
    assert all("Network is unreachable" in line for line in warnings)


async def test_ibverbs_failure_inside_spead2_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pretend the kernel lists an RDMA device, so that spead2's UdpIbvStream is
    # really created and fails (no librdmacm, or no device behind it).
    monkeypatch.setattr("dsim.transport.rdma_devices", lambda: ["mlx5_0"])
    config = TransportConfig(
        kind=TransportKind.IBVERBS,
        destinations=[Endpoint("239.102.0.1", 7148)],
        interface="127.0.0.1",
    )
    with pytest.raises(TransportError, match="^cannot start ibverbs transport: .+") as info:
        Engine(config)
    assert "\n" not in str(info.value)


MULTICAST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, subprocess
    from dsim.engine import Engine
    from dsim.address import Endpoint
    from dsim.transport import TransportConfig
    from dsim.verify import Verifier, VerifyConfig


    async def main():
        verifier = Verifier(VerifyConfig(
            port=7148, multicast="239.1.2.3", interface="127.0.0.1", idle_timeout=5))
        task = asyncio.create_task(verifier.run())
        engine = Engine(TransportConfig(
            destinations=[Endpoint("239.1.2.3", 7148)], interface="127.0.0.1", ttl=1, rate=50e6))
        engine.start(500)
        sent = await engine.wait_capture()
        await engine.close()
        report = await task
        print(json.dumps({"sent": sent, "heaps": report.heaps, "clean": report.clean}))

    asyncio.run(main())
    """
)


@needs_netns
def test_multicast_with_ttl_and_interface_in_a_private_namespace() -> None:
    result = run_in_private_netns(MULTICAST_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"sent": 500, "heaps": 500, "clean": True}


def test_a_named_interface_is_looked_up_once() -> None:
    """validate() replaces the name with its address: reopening a stream (at every
    heap-size change, on the event loop) needs no DNS."""
    config = TransportConfig(interface="localhost")
    config.validate()
    assert config.interface == "127.0.0.1"
