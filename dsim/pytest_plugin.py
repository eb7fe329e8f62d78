"""pytest fixtures for correlator tests: ``dsim`` and ``dsim_array``.

Installed with dsim and registered as a pytest plugin (entry point ``dsim``);
nothing happens unless a test asks for a fixture. The fixtures are asyncio
fixtures and need pytest-asyncio.

``dsim``: one :class:`dsim.Simulator` in the test's process (katcp on a free
port), torn down at the end. Options come from a ``dsim`` marker, or from an
overridden ``dsim_options`` fixture::

    @pytest.mark.dsim(format="meerkat", destinations=["127.0.0.1:7148", "127.0.0.1:7149"])
    async def test_heaps_arrive(dsim):
        await dsim.capture_start(heaps=100)

``dsim_array``: a factory of arrays of dsim *processes*, one per antenna,
sharing a sync time (see :class:`dsim.array.Array`); every array is halted at
the end, even when the test fails::

    async def test_fringes(dsim_array):
        array = await dsim_array(4, signals="c = wgn(0.1, 7); nodither(c); nodither(c);")
        first = await array.capture_start()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when used, so that loading the plugin costs nothing
    from .array import Array
    from .simulator import Simulator

try:
    from pytest_asyncio import fixture as _fixture

    _HAVE_ASYNCIO = True
except ImportError:  # pragma: no cover - the fixtures then say what is missing
    _fixture = pytest.fixture  # type: ignore[assignment]
    _HAVE_ASYNCIO = False


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dsim(**options): options of the `dsim` fixture's simulator (as dsim's "
        "command line, with underscores)",
    )


def _need_asyncio() -> None:
    if not _HAVE_ASYNCIO:
        pytest.fail("dsim's fixtures need pytest-asyncio (pip install pytest-asyncio)")


@pytest.fixture
def dsim_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options of the `dsim` fixture: the test's ``dsim`` marker (override to change)."""
    marker = request.node.get_closest_marker("dsim")
    return dict(marker.kwargs) if marker is not None else {}


@_fixture
async def dsim(dsim_options: dict[str, Any]) -> AsyncIterator[Simulator]:
    """A running dsim in this process, with a connected katcp client."""
    _need_asyncio()
    from .simulator import Simulator

    async with Simulator(**dsim_options) as simulator:
        yield simulator


@_fixture
async def dsim_array() -> AsyncIterator[Callable[..., Awaitable[Array]]]:
    """``await dsim_array(n, **options)``: n dsim processes on one clock, halted at the end."""
    _need_asyncio()
    from .array import Array

    arrays: list[Array] = []

    async def start(n: int, **options: Any) -> Array:
        array = await Array.start(n, **options)
        arrays.append(array)
        return array

    try:
        yield start
    finally:
        for array in arrays:
            await array.close()
