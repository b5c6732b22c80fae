"""wg-failover as a library: one query, the mapping back to servers, the policy, the switch."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from wgfailover.actions.failover import FailoverResult, fail_over
from wgfailover.config import Config, parse_config
from wgfailover.errors import ActionError, ExitCode, UsageError
from wgfailover.state import StateDir

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = 1_700_000_000.0


def make_config(
    tmp_path: Path,
    names: tuple[str, ...] = ("server1", "server2", "server3"),
    *,
    servers: dict[str, dict[str, Any]] | None = None,
    failover: dict[str, Any] | None = None,
    restart_command: list[str] | None = None,
    url: str | None = URL,
) -> Config:
    """Write a WireGuard config per server (Endpoint 192.0.2.N) and return the parsed Config."""
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir(exist_ok=True)
    for number, name in enumerate(names, start=1):
        (config_dir / name).write_text(f"[Interface]\nPrivateKey = x\n\n[Peer]\nEndpoint = 192.0.2.{number}:51820\n")
    document: dict[str, Any] = {
        "config_dir": str(config_dir),
        "active_link": str(tmp_path / "wg-active.conf"),
        "state_dir": str(tmp_path / "state"),
        "restart_command": restart_command or ["true"],
        "servers": servers if servers is not None else {name: {} for name in names},
        "prometheus": {"timeout": 2} | ({"url": url} if url else {}),
        # No tunnel to confirm: the probation's own tests set it.
        "failover": {"probation": 0, **(failover or {})},
    }
    return parse_config(document, tmp_path / "config.toml")


def answer(*series: tuple[str, str, str | float], label: str = "host") -> dict[str, Any]:
    """Given (endpoint, "loss"|"latency", value) triples, return Prometheus's JSON answer."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {label: endpoint, "wgf_metric": metric}, "value": [NOW, str(value)]}
                for endpoint, metric, value in series
            ],
        },
    }


def sent_queries(requests_mock: Any) -> list[str]:
    return [urllib.parse.parse_qs(request.text)["query"][0] for request in requests_mock.request_history]


def set_current(config: Config, name: str) -> None:
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current(name)


def run(config: Config, **options: Any) -> FailoverResult:
    options.setdefault("reason", "failover")
    options.setdefault("rng", random.Random(1))
    options.setdefault("wall_clock", lambda: NOW)
    return fail_over(config, **options)


def ranked(result: FailoverResult) -> list[tuple[str, int | None, str]]:
    return [(row.name, row.rank, row.reason) for row in result.rows]


# --- the query ---------------------------------------------------------------------


def test_one_query_asks_for_loss_and_latency_of_every_server(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer())
    run(config, dry_run=True)
    hosts = r"192\\.0\\.2\\.1|192\\.0\\.2\\.2|192\\.0\\.2\\.3"
    assert sent_queries(requests_mock) == [
        "label_replace(clamp(1 - ("
        f'sum by (host) (rate(smokeping_response_duration_seconds_count{{host=~"{hosts}"}}[300s]))'
        " / "
        f'sum by (host) (rate(smokeping_requests_total{{host=~"{hosts}"}}[300s]))'
        '), 0, 1), "wgf_metric", "loss", "", "")'
        " or label_replace("
        f'sum by (host) (rate(smokeping_response_duration_seconds_sum{{host=~"{hosts}"}}[300s]))'
        " / "
        f'sum by (host) (rate(smokeping_response_duration_seconds_count{{host=~"{hosts}"}}[300s]))'
        ', "wgf_metric", "latency", "", "")'
    ]


def test_endpoints_come_from_the_wireguard_configs_unless_configured(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, servers={"server1": {}, "server2": {"endpoint": "198.51.100.7"}, "server3": {}})
    requests_mock.post(QUERY_URL, json=answer())
    result = run(config, dry_run=True)
    assert dict(result.endpoints) == {"server1": "192.0.2.1", "server2": "198.51.100.7", "server3": "192.0.2.3"}
    assert "198\\\\.51\\\\.100\\\\.7" in sent_queries(requests_mock)[0]


# --- reading the answer ------------------------------------------------------------


# --- deciding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latency_tie", "expected"),
    [(None, {"server2"}), (0.10, {"server2"}), (0.5, {"server2", "server3"})],
    ids=["default", "10%", "half"],
)
def test_failover_latency_tie_decides_which_latencies_are_as_near(
    tmp_path: Path, requests_mock: Any, latency_tie: float | None, expected: set[str]
) -> None:
    # server3 is 25% farther than server2 but has twice the capacity.
    config = make_config(
        tmp_path,
        servers={"server1": {}, "server2": {}, "server3": {"weight": 2}},
        failover={} if latency_tie is None else {"latency_tie": latency_tie},
    )
    set_current(config, "server1")
    requests_mock.post(
        QUERY_URL,
        json=answer(
            ("192.0.2.2", "loss", 0.0),
            ("192.0.2.2", "latency", 0.020),
            ("192.0.2.3", "loss", 0.0),
            ("192.0.2.3", "latency", 0.025),
        ),
    )
    choices = {run(config, dry_run=True, rng=random.Random(seed)).choice for seed in range(40)}
    assert choices == expected


def test_the_lowest_loss_other_server_is_chosen(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(
        QUERY_URL,
        json=answer(("192.0.2.1", "loss", 0.0), ("192.0.2.2", "loss", 0.4), ("192.0.2.3", "loss", 0.1)),
    )
    result = run(config, dry_run=True)
    assert result.choice == "server3"
    assert result.used_prometheus
    assert ranked(result) == [
        ("server3", 1, "lowest loss"),
        ("server2", 2, "higher loss"),
        ("server1", None, "current"),
    ]
    assert result.losses == {"server3": 0.1, "server2": 0.4, "server1": 0.0}


def test_priorities_from_the_config_rank_a_healthy_preferred_server_first(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(
        tmp_path,
        ("server1", "server2", "server3", "server4"),
        servers={"server1": {"priority": 1}, "server2": {"priority": 1}, "server3": {"priority": 2}, "server4": {}},
    )
    set_current(config, "server1")
    requests_mock.post(
        QUERY_URL,
        json=answer(
            ("192.0.2.1", "loss", 0.0),
            ("192.0.2.2", "loss", 0.3),  # preferred but above health.threshold (0.15)
            ("192.0.2.3", "loss", 0.1),
            ("192.0.2.4", "loss", 0.0),
        ),
    )
    result = run(config, dry_run=True)
    assert ranked(result) == [
        ("server3", 1, "most preferred healthy (priority 2); lowest loss"),
        ("server4", 2, "less preferred (no priority)"),
        ("server2", 3, "loss above the threshold"),
        ("server1", None, "current"),
    ]


def test_an_empty_answer_means_a_random_pick_not_the_first_name(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, ("a", "b", "c", "d", "e"))
    set_current(config, "a")
    requests_mock.post(QUERY_URL, json=answer())
    choices = {run(config, dry_run=True, rng=random.Random(seed)).choice for seed in range(60)}
    assert choices == {"b", "c", "d", "e"}


PROMETHEUS_FAILURES = {
    "connection refused": {"exc": requests.exceptions.ConnectionError("refused")},
    "read timeout": {"exc": requests.exceptions.ReadTimeout("slow")},
    "400 bad_data": {"status_code": 400, "json": {"status": "error", "errorType": "bad_data", "error": "parse"}},
    "422 execution": {"status_code": 422, "json": {"status": "error", "errorType": "execution", "error": "x"}},
    "503 unavailable": {"status_code": 503, "json": {"status": "error", "errorType": "unavailable", "error": "y"}},
    "401": {"status_code": 401, "text": "Unauthorized"},
    "html from a proxy": {"status_code": 200, "text": "<html>login</html>", "headers": {"Content-Type": "text/html"}},
    "truncated json": {"status_code": 200, "text": '{"status": "success", "data": {"resu'},
    "non-numeric value": {"json": answer(("192.0.2.2", "loss", "lots"))},
}


@pytest.mark.parametrize("failure", PROMETHEUS_FAILURES.values(), ids=PROMETHEUS_FAILURES.keys())
def test_when_prometheus_cannot_be_asked_the_pick_is_random_by_default(
    tmp_path: Path, requests_mock: Any, failure: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, **failure)
    result = run(config)
    assert result.choice in ("server2", "server3")
    assert not result.used_prometheus
    assert result.prometheus_error
    assert "picking at random among the other servers" in caplog.text
    assert StateDir(config.state_dir).read_current(config.server_names).name == result.choice
    assert result.record is not None and result.record.losses == {}


@pytest.mark.parametrize("failure", PROMETHEUS_FAILURES.values(), ids=PROMETHEUS_FAILURES.keys())
def test_on_prometheus_error_fail_exits_1_and_changes_nothing(
    tmp_path: Path, requests_mock: Any, failure: dict[str, Any]
) -> None:
    config = make_config(tmp_path, failover={"on_prometheus_error": "fail"})
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, **failure)
    with pytest.raises(ActionError) as caught:
        run(config)
    assert caught.value.exit_code == ExitCode.ACTION_FAILED
    assert str(caught.value).endswith('; not switching (failover.on_prometheus_error = "fail")')
    assert StateDir(config.state_dir).read_current(config.server_names).name == "server1"
    assert not config.active_link.is_symlink()


def test_no_prometheus_url_is_a_random_pick_too(tmp_path: Path) -> None:
    config = make_config(tmp_path, url=None)
    set_current(config, "server1")
    result = run(config, dry_run=True)
    assert result.prometheus_error == "prometheus.url is not set"
    assert result.choice in ("server2", "server3")


def test_an_unreadable_credential_file_falls_back_like_any_prometheus_problem(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config = parse_config(
        {
            "config_dir": str(config.config_dir),
            "state_dir": str(config.state_dir),
            "servers": {"server1": {}, "server2": {}},
            "prometheus": {"url": URL, "bearer_token_file": str(tmp_path / "missing-token")},
        },
        tmp_path / "config.toml",
    )
    result = run(config, dry_run=True)
    assert result.prometheus_error is not None and "bearer_token_file: no such file" in result.prometheus_error


def test_random_fallback_still_avoids_servers_just_left(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    StateDir(config.state_dir).append_history(
        time=NOW - 120, from_server="server2", to_server="server1", reason="failover"
    )
    requests_mock.post(QUERY_URL, exc=requests.exceptions.ConnectionError("refused"))
    for seed in range(20):
        assert run(config, dry_run=True, rng=random.Random(seed)).choice == "server3"


def test_hold_down_comes_from_the_history_file(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, failover={"hold_down": "10m"})
    set_current(config, "server1")
    state = StateDir(config.state_dir)
    state.append_history(time=NOW - 300, from_server="server3", to_server="server1", reason="failover")
    requests_mock.post(
        QUERY_URL, json=answer(("192.0.2.1", "loss", 0.5), ("192.0.2.2", "loss", 0.3), ("192.0.2.3", "loss", 0.0))
    )
    result = run(config, dry_run=True)
    assert ranked(result) == [
        ("server2", 1, "lowest loss"),
        ("server3", 2, "held down: left 5m ago"),
        ("server1", None, "current"),
    ]
    later = run(config, dry_run=True, wall_clock=lambda: NOW + 301)
    assert later.choice == "server3"


def test_a_server_whose_config_is_missing_is_not_a_candidate(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, servers={"server1": {}, "server2": {}, "server3": {}, "gone": {"endpoint": "h"}})
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer(("h", "loss", 0.0), ("192.0.2.2", "loss", 0.5)))
    result = run(config, dry_run=True)
    assert result.choice == "server2"
    assert ("gone", None, f"config missing: {config.config_dir / 'gone'}") in ranked(result)


def test_no_other_server_is_an_action_error(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, ("only",))
    set_current(config, "only")
    requests_mock.post(QUERY_URL, json=answer())
    with pytest.raises(ActionError, match=r"^no other server to switch to \(only: current\)$"):
        run(config)


def test_an_invalid_state_file_makes_every_server_a_candidate(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    state = StateDir(config.state_dir)
    state.ensure()
    state.file("current").write_text("../../etc/passwd\n")
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.1", "loss", 0.0)))
    result = run(config, dry_run=True)
    assert result.from_server is None
    assert result.choice == "server1"
    assert "holds a path" in caplog.text


# --- acting ------------------------------------------------------------------------


def test_a_dry_run_touches_nothing(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, restart_command=["sh", "-c", f"touch {tmp_path}/restarted"])
    requests_mock.post(QUERY_URL, json=answer())
    result = run(config, dry_run=True)
    assert result.record is None and result.dry_run
    assert not config.state_dir.exists()
    assert not config.active_link.exists() and not config.active_link.is_symlink()
    assert not (tmp_path / "restarted").exists()


def test_a_switch_records_links_appends_history_and_restarts(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, restart_command=["sh", "-c", f"touch {tmp_path}/restarted"])
    set_current(config, "server1")
    StateDir(config.state_dir).write_failures(3)
    requests_mock.post(
        QUERY_URL, json=answer(("192.0.2.1", "loss", 0.6), ("192.0.2.2", "loss", 0.0), ("192.0.2.3", "loss", "NaN"))
    )
    result = run(config, reason="unit-failed")
    state = StateDir(config.state_dir)
    assert result.choice == "server2"
    assert state.read_current(config.server_names).name == "server2"
    assert os.readlink(config.active_link) == str(config.config_dir / "server2")
    assert (tmp_path / "restarted").exists()
    assert state.read_failures() == 0
    assert result.record == state.last_switch()
    assert result.record is not None
    assert result.record.to_json() == {
        "seq": 1,
        "time": NOW,
        "from": "server1",
        "to": "server2",
        "reason": "unit-failed",
        "losses": {"server1": 0.6, "server2": 0.0, "server3": None},
    }


def test_a_failed_restart_is_an_action_error_after_the_switch_is_recorded(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, restart_command=["sh", "-c", "echo unit wg.service not found >&2; exit 5"])
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.3", "loss", 0.0)))
    with pytest.raises(ActionError, match="exited with 5: unit wg.service not found"):
        run(config)
    assert StateDir(config.state_dir).read_current(config.server_names).name == "server3"


def test_to_switches_by_hand_and_records_every_servers_loss_at_that_moment(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.1", "loss", 1), ("192.0.2.2", "loss", 0.1)))
    result = run(config, to="server3", reason="manual")
    assert requests_mock.call_count == 1
    assert result.choice == "server3"
    assert ranked(result) == [
        ("server3", 1, "asked for with --to"),
        ("server1", None, "current"),
        ("server2", None, "not asked for"),
    ]
    assert result.record is not None and result.record.reason == "manual"
    assert result.record.losses == {"server1": 1.0, "server2": 0.1, "server3": None}
    assert os.readlink(config.active_link) == str(config.config_dir / "server3")
    assert "lose" not in caplog.text  # server3's loss is unknown: nothing to compare


def test_to_a_lossier_server_warns_and_still_switches(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(
        QUERY_URL, json=answer(("192.0.2.1", "loss", 1), ("192.0.2.2", "loss", 0), ("192.0.2.3", "loss", 0.42))
    )
    result = run(config, to="server3", reason="manual")
    assert result.record is not None and result.record.to_server == "server3"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "server3 loses 42.0% now, more than server2 (0.0%); switching to it as asked"
    ]


def test_to_switches_without_losses_when_prometheus_cannot_be_asked(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, exc=requests.ConnectionError("refused"))
    result = run(config, to="server3", reason="manual")
    assert result.record is not None and result.record.to_server == "server3"
    assert result.record.losses == {}


def test_to_the_server_already_in_use_asks_nothing(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server3")
    run(config, to="server3", reason="manual")
    assert requests_mock.call_count == 0


def test_to_an_unknown_server_is_a_usage_error_listing_the_names(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with pytest.raises(UsageError) as caught:
        run(config, to="server9")
    assert str(caught.value) == "'server9' is not a configured server (configured: server1, server2, server3)"
    assert caught.value.exit_code == ExitCode.USAGE


def test_to_the_current_server_does_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, restart_command=["false"])
    set_current(config, "server2")
    result = run(config, to="server2")
    assert result.skipped == "already using server2; nothing to do"
    assert result.record is None


def test_a_failover_that_waited_for_another_switch_does_not_switch_again(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.2", "loss", 0.0)))
    state = StateDir(config.state_dir)
    snapshot_taken = threading.Event()

    def wall_clock() -> float:
        snapshot_taken.set()
        return NOW

    results: list[FailoverResult] = []
    with held_lock(state):
        worker = threading.Thread(target=lambda: results.append(run(config, wall_clock=wall_clock)))
        worker.start()
        assert snapshot_taken.wait(10)
        # What the other failover does while it holds the lock:
        state.write_current("server3")
        state.append_history(time=NOW, from_server="server1", to_server="server3", reason="unit-failed")
    worker.join(10)
    assert not worker.is_alive()
    [result] = results
    assert result.skipped == (
        "another switch (server1 to server3, unit-failed) was made while this one waited; not switching again"
    )
    assert state.read_current(config.server_names).name == "server3"
    assert len(state.read_history()) == 1
    assert requests_mock.call_count == 0


@contextlib.contextmanager
def held_lock(state: StateDir) -> Iterator[None]:
    """Hold the state lock as another wg-failover process would."""
    state.ensure()
    with open(state.file("lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_an_answer_with_no_loss_for_any_candidate_is_warned_about(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    # Only the current server has data: the others' endpoints match no series.
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.1", "loss", "0.9")))
    result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(1), wall_clock=lambda: NOW)
    assert result.choice in {"server2", "server3"}
    assert "Prometheus has no loss for any other server (is failover.label 'host' on the prober's series" in caplog.text


def test_an_answer_with_a_loss_for_a_candidate_is_not_warned_about(
    tmp_path: Path, requests_mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path)
    set_current(config, "server1")
    requests_mock.post(QUERY_URL, json=answer(("192.0.2.2", "loss", "0.1")))
    result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(1), wall_clock=lambda: NOW)
    assert result.choice == "server2"
    assert "Prometheus has no loss" not in caplog.text
