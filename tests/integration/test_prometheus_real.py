"""The Prometheus client against a real Prometheus (Debian `prometheus`).

Prometheus scrapes a tiny exporter in this process whose `probe` series carry
awkward `host` label values, so the escaping helpers are checked against
Prometheus's own PromQL lexer and RE2, not against our idea of them.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from wgfailover.config import PrometheusSettings
from wgfailover.errors import PrometheusHTTPError
from wgfailover.prometheus import PrometheusClient, Sample, escape_label_value, escape_regex_value
from wglab.prometheus import exposition_label_value, serve_exposition

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="the prometheus binary is not installed"),
]

# Pairs that only differ where a missing escape would make one match the
# other: "." vs "x", "a|b" vs "a" and "b", "(x)" vs "x", "a+" vs "aa".
HOSTS = [
    "203.0.113.10",
    "203x0x113x10",
    "a|b",
    "a",
    "b",
    "(x)",
    "x",
    "a+",
    "aa",
    "[2001:db8::1]",
    "back\\slash",
    'quo"te',
    "^$",
    "new\nline",
    "dollar$1",
    "ümlaut",
]


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """A /metrics endpoint with one `probe` series per host; yields host:port."""
    body = "".join(f'probe{{host="{exposition_label_value(host)}"}} {index}\n' for index, host in enumerate(HOSTS))
    with serve_exposition(body.encode) as address:
        yield address


@pytest.fixture(scope="module")
def prometheus(exporter: str) -> Iterator[Any]:
    from wglab.prometheus import PrometheusServer

    with PrometheusServer([("odd", [exporter])], scrape_interval="1s") as server:
        server.wait_for_series("probe", min_series=len(HOSTS))
        yield server


def client_for(url: str) -> PrometheusClient:
    return PrometheusClient(PrometheusSettings(url=url, timeout=10))


def hosts_of(samples: list[Sample]) -> set[str]:
    return {sample.labels["host"] for sample in samples}


@pytest.mark.parametrize("host", HOSTS)
def test_escaped_regex_matches_exactly_its_host(prometheus: Any, host: str) -> None:
    samples = client_for(prometheus.url).query(f'probe{{host=~"{escape_regex_value(host)}"}}')
    assert hosts_of(samples) == {host}


@pytest.mark.parametrize("host", HOSTS)
def test_escaped_label_value_matches_exactly_its_host(prometheus: Any, host: str) -> None:
    samples = client_for(prometheus.url).query(f'probe{{host="{escape_label_value(host)}"}}')
    assert hosts_of(samples) == {host}


def test_alternation_of_escaped_hosts_matches_exactly_those_hosts(prometheus: Any) -> None:
    wanted = ["203.0.113.10", "a|b", "(x)", "a+", 'quo"te']
    matcher = "|".join(escape_regex_value(host) for host in wanted)
    samples = client_for(prometheus.url).query(f'sum by (host) (probe{{host=~"{matcher}"}})')
    assert hosts_of(samples) == set(wanted)
    assert {sample.labels["host"]: sample.value for sample in samples} == {
        host: float(HOSTS.index(host)) for host in wanted
    }


def test_missing_series_is_an_empty_result(prometheus: Any) -> None:
    assert client_for(prometheus.url).query('probe{host="no-such-host"}') == []


def test_nan_and_infinities_come_back_as_floats(prometheus: Any) -> None:
    client = client_for(prometheus.url)
    [nan] = client.query("vector(0) / vector(0)")
    [inf] = client.query("vector(1) / vector(0)")
    [minus_inf] = client.query("vector(-1) / vector(0)")
    assert math.isnan(nan.value)
    assert (inf.value, minus_inf.value) == (math.inf, -math.inf)


def test_scalar_query_is_one_sample(prometheus: Any) -> None:
    assert client_for(prometheus.url).query("1 + 1") == [Sample({}, 2.0)]


def test_parse_error_is_http_400_bad_data(prometheus: Any) -> None:
    with pytest.raises(PrometheusHTTPError) as caught:
        client_for(prometheus.url).query('probe{host=~"unclosed}')
    assert caught.value.status == 400
    assert caught.value.error_type == "bad_data"
    assert "bad_data: " in str(caught.value)


def test_range_vector_query_is_reported_as_the_wrong_shape(prometheus: Any) -> None:
    from wgfailover.errors import PrometheusBadResponse

    with pytest.raises(PrometheusBadResponse, match="gave a matrix"):
        client_for(prometheus.url).query("probe[5m]")


def test_path_prefix_reaches_a_prometheus_behind_a_route_prefix(exporter: str) -> None:
    from wglab.prometheus import PrometheusServer

    class PrefixedPrometheus(PrometheusServer):
        ready_path = "/prometheus/-/ready"

    with PrefixedPrometheus(extra_args=["--web.route-prefix=/prometheus"]) as server:
        assert client_for(f"{server.url}/prometheus/").query("1") == [Sample({}, 1.0)]
