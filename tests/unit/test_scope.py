"""Fleet scope: each client reads only its own probes in a shared backend, and ranks by its own view or the fleet's."""

from __future__ import annotations

import pytest

from wgfailover.config import DEFAULT_FAILOVER_QUERY, DEFAULT_HEALTH_QUERY, FailoverSettings, FleetSettings
from wgfailover.evidence.servers_loss import build_failback_query, build_query
from wgfailover.evidence.tunnel import render_query
from wgfailover.scope import client_matcher, health_placeholders, ranking_placeholders

SCOPED = FleetSettings(client="laptop-17", client_label="wg_client")
FLEET_VIEW = FleetSettings(client="laptop-17", client_label="wg_client", ranking_scope="fleet")
UNSCOPED = FleetSettings(client="laptop-17")


@pytest.mark.parametrize(
    ("fleet", "health_scope", "ranking_scope"),
    [
        (UNSCOPED, "", ""),  # one client per backend: nothing to narrow
        (SCOPED, ',wg_client="laptop-17"', ',wg_client="laptop-17"'),
        (FLEET_VIEW, ',wg_client="laptop-17"', ""),  # ranks by every client's probes; health stays its own
    ],
    ids=["unscoped", "client-view", "fleet-view"],
)
def test_health_is_always_this_clients_and_ranking_follows_ranking_scope(
    fleet: FleetSettings, health_scope: str, ranking_scope: str
) -> None:
    assert health_placeholders(fleet)["scope"] == health_scope
    assert ranking_placeholders(fleet)["scope"] == ranking_scope


def test_the_client_is_escaped_inside_the_matcher() -> None:
    fleet = FleetSettings(client='we"ird\\name', client_label="wg_client")
    assert client_matcher(fleet) == ',wg_client="we\\"ird\\\\name"'


def test_the_default_health_query_reads_only_this_clients_tunnel() -> None:
    query = render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', "60s", SCOPED)
    assert 'smokeping_requests_total{job="vpn-prober",wg_client="laptop-17"}[60s]' in query
    assert "$" not in query


def test_client_in_a_custom_selector_is_filled() -> None:
    query = render_query("1 - avg(up{$selector}[$window])", 'instance=~"$client:.*"', "60s", SCOPED)
    assert query == '1 - avg(up{instance=~"laptop-17:.*"}[60s])'


def test_without_a_fleet_the_default_queries_are_what_they_always_were() -> None:
    query = render_query(DEFAULT_HEALTH_QUERY, 'job="vpn-prober"', "60s")
    assert 'smokeping_requests_total{job="vpn-prober"}[60s]' in query
    ranking = build_query(FailoverSettings(), ["192.0.2.1"])
    assert 'smokeping_requests_total{host=~"192\\\\.0\\\\.2\\\\.1"}[300s]' in ranking
    assert "$" not in ranking


def test_the_client_view_ranks_by_its_own_probes_with_latency() -> None:
    query = build_query(FailoverSettings(), ["192.0.2.1"], fleet=SCOPED)
    assert query.count(',wg_client="laptop-17"}') == 4  # loss: two selectors, latency: two
    assert 'wgf_metric", "latency"' in query


def test_the_fleet_view_sums_every_clients_probes_and_leaves_latency_out() -> None:
    query = build_query(FailoverSettings(), ["192.0.2.1"], fleet=FLEET_VIEW)
    assert "wg_client" not in query
    assert 'wgf_metric", "latency"' not in query
    assert query.startswith("label_replace(" + DEFAULT_FAILOVER_QUERY.split("(", 1)[0])


@pytest.mark.parametrize(
    ("fleet", "matchers"),
    [(UNSCOPED, 0), (SCOPED, 2), (FLEET_VIEW, 0)],
    ids=["unscoped", "client-view", "fleet-view"],
)
def test_the_failback_query_is_scoped_as_the_ranking(fleet: FleetSettings, matchers: int) -> None:
    query = build_failback_query(FailoverSettings(), ["192.0.2.1"], 900, 30, fleet)
    assert "$" not in query
    # Worst loss and slice count each read the loss query's two selectors.
    assert query.count(',wg_client="laptop-17"}') == 2 * matchers
