"""katcp client calls with timeouts (aiokatcp has none of its own).

A benchmark that hangs on a dead server measures nothing: every call here gives
up after `timeout` seconds with :exc:`TimeoutError`.
"""

from __future__ import annotations

import asyncio

import aiokatcp

from . import LOCALHOST

DEFAULT_TIMEOUT = 10.0


async def connect(
    port: int, host: str = LOCALHOST, timeout: float = DEFAULT_TIMEOUT
) -> aiokatcp.Client:
    """A connected client."""
    async with asyncio.timeout(timeout):
        return await aiokatcp.Client.connect(host, port)


async def close(client: aiokatcp.Client) -> None:
    """Close `client` and wait for it to be closed."""
    client.close()
    await client.wait_closed()


async def request(
    client: aiokatcp.Client, name: str, *args: object, timeout: float = DEFAULT_TIMEOUT
) -> tuple[list[bytes], list[aiokatcp.Message]]:
    """``?name args``: the reply's arguments and the informs."""
    async with asyncio.timeout(timeout):
        return await client.request(name, *args)


async def sensor_value(client: aiokatcp.Client, name: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The value of sensor `name`, as text (from ``?sensor-value``)."""
    _, informs = await request(client, "sensor-value", name, timeout=timeout)
    value = informs[0].arguments[4]
    return value.decode() if isinstance(value, bytes) else str(value)


async def sensor_int(client: aiokatcp.Client, name: str, timeout: float = DEFAULT_TIMEOUT) -> int:
    """An integer sensor's value."""
    return int(await sensor_value(client, name, timeout))


async def sensor_float(
    client: aiokatcp.Client, name: str, timeout: float = DEFAULT_TIMEOUT
) -> float:
    """A float sensor's value."""
    return float(await sensor_value(client, name, timeout))


async def sensor_reading(
    client: aiokatcp.Client, name: str, timeout: float = DEFAULT_TIMEOUT
) -> tuple[float, str, str]:
    """Sensor `name` as (timestamp, status, value text): the timestamp is the server's UNIX
    time of the reading, so rates come out right however late the request is answered."""
    _, informs = await request(client, "sensor-value", name, timeout=timeout)
    args = [a.decode() if isinstance(a, bytes) else str(a) for a in informs[0].arguments]
    return float(args[0]), args[3], args[4]
