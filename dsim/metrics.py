"""Prometheus metrics of one engine, served over HTTP.

The names are those correlator operators already scrape from katgpucbf's
digitiser simulator where they exist (``dsim_output_heaps_total``,
``dsim_output_bytes_total``, ``dsim_time_error_s``), plus send errors, the
capture state and how long the last ``?signals`` took. Values are read from
the engine at scrape time, so they always agree with the katcp sensors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .engine import Engine


class EngineCollector(Collector):
    """Reads an engine's statistics whenever Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        stats = engine.statistics()
        yield CounterMetricFamily(
            "dsim_output_heaps", "Heaps sent (all polarisations)", value=stats.heaps
        )
        yield CounterMetricFamily(
            "dsim_output_bytes", "Payload (sample) bytes sent", value=stats.bytes
        )
        yield CounterMetricFamily("dsim_send_errors", "Failed batch sends", value=stats.send_errors)
        yield GaugeMetricFamily(
            "dsim_time_error_s",
            "Real time: wall time at send completion minus the batch's last sample time",
            value=engine.time_error,
        )
        yield GaugeMetricFamily(
            "dsim_capture_active", "1 while a capture runs", value=float(stats.capturing)
        )
        yield GaugeMetricFamily(
            "dsim_heap_size_bytes", "Payload bytes per heap", value=stats.heap_size
        )
        yield GaugeMetricFamily(
            "dsim_next_timestamp", "Timestamp of the next heap", value=stats.next_timestamp
        )
        yield GaugeMetricFamily(
            "dsim_signals_seconds",
            "Seconds the last ?signals took to render and prepare",
            value=engine.last_signals_seconds,
        )


class Metrics:
    """An HTTP server with `engine`'s metrics at ``http://host:port/metrics``."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engine))
        server, thread = start_http_server(port, host, registry=self.registry)
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
