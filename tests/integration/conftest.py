"""Real Prometheus and VictoriaMetrics on loopback, for data a test brings.

The servers come from wglab.prometheus. Prometheus gets its data before it
starts: OpenMetrics text backfilled with ``promtool tsdb create-blocks-from
openmetrics``; VictoriaMetrics takes it afterwards through
/api/v1/import/prometheus. Every fixture stops what it started.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from wglab.prometheus import PROMETHEUS_BIN, VICTORIA_METRICS_BIN, PrometheusServer, VictoriaMetricsServer

PROMTOOL_BIN = "/usr/bin/promtool"


def _require(*binaries: str) -> None:
    for binary in binaries:
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (Debian: apt-get install prometheus victoria-metrics)")


@pytest.fixture
def prometheus_server(tmp_path: Path) -> Iterator[Callable[[str], PrometheusServer]]:
    """
    A factory: given OpenMetrics text, backfill it into a fresh TSDB with
    promtool and return a started PrometheusServer reading it (no scraping).
    """
    _require(PROMETHEUS_BIN, PROMTOOL_BIN)
    started: list[PrometheusServer] = []

    def start(openmetrics: str) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        source = workdir / "data.om"
        source.write_text(openmetrics)
        subprocess.run(
            [PROMTOOL_BIN, "tsdb", "create-blocks-from", "openmetrics", str(source), str(workdir / "data")],
            check=True,
            capture_output=True,
            timeout=60,
        )
        server = PrometheusServer(workdir=workdir)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    """A started single-node VictoriaMetrics with empty storage and no scraping."""
    _require(VICTORIA_METRICS_BIN)
    workdir = tmp_path / "victoria-metrics"
    workdir.mkdir()
    server = VictoriaMetricsServer(workdir=workdir)
    with server:
        yield server
