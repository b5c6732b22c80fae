"""The servers' loss and latency: the one query, and reading its answer into ServerReadings."""

from __future__ import annotations

import math

import pytest

from wgfailover.config import FailoverSettings
from wgfailover.evidence.readings import ServerReading
from wgfailover.evidence.servers_loss import build_query, read_server_readings
from wgfailover.prometheus import Sample


def test_templates_get_label_window_and_escaped_hosts() -> None:
    settings = FailoverSettings(
        label="instance",
        window=90,
        query='1 - probe_success_ratio{$label=~"$hosts"}[$window]',
        latency_query="",
    )
    query = build_query(settings, ["vpn.example.com", "203.0.113.1", "vpn.example.com", 'we"ird'])
    assert query == (
        'label_replace(1 - probe_success_ratio{instance=~"203\\\\.0\\\\.113\\\\.1|vpn\\\\.example\\\\.com|we\\"ird"}'
        '[90s], "wgf_metric", "loss", "", "")'
    )


@pytest.mark.parametrize(
    ("value", "loss", "unreachable"),
    [
        (0.25, 0.25, False),
        (-0.03, 0.0, False),  # smokeping counted a reply to a request sent before the window
        (1.5, 1.0, False),
        (math.nan, None, True),  # 0/0: no request sent (a local fault when every server is so)
        (math.inf, None, False),
        (-math.inf, None, False),
    ],
)
def test_loss_is_clamped_and_nan_or_inf_is_unknown(value: float, loss: float | None, unreachable: bool) -> None:
    samples = [Sample({"host": "192.0.2.1", "wgf_metric": "loss"}, value)]
    assert read_server_readings(samples, "host", {"a": "192.0.2.1"}) == [
        ServerReading("a", loss, None, unreachable=unreachable)
    ]


def test_servers_sharing_an_endpoint_share_its_values_and_missing_ones_are_unknown() -> None:
    samples = [
        Sample({"host": "192.0.2.1", "wgf_metric": "loss"}, 0.1),
        Sample({"host": "192.0.2.1", "wgf_metric": "latency"}, 0.02),
        Sample({"host": "192.0.2.99", "wgf_metric": "loss"}, 0.0),  # not ours
    ]
    endpoints = {"a": "192.0.2.1", "a-udp443": "192.0.2.1", "b": "192.0.2.2", "c": None}
    assert read_server_readings(samples, "host", endpoints) == [
        ServerReading("a", 0.1, 0.02),
        ServerReading("a-udp443", 0.1, 0.02),
        ServerReading("b"),
        ServerReading("c"),
    ]


def test_several_series_for_one_endpoint_count_as_the_worst() -> None:
    samples = [
        Sample({"host": "192.0.2.1", "wgf_metric": "loss", "instance": "p1"}, 0.1),
        Sample({"host": "192.0.2.1", "wgf_metric": "loss", "instance": "p2"}, 0.3),
        Sample({"host": "192.0.2.1", "wgf_metric": "loss", "instance": "p3"}, math.nan),
    ]
    assert read_server_readings(samples, "host", {"a": "192.0.2.1"}) == [ServerReading("a", 0.3)]


def test_an_answer_without_the_label_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    samples = [Sample({"wgf_metric": "loss"}, 0.1)]
    assert read_server_readings(samples, "host", {"a": "192.0.2.1"}) == [ServerReading("a")]
    assert "none has a 'host' label" in caplog.text


def test_a_prometheus_capture_reference_in_the_query_is_left_for_prometheus() -> None:

    settings = FailoverSettings(
        label="instance",
        query='1 - avg by ($label) (label_replace(probe_success{$label=~"$hosts"}[$window], "instance", "$1", "instance", "(.*):.*"))',
        latency_query="",
    )
    query = build_query(settings, ["192.0.2.1"])
    assert '"$1"' in query
    assert 'instance=~"192\\\\.0\\\\.2\\\\.1"' in query
    assert "[300s]" in query
