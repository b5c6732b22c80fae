"""The tunnel's loss from the prober in the VPN namespace: every series counts, unknown is not 0."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
import requests_mock as requests_mock_module

from wgfailover.config import DEFAULT_HEALTH_QUERY, HealthSettings, PrometheusSettings
from wgfailover.evidence.readings import TunnelReading
from wgfailover.evidence.tunnel import measure_tunnel_loss, render_query
from wgfailover.prometheus_pool import PrometheusPool

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"target": f"t{n}"}, "value": [0, value]} for n, value in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def measure(requests_mock: requests_mock_module.Mocker, *values: str, seconds: float = 60) -> TunnelReading:
    requests_mock.post(QUERY_URL, json=vector(*values))
    return measure_tunnel_loss(PrometheusPool(PrometheusSettings(url=URL)), HealthSettings(), seconds)


def test_the_default_query_sums_every_series_before_dividing() -> None:
    # The original read result[0] of a per-target answer: one target ignored.
    query = render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', "90s")
    assert query == (
        'clamp(1 - (sum(rate(smokeping_response_duration_seconds_count{job="vpn-prober"}[90s]))'
        ' / sum(rate(smokeping_requests_total{job="vpn-prober"}[90s]))), 0, 1)'
    )


@pytest.mark.parametrize(
    ("values", "loss"),
    [
        (("0.02",), 0.02),
        (("0.0", "0.6", "NaN"), 0.6),  # a custom per-target query: the worst target counts
        (("1.3",), 1.0),  # clamped once, in readings.py
        (("NaN",), None),  # 0/0: the prober sent nothing in the span
        (("+Inf", "-Inf"), None),
        ((), None),  # no series at all
    ],
)
def test_the_reading_is_the_worst_known_series_or_unknown(
    requests_mock: requests_mock_module.Mocker, values: tuple[str, ...], loss: float | None
) -> None:
    reading = measure(requests_mock, *values, seconds=45)
    assert reading == TunnelReading(source="prometheus", loss=loss, span=45, query=reading.query)
    sent = urllib.parse.parse_qs(requests_mock.last_request.body)["query"][0]
    assert sent == reading.query
    assert "[45s]" in sent
