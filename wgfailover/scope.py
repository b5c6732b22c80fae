"""Which probes in a shared metrics backend are this client's.

A fleet ships every client's probers into one Prometheus, Mimir or
VictoriaMetrics. Selected by job and endpoint alone, a client's health
check would sum the whole fleet's tunnel probes (one dead tunnel diluted by
999 healthy ones), and its ranking would mix every client's view of each
server. With ``fleet.client_label`` set, the queries' ``$scope``
placeholder becomes a matcher on that label (``,wg_client="laptop-17"``),
and ``$client`` the client's identity for queries that match it their own
way (``instance=~"$client:.*"``).

The health check always judges this client's own tunnel. The ranking
judges each server by this client's own probes of it (``ranking_scope =
"client"``, the default: the path from here is what matters), or by every
client's (``"fleet"``: more vantage points, for clients whose own external
prober is sparse or absent).
"""

from __future__ import annotations

from wgfailover.config import FleetSettings
from wgfailover.prometheus import escape_label_value


def client_matcher(fleet: FleetSettings) -> str:
    """
    Given the fleet settings, return the label matcher that selects this
    client's series, with a leading comma to follow other matchers
    (``,wg_client="laptop-17"``); "" when fleet.client_label is unset.
    """
    if not fleet.client_label:
        return ""
    return f',{fleet.client_label}="{escape_label_value(fleet.client)}"'


def health_placeholders(fleet: FleetSettings) -> dict[str, str]:
    """Given the fleet settings, return the values of $scope and $client in the health query: always this client's."""
    return {"scope": client_matcher(fleet), "client": escape_label_value(fleet.client)}


def ranking_placeholders(fleet: FleetSettings) -> dict[str, str]:
    """
    Given the fleet settings, return the values of $scope and $client in the
    ranking queries: this client's matcher in the "client" scope, nothing in
    the "fleet" scope (every client's probes of each server are summed).
    """
    scope = client_matcher(fleet) if fleet.ranking_scope == "client" else ""
    return {"scope": scope, "client": escape_label_value(fleet.client)}
