"""Failback in wg-health-check: when the prober's history is asked, and what a failback switches.

requests-mock plays Prometheus: the tunnel query and the failback query are
told apart by the failback query's max_over_time.
"""

from __future__ import annotations

import random
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from wgfailover.actions.failback import look_for_failback
from wgfailover.actions.failover import fail_over
from wgfailover.actions.health_check import check_health
from wgfailover.config import Config, parse_config
from wgfailover.evidence.readings import PreferredReading
from wgfailover.evidence.servers_loss import build_failback_query, read_preferred_readings
from wgfailover.output.health_check import check_to_json, describe_check
from wgfailover.policy.health import HealthOutcome
from wgfailover.prometheus import Sample
from wgfailover.state import CheckRecord, StateDir

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = 1_700_000_000.0
ENDPOINTS = {"home": "192.0.2.1", "office": "192.0.2.2", "away": "192.0.2.3"}


def make_config(
    tmp_path: Path, failback_after: str | None = "15m", hold_down: str = "10m", probation: str = "0"
) -> Config:
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir(exist_ok=True)
    for name, endpoint in ENDPOINTS.items():
        (config_dir / name).write_text(f"[Interface]\nPrivateKey = x\n\n[Peer]\nEndpoint = {endpoint}:51820\n")
    failover: dict[str, Any] = {"hold_down": hold_down, "probation": probation}
    if failback_after is not None:
        failover["failback_after"] = failback_after
    document = {
        "config_dir": str(config_dir),
        "active_link": str(tmp_path / "wg-active.conf"),
        "state_dir": str(tmp_path / "state"),
        "restart_command": ["true"],
        "servers": {"home": {"priority": 1}, "office": {"priority": 1}, "away": {"priority": 2}},
        "prometheus": {"url": URL, "timeout": 2},
        "failover": failover,
        "health": {"min_window": "30s"},
    }
    return parse_config(document, tmp_path / "config.toml")


def on_away(config: Config, switched_ago: float = 1000.0) -> StateDir:
    """The tunnel is on "away" since a failover from "home" switched_ago seconds before NOW."""
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("away")
    state.append_history(
        time=NOW - switched_ago, from_server="home", to_server="away", reason="health-check", losses={}
    )
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.0))
    return state


def prometheus(
    requests_mock: Any, tunnel_loss: float = 0.0, history: list[tuple[str, float, int]] | None = None
) -> list[str]:
    """Answer the tunnel query with tunnel_loss and the failback query with
    (endpoint, worst loss, slices) rows; return the queries sent, in order."""
    sent: list[str] = []

    def answer(request: Any, context: Any) -> dict[str, Any]:
        query = urllib.parse.parse_qs(request.body)["query"][0]
        sent.append(query)
        if "wgf_metric" not in query:
            result = [{"metric": {}, "value": [NOW, str(tunnel_loss)]}]
        elif "max_over_time" not in query:  # every server's loss, recorded with the switch
            result = [
                {"metric": {"host": endpoint, "wgf_metric": "loss"}, "value": [NOW, "0.01"]}
                for endpoint in ENDPOINTS.values()
            ]
        else:
            result = []
            for endpoint, worst, slices in history or []:
                for metric, value in (("worst_loss", worst), ("slices", slices)):
                    result.append({"metric": {"host": endpoint, "wgf_metric": metric}, "value": [NOW, str(value)]})
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    requests_mock.post(QUERY_URL, json=answer)
    return sent


def check(config: Config, **options: Any) -> Any:
    return check_health(config, wall_clock=lambda: NOW, rng=random.Random(0), **options)


def test_a_healthy_check_fails_back_to_a_preferred_server_healthy_for_failback_after(
    tmp_path: Path, requests_mock: Any
) -> None:
    config = make_config(tmp_path)
    state = on_away(config)
    sent = prometheus(requests_mock, history=[("192.0.2.1", 0.0, 30), ("192.0.2.2", 0.3, 30)])
    result = check(config)
    assert result.outcome == HealthOutcome.HEALTHY
    # The tunnel, the prober's history of every preferred server at once,
    # then every server's loss for the switch's record, as for any switch.
    assert len(sent) == 3
    assert "192\\\\.0\\\\.2\\\\.1|192\\\\.0\\\\.2\\\\.2" in sent[1] and "192\\\\.0\\\\.2\\\\.3" not in sent[1]
    last = state.last_switch()
    assert last is not None
    assert (last.from_server, last.to_server, last.reason) == ("away", "home", "failback: home healthy for 15m")
    assert last.losses == {"home": 0.01, "office": 0.01, "away": 0.01}
    assert state.read_current(config.server_names).name == "home"
    assert describe_check(result) == (
        "healthy: loss 0 <= 0.15 over 60s; failures 0 of 3; failed back from away to home (failback: home healthy for 15m)"
    )
    verdicts = check_to_json(result)["failback"]["candidates"]
    assert verdicts == [
        {"server": "home", "eligible": True, "reason": "healthy for 15m"},
        {"server": "office", "eligible": False, "reason": "loss 0.3 > 0.15 within the last 15m"},
    ]


def test_a_failback_that_fails_its_probation_returns_to_the_server_it_left_and_holds_the_preferred_one_down(
    tmp_path: Path, requests_mock: Any
) -> None:
    config = make_config(tmp_path, probation="20s")
    state = on_away(config)
    # The prober sees home healthy, but the tunnel through it loses everything.
    prometheus(requests_mock, tunnel_loss=1.0, history=[("192.0.2.1", 0.0, 30)])
    clock = {"now": NOW}

    def sleep(seconds: float) -> None:
        clock["now"] += max(seconds, 0.5)

    result = look_for_failback(config, rng=random.Random(0), wall_clock=lambda: clock["now"], sleep=sleep)
    assert result.decision.target == "home"
    assert result.switch is not None and result.switch.choice == "away"
    history = state.read_history()
    assert [(r.from_server, r.to_server) for r in history] == [("home", "away"), ("away", "home"), ("home", "away")]
    assert history[1].reason == "failback: home healthy for 15m"
    assert history[2].reason.startswith("probation failed: tunnel loss 1 > 0.15 over ")
    assert history[2].reason.endswith("; back to away")
    assert state.read_current(config.server_names).name == "away"
    # Held down now (left just now), so the next healthy check does not try again.
    again = look_for_failback(config, rng=random.Random(0), wall_clock=lambda: clock["now"] + 60, sleep=sleep)
    assert again.decision.target is None and not again.asked_prometheus
    assert again.decision.reason.startswith("the last switch was ")


def test_a_preferred_server_lossy_within_failback_after_is_not_returned_to(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    state = on_away(config)
    prometheus(requests_mock, history=[("192.0.2.1", 0.5, 30)])
    result = check(config)
    assert state.read_current(config.server_names).name == "away"
    assert len(state.read_history()) == 1
    assert describe_check(result).endswith(
        "; not failing back: no more preferred server was healthy for 15m "
        "(home: loss 0.5 > 0.15 within the last 15m; office: no data over the last 15m)"
    )


@pytest.mark.parametrize(
    ("switched_ago", "failback_after", "tunnel_loss"),
    [
        (600.0, "15m", 0.0),  # a switch within failback_after
        (1000.0, None, 0.0),  # failback off
        (1000.0, "15m", 0.5),  # the tunnel is failing: a failover's business
    ],
    ids=["switched-recently", "failback-off", "tunnel-failing"],
)
def test_no_query_for_the_prober_history_when_the_state_already_rules_failback_out(
    tmp_path: Path, requests_mock: Any, switched_ago: float, failback_after: str | None, tunnel_loss: float
) -> None:
    config = make_config(tmp_path, failback_after=failback_after)
    state = on_away(config, switched_ago)
    sent = prometheus(requests_mock, tunnel_loss=tunnel_loss, history=[("192.0.2.1", 0.0, 30)])
    result = check(config)
    assert not [query for query in sent if "max_over_time" in query]
    assert state.read_current(config.server_names).name == "away"
    assert "failing back" not in describe_check(result)


def test_a_dry_run_says_it_would_fail_back_and_changes_nothing(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    state = on_away(config)
    prometheus(requests_mock, history=[("192.0.2.2", 0.02, 30)])
    result = check(config, dry_run=True)
    assert describe_check(result).endswith("; would fail back from away to office (failback: office healthy for 15m)")
    assert state.read_current(config.server_names).name == "away"
    assert len(state.read_history()) == 1


def test_a_dry_run_says_why_it_would_not_fail_back_even_without_asking(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    on_away(config, switched_ago=600)
    sent = prometheus(requests_mock)
    result = check(config, dry_run=True)
    assert not [query for query in sent if "max_over_time" in query]
    assert describe_check(result).endswith(
        "; not failing back: the last switch was 10m ago, within failback_after (15m)"
    )


def test_prometheus_failing_on_the_history_query_means_no_failback_not_an_error(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    state = on_away(config)
    calls = {"n": 0}

    def answer(request: Any, context: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            context.status_code = 422
            return {"status": "error", "errorType": "execution", "error": "query timed out"}
        return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [NOW, "0"]}]}}

    requests_mock.post(QUERY_URL, json=answer)
    result = check(config)
    assert result.outcome == HealthOutcome.HEALTHY
    assert state.read_current(config.server_names).name == "away"
    assert "not failing back: the prober's history could not be read" in caplog.text


def test_a_failback_decided_on_a_history_that_changed_meanwhile_is_not_made(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    state = on_away(config)
    seen = state.read_history()[-1].seq
    state.append_history(time=NOW, from_server="away", to_server="office", reason="manual", losses={})
    state.write_current("office")
    result = fail_over(config, reason="failback: home healthy for 15m", to="home", after_seq=seen)
    assert result.skipped is not None and "another switch (away to office, manual)" in result.skipped
    assert state.read_current(config.server_names).name == "office"


def test_the_history_query_slices_failover_query_by_min_window_over_failback_after(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    query = build_failback_query(config.failover, ["192.0.2.1"], 900, 30)
    loss = config.failover.query.replace("$label", "host").replace("$hosts", "192\\\\.0\\\\.2\\\\.1")
    loss = loss.replace("$scope", "")  # one client per backend (fleet.client_label unset)
    known = f"({loss.replace('$window', '30s')}) > -Inf"
    assert query == (
        f'label_replace(max_over_time(({known})[900s:30s]), "wgf_metric", "worst_loss", "", "") or '
        f'label_replace(count_over_time(({known})[900s:30s]), "wgf_metric", "slices", "", "")'
    )


def test_history_readings_map_back_to_servers_worst_first_and_missing_as_no_data() -> None:
    def sample(host: str, metric: str, value: float) -> Sample:
        return Sample(labels={"host": host, "wgf_metric": metric}, value=value)

    samples = [
        sample("192.0.2.1", "worst_loss", -0.01),  # smokeping's over-count: clamped to 0
        sample("192.0.2.1", "slices", 30),
        sample("192.0.2.2", "worst_loss", 0.1),
        sample("192.0.2.2", "worst_loss", 0.4),  # two series for one endpoint: the worst counts
        sample("192.0.2.2", "slices", 29),
        sample("192.0.2.2", "slices", 12),
    ]
    readings = read_preferred_readings(samples, "host", {"home": "192.0.2.1", "office": "192.0.2.2", "x": None})
    assert readings == {
        "home": PreferredReading("home", 0.0, 30),
        "office": PreferredReading("office", 0.4, 12),
        "x": PreferredReading("x", None, 0),
    }
