"""wg-health-check: the decision table, the span each check judges, and the trigger.

requests-mock answers for Prometheus inside this process; the tests that run
the real command in separate processes get a real HTTP server on 127.0.0.1
instead, since a mock cannot cross a process boundary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module
from click.testing import CliRunner

from tests.commands import command_argv
from wgfailover.actions.health_check import check_health
from wgfailover.commands.wg_health_check import main
from wgfailover.config import Config, load_config
from wgfailover.errors import ActionError, ExitCode, LockBusyError, PrometheusUnreachable
from wgfailover.output.health_check import describe_check
from wgfailover.policy.health import HealthOutcome
from wgfailover.state import PENDING_REASON_FILE, CheckRecord, StateDir, SwitchRecord

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = 1_700_000_000.0

# Marks whether the state lock was free while the failover command ran: a
# command that needs the lock (wg-failover) would otherwise deadlock.
LOCK_PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    state_dir, marker = sys.argv[1], sys.argv[2]
    fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        verdict = "lock free"
    except OSError:
        verdict = "lock held"
    open(marker, "w").write(verdict)
    """
)


def wall(now: float = NOW) -> Callable[[], float]:
    return lambda: now


def vector(*values: Any, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Return a Prometheus instant-vector answer with one series per value."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": dict(labels or {}), "value": [NOW, str(value)]} for value in values],
        },
    }


def sent_query(request: Any) -> str:
    return str(urllib.parse.parse_qs(request.body)["query"][0])


def window_of(query: str) -> str:
    """Return the range of the first selector of a query, e.g. '45s'."""
    return query.split("[", 1)[1].split("]", 1)[0]


@pytest.fixture
def make_health_config(make_config_file: Callable[..., Path]) -> Callable[..., Config]:
    """Return a function making a config with Prometheus at URL and the given [health] lines."""

    def make(health: str = "", prometheus_url: str = URL, top: str = "") -> Config:
        extra = f'[prometheus]\nurl = "{prometheus_url}"\n\n[health]\n{textwrap.dedent(health)}'
        return load_config(make_config_file(extra, top=top))

    return make


@pytest.fixture
def config(make_health_config: Callable[..., Config], tmp_path: Path) -> Config:
    """Thresholds as in the original, and a failover command that leaves a marker."""
    marker = tmp_path / "failover-ran"
    command = [sys.executable, "-c", LOCK_PROBE, str(tmp_path / "state"), str(marker)]
    return make_health_config(f"failover_command = {json.dumps(command)}\n")


def state_of(config: Config) -> StateDir:
    state = StateDir(config.state_dir)
    state.ensure()
    return state


# --- the decision table --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "outcome", "counter", "summary"),
    [
        ("0", HealthOutcome.HEALTHY, "0\n", "healthy: loss 0 <= 0.15 over 300s; reset failures 1 of 3 to 0"),
        # Equal to the threshold is healthy: only loss *above* it counts.
        ("0.15", HealthOutcome.HEALTHY, "0\n", "healthy: loss 0.15 <= 0.15 over 300s; reset failures 1 of 3 to 0"),
        ("0.1500001", HealthOutcome.FAILURE, "2\n", "unhealthy: loss 0.15 > 0.15 over 300s; count failure 2 of 3"),
        ("0.42", HealthOutcome.FAILURE, "2\n", "unhealthy: loss 0.42 > 0.15 over 300s; count failure 2 of 3"),
        # smokeping can count more replies than requests: clamped, not negative.
        ("-0.3", HealthOutcome.HEALTHY, "0\n", "healthy: loss 0 <= 0.15 over 300s; reset failures 1 of 3 to 0"),
        ("1.7", HealthOutcome.FAILURE, "2\n", "unhealthy: loss 1 > 0.15 over 300s; count failure 2 of 3"),
    ],
)
def test_loss_above_the_threshold_counts_and_a_good_check_resets(
    config: Config,
    requests_mock: requests_mock_module.Mocker,
    value: str,
    outcome: str,
    counter: str,
    summary: str,
) -> None:
    state = state_of(config)
    state.write_failures(1)
    state.write_last_check(CheckRecord(time=NOW - 400, loss=0.0, span=60))
    requests_mock.post(QUERY_URL, json=vector(value))
    result = check_health(config, wall_clock=wall())
    assert result.outcome == outcome
    assert (config.state_dir / "health-failures").read_text() == counter
    assert describe_check(result).replace(" (last check 400s ago: cut to health.window)", "") == summary


def test_the_default_query_sums_every_series_of_the_vpn_prober(
    config: Config, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(QUERY_URL, json=vector("0.01"))
    check_health(config, wall_clock=wall())
    assert sent_query(requests_mock.last_request) == (
        'clamp(1 - (sum(rate(smokeping_response_duration_seconds_count{job="vpn-prober"}[300s]))'
        ' / sum(rate(smokeping_requests_total{job="vpn-prober"}[300s]))), 0, 1)'
    )


def test_a_custom_selector_and_query_are_filled_in(
    make_health_config: Callable[..., Config], requests_mock: requests_mock_module.Mocker
) -> None:
    config = make_health_config(
        """\
        selector = 'job="tunnel", instance="vpn:9374"'
        query = "max(my_loss{$selector}[$window])"
        """
    )
    requests_mock.post(QUERY_URL, json=vector("0.01"))
    check_health(config, wall_clock=wall())
    assert sent_query(requests_mock.last_request) == 'max(my_loss{job="tunnel", instance="vpn:9374"}[300s])'


def test_a_custom_query_with_several_series_is_judged_by_the_worst(
    make_health_config: Callable[..., Config], requests_mock: requests_mock_module.Mocker
) -> None:
    # The original read result[0]: a healthy first target hid a lossy one.
    config = make_health_config('query = "loss_per_target{$selector}[$window]"\n')
    requests_mock.post(QUERY_URL, json=vector("0.0", "0.6", "NaN"))
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.FAILURE
    assert result.reading is not None and result.reading.loss == 0.6


def test_max_failures_in_a_row_trigger_the_failover_command_without_the_lock(
    config: Config, requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    state = state_of(config)
    state.write_failures(2)
    requests_mock.post(QUERY_URL, json=vector("0.42"))
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.FAILOVER
    assert (tmp_path / "failover-ran").read_text() == "lock free"
    assert (config.state_dir / "health-failures").read_text() == "0\n"
    assert describe_check(result).startswith(
        "unhealthy: loss 0.42 > 0.15 over 300s (first check: all of health.window); "
    )
    assert describe_check(result).endswith(
        "failure 3 of 3: failover triggered (" + " ".join(config.health.failover_command or ()) + ")"
    )


def test_a_counter_above_max_failures_triggers_at_the_next_failure(
    config: Config, requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    state_of(config).write_failures(7)  # e.g. max_failures was lowered
    requests_mock.post(QUERY_URL, json=vector("0.42"))
    assert check_health(config, wall_clock=wall()).outcome == HealthOutcome.FAILOVER
    assert (tmp_path / "failover-ran").exists()


@pytest.mark.parametrize(
    ("answer", "policy", "outcome", "counter"),
    [
        (vector(), "failure", HealthOutcome.FAILURE, "2\n"),
        (vector("NaN"), "failure", HealthOutcome.FAILURE, "2\n"),
        (vector("+Inf"), "failure", HealthOutcome.FAILURE, "2\n"),
        (vector(), "ignore", HealthOutcome.IGNORED, "1\n"),
        (vector("NaN"), "ignore", HealthOutcome.IGNORED, "1\n"),
    ],
)
def test_no_data_follows_the_on_no_data_policy_and_is_logged(
    make_health_config: Callable[..., Config],
    requests_mock: requests_mock_module.Mocker,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
    policy: str,
    outcome: str,
    counter: str,
) -> None:
    config = make_health_config(f'on_no_data = "{policy}"\n')
    state_of(config).write_failures(1)
    requests_mock.post(QUERY_URL, json=answer)
    with caplog.at_level(logging.WARNING, logger="wgfailover"):
        result = check_health(config, wall_clock=wall())
    assert result.outcome == outcome
    assert (config.state_dir / "health-failures").read_text() == counter
    verdict = "counted as a failure" if policy == "failure" else "ignored"
    assert f"(health.on_no_data = {policy}: {verdict})" in caplog.text
    assert "no tunnel loss data over 300s for clamp(1 - (" in caplog.text


def test_no_data_for_max_failures_checks_fails_over_with_that_reason(
    make_health_config: Callable[..., Config],
    requests_mock: requests_mock_module.Mocker,
) -> None:
    config = make_health_config("max_failures = 1\n")  # failover in-process, restart_command = true
    state = state_of(config)
    state.write_current("server1")

    def answer(request: Any, context: Any) -> dict[str, Any]:
        # The health query has data for nobody; the failover's ranking query neither.
        return vector()

    requests_mock.post(QUERY_URL, json=answer)
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.FAILOVER
    last = state.last_switch()
    assert last is not None and last.reason == "health-check: no data for 1 check"
    assert last.from_server == "server1" and last.to_server in {"server2", "server3"}


def test_the_failover_runs_in_process_by_default_with_the_reason_recorded(
    make_health_config: Callable[..., Config], requests_mock: requests_mock_module.Mocker
) -> None:
    config = make_health_config()
    state = state_of(config)
    state.write_current("server1")
    state.write_failures(2)

    def answer(request: Any, context: Any) -> dict[str, Any]:
        if "vpn-prober" in sent_query(request):
            return vector("0.42")
        return vector()  # the failover's ranking: nothing known, a random pick

    requests_mock.post(QUERY_URL, json=answer)
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.FAILOVER and result.failover is not None
    last = state.last_switch()
    assert last is not None
    assert last.reason == "health-check: loss 0.42 > 0.15 for 3 checks"
    assert (last.from_server, last.to_server) == ("server1", result.failover.choice)
    assert describe_check(result).endswith(f"failure 3 of 3: failed over from server1 to {result.failover.choice}")
    assert (config.state_dir / "health-failures").read_text() == "0\n"


def test_a_failed_trigger_is_exit_1_with_the_check_already_recorded(
    make_health_config: Callable[..., Config], requests_mock: requests_mock_module.Mocker
) -> None:
    config = make_health_config('max_failures = 1\nfailover_command = ["false"]\n')
    requests_mock.post(QUERY_URL, json=vector("0.9"))
    with pytest.raises(ActionError) as caught:
        check_health(config, wall_clock=wall())
    assert str(caught.value) == "triggering the failover failed: false exited with 1"
    assert caught.value.exit_code == ExitCode.ACTION_FAILED
    assert (config.state_dir / "health-failures").read_text() == "0\n"
    assert StateDir(config.state_dir).read_last_check() == CheckRecord(time=NOW, loss=0.9, span=300.0)


# --- Prometheus unusable -------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        {"exc": requests.exceptions.ConnectionError("refused")},
        {"status_code": 503, "text": "Service Unavailable"},
        {"text": "<html>not prometheus</html>"},
    ],
)
def test_an_unusable_prometheus_counts_nothing_and_exits_69(
    config: Config, requests_mock: requests_mock_module.Mocker, answer: dict[str, Any]
) -> None:
    state = state_of(config)
    state.write_failures(2)
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.3, span=60))
    before = {path.name: path.read_bytes() for path in config.state_dir.iterdir()}
    requests_mock.post(QUERY_URL, **answer)
    result = CliRunner().invoke(main, ["--config", str(config.path)])
    assert result.exit_code == int(ExitCode.UNAVAILABLE) == 69
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("wg-health-check: error: ")
    assert {path.name: path.read_bytes() for path in config.state_dir.iterdir()} == before


def test_an_unreachable_prometheus_raises_from_the_library(
    config: Config, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(QUERY_URL, exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(PrometheusUnreachable):
        check_health(config, wall_clock=wall())
    assert not (config.state_dir / "health-failures").exists()


# --- the span each check judges -------------------------------------------------


@pytest.mark.parametrize(
    ("last_check_ago", "window", "reason"),
    [
        (None, "300s", "first check: all of health.window"),
        (45, "45s", "since the last check"),
        (45.4, "45s", "since the last check"),
        (30, "30s", "since the last check"),
        (-20, "30s", "last check recorded in the future: health.min_window"),  # clock stepped back
        (1000, "300s", "last check 1000s ago: cut to health.window"),
    ],
)
def test_each_check_judges_the_span_since_the_previous_one_clipped(
    config: Config,
    requests_mock: requests_mock_module.Mocker,
    last_check_ago: float | None,
    window: str,
    reason: str,
) -> None:
    if last_check_ago is not None:
        state_of(config).write_last_check(CheckRecord(time=NOW - last_check_ago, loss=0.0, span=60))
    requests_mock.post(QUERY_URL, json=vector("0"))
    result = check_health(config, wall_clock=wall())
    assert window_of(sent_query(requests_mock.last_request)) == window
    assert result.span.reason == reason
    assert StateDir(config.state_dir).read_last_check() == CheckRecord(time=NOW, loss=0.0, span=float(window[:-1]))


@pytest.mark.parametrize("last_check_ago", [0, 10, 29.5])
def test_a_check_sooner_than_min_window_after_the_last_waits_and_counts_nothing(
    config: Config, requests_mock: requests_mock_module.Mocker, last_check_ago: float
) -> None:
    state = state_of(config)
    state.write_last_check(CheckRecord(time=NOW - last_check_ago, loss=0.9, span=60))
    state.write_failures(2)
    requests_mock.post(QUERY_URL, json=vector("0.9"))
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.WAITING
    assert result.span.reason == f"too soon after the last check: {last_check_ago:.0f}s of new data, 30s needed"
    assert not requests_mock.called
    assert state.read_failures() == 2
    assert state.read_last_check() == CheckRecord(time=NOW - last_check_ago, loss=0.9, span=60)


def switch_record(seconds_ago: float, seq: int = 1) -> SwitchRecord:
    return SwitchRecord(seq=seq, time=NOW - seconds_ago, from_server="server1", to_server="server2", reason="x")


def test_after_a_switch_checks_wait_for_min_window_of_new_data(
    config: Config, requests_mock: requests_mock_module.Mocker
) -> None:
    state = state_of(config)
    state.append_history(time=NOW - 10, from_server="server1", to_server="server2", reason="health-check")
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.9, span=60))
    before = {path.name: path.read_bytes() for path in config.state_dir.iterdir()}
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.WAITING
    assert describe_check(result) == "waiting for data since the switch: 10s of 30s"
    assert not requests_mock.called
    assert {path.name: path.read_bytes() for path in config.state_dir.iterdir()} == before


def test_after_the_grace_only_data_since_the_switch_is_judged(
    config: Config, requests_mock: requests_mock_module.Mocker
) -> None:
    state = state_of(config)
    state.append_history(time=NOW - 31, from_server="server1", to_server="server2", reason="health-check")
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.9, span=60))
    requests_mock.post(QUERY_URL, json=vector("0.01"))
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.HEALTHY
    assert window_of(sent_query(requests_mock.last_request)) == "31s"
    assert describe_check(result) == "healthy: loss 0.01 <= 0.15 over 31s (since the last switch); failures 0 of 3"


def test_the_grace_is_reported_by_the_command(config: Config) -> None:
    # Real wall clock here: the command takes no clock.
    state_of(config).append_history(time=time.time(), from_server=None, to_server="server2", reason="manual")
    result = CliRunner().invoke(main, ["--config", str(config.path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("waiting for data since the switch: ")
    assert result.stdout.endswith("s of 30s\n")


def test_a_switch_while_measuring_voids_the_check(config: Config, requests_mock: requests_mock_module.Mocker) -> None:
    state = state_of(config)
    state.write_failures(2)

    def switch_meanwhile(request: Any, context: Any) -> dict[str, Any]:
        state.append_history(time=NOW, from_server="server1", to_server="server3", reason="unit-failed")
        return vector("0.9")  # the old server's loss

    requests_mock.post(QUERY_URL, json=switch_meanwhile)
    result = check_health(config, wall_clock=wall())
    assert result.outcome == HealthOutcome.SUPERSEDED
    assert (config.state_dir / "health-failures").read_text() == "2\n"
    assert StateDir(config.state_dir).read_last_check() is None


# --- state, metrics, dry run, lock ------------------------------------------------


def test_the_metrics_are_rewritten_after_each_check(config: Config, requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector("0.42"))
    check_health(config, wall_clock=wall())
    assert config.textfile_dir is not None
    lines = (config.textfile_dir / "wg_failover.prom").read_text().splitlines()
    values = {line.split()[0]: float(line.split()[1]) for line in lines if not line.startswith("#")}
    assert values["wg_failover_health_consecutive_failures"] == 1
    assert values["wg_failover_tunnel_loss_ratio"] == 0.42
    assert values["wg_failover_last_check_timestamp_seconds"] == NOW


def test_a_dry_run_shows_what_it_would_do_and_changes_nothing(
    config: Config, requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    state = state_of(config)
    state.write_failures(2)
    state.write_last_check(CheckRecord(time=NOW - 60, loss=0.3, span=60))
    before = {path.name: path.read_bytes() for path in config.state_dir.iterdir()}
    requests_mock.post(QUERY_URL, json=vector("0.42"))
    result = check_health(config, dry_run=True, wall_clock=wall())
    assert result.outcome == HealthOutcome.FAILOVER and result.dry_run
    assert describe_check(result) == (
        "unhealthy: loss 0.42 > 0.15 over 60s; would count failure 3 of 3 and fail over ("
        + " ".join(config.health.failover_command or ())
        + ")"
    )
    assert not (tmp_path / "failover-ran").exists()
    assert not (tmp_path / "wg_failover.prom").exists()
    assert {path.name: path.read_bytes() for path in config.state_dir.iterdir()} == before


def test_the_dry_run_flag_prints_the_span_and_the_counter(
    config: Config, requests_mock: requests_mock_module.Mocker
) -> None:
    requests_mock.post(QUERY_URL, json=vector("0.02"))
    result = CliRunner().invoke(main, ["--config", str(config.path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "dry run: healthy: loss 0.02 <= 0.15 over 300s (first check: all of health.window); failures 0 of 3\n"
    )
    assert not config.state_dir.exists()


def test_a_busy_lock_is_exit_75_and_counts_nothing(
    make_health_config: Callable[..., Config], requests_mock: requests_mock_module.Mocker
) -> None:
    config = make_health_config(top="lock_timeout = 0.2\n")
    state = state_of(config)
    state.write_failures(1)
    requests_mock.post(QUERY_URL, json=vector("0.42"))
    with state.locked(5):
        with pytest.raises(LockBusyError) as caught:
            check_health(config, wall_clock=wall())
    assert caught.value.exit_code == int(ExitCode.TEMPFAIL) == 75
    assert (config.state_dir / "health-failures").read_text() == "1\n"


def test_a_bad_config_is_exit_78(make_health_config: Callable[..., Config], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[health]\ntreshold = 0.2\n[servers.a]\n")
    result = CliRunner().invoke(main, ["--config", str(bad)])
    assert result.exit_code == int(ExitCode.CONFIG) == 78
    assert result.stderr == (
        f"wg-health-check: error: {bad}: health.treshold: unknown key (did you mean 'health.threshold'?)\n"
    )


# --- separate processes -----------------------------------------------------------


class FakePrometheus:
    """A real HTTP server on 127.0.0.1 answering every query with one loss value."""

    def __init__(self) -> None:
        self.loss = "0"
        self.queries: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                owner.queries.append(form["query"][0])
                body = json.dumps(vector(owner.loss) if "vpn-prober" in form["query"][0] else vector()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def run_command(config: Config, *args: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed wg-health-check in its own process."""
    env = {key: value for key, value in os.environ.items() if key not in ("JOURNAL_STREAM", "WG_FAILOVER_CONFIG")}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [*command_argv("wg-health-check"), "--config", str(config.path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def a_timer_period_passes(config: Config, seconds: float = 60) -> None:
    """Move the last check back in time, as if the timer's period had passed."""
    state = StateDir(config.state_dir)
    last = state.read_last_check()
    assert last is not None
    state.write_last_check(dataclasses.replace(last, time=last.time - seconds))


def test_the_counter_persists_across_separate_processes(
    make_health_config: Callable[..., Config], fake_prometheus: FakePrometheus, tmp_path: Path
) -> None:
    marker = tmp_path / "failover-ran"
    command = [sys.executable, "-c", LOCK_PROBE, str(tmp_path / "state"), str(marker)]
    config = make_health_config(f"failover_command = {json.dumps(command)}\n", prometheus_url=fake_prometheus.url)
    state_of(config)
    # As the original left it: `echo "$FAILURES" > "$STATE_FILE"`.
    (config.state_dir / "health-failures").write_text("1\n")
    fake_prometheus.loss = "0.5"
    first = run_command(config)
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith("; count failure 2 of 3\n")
    assert (config.state_dir / "health-failures").read_text() == "2\n"
    a_timer_period_passes(config)
    second = run_command(config)
    assert second.returncode == 0, second.stderr
    assert "; failure 3 of 3: failover triggered (" in second.stdout
    assert marker.read_text() == "lock free"
    assert (config.state_dir / "health-failures").read_text() == "0\n"
    fake_prometheus.loss = "0.01"
    a_timer_period_passes(config)
    third = run_command(config)
    assert third.returncode == 0, third.stderr
    assert third.stdout.startswith("healthy: loss 0.01 <= 0.15 over 6")  # the ~60s since the last check
    assert third.stdout.endswith("; failures 0 of 3\n")


def test_a_failover_command_running_wg_failover_on_the_same_state_does_not_deadlock(
    make_health_config: Callable[..., Config], fake_prometheus: FakePrometheus, tmp_path: Path
) -> None:
    # lock_timeout is short: a deadlock would fail fast (exit 75 inside, 1 outside) instead of hanging.
    command = [*command_argv("wg-failover"), "--config", str(tmp_path / "config.toml"), "--to", "server3"]
    config = make_health_config(
        f"max_failures = 1\nfailover_command = {json.dumps(command)}\n",
        prometheus_url=fake_prometheus.url,
        top="lock_timeout = 3\n",
    )
    state_of(config).write_current("server1")
    fake_prometheus.loss = "0.9"
    result = run_command(config)
    assert result.returncode == 0, result.stderr
    assert (config.state_dir / "current").read_text() == "server3\n"
    last = StateDir(config.state_dir).last_switch()
    assert last is not None and (last.from_server, last.to_server) == ("server1", "server3")


def test_a_failover_the_health_check_starts_through_a_command_records_the_checks_reason(
    make_health_config: Callable[..., Config], fake_prometheus: FakePrometheus, tmp_path: Path
) -> None:
    # As the NixOS module wires it: the unit's command line says unit-failed,
    # for its OnFailure= role; started by the health check it must say why.
    command = [*command_argv("wg-failover"), "--config", str(tmp_path / "config.toml"), "--reason", "unit-failed"]
    config = make_health_config(
        f"max_failures = 1\nfailover_command = {json.dumps(command)}\n", prometheus_url=fake_prometheus.url
    )
    state_of(config).write_current("server1")
    fake_prometheus.loss = "0.9"
    result = run_command(config)
    assert result.returncode == 0, result.stderr
    last = StateDir(config.state_dir).last_switch()
    assert last is not None
    assert (last.from_server, last.reason) == ("server1", "health-check: loss 0.9 > 0.15 for 1 check")
    assert not (config.state_dir / PENDING_REASON_FILE).exists()


def test_the_same_failover_started_by_on_failure_records_unit_failed(
    make_health_config: Callable[..., Config], fake_prometheus: FakePrometheus
) -> None:
    config = make_health_config(prometheus_url=fake_prometheus.url)
    state_of(config).write_current("server1")
    result = subprocess.run(
        [*command_argv("wg-failover"), "--config", str(config.path), "--reason", "unit-failed"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = StateDir(config.state_dir).last_switch()
    assert last is not None and last.reason == "unit-failed"


def test_a_failing_failover_command_leaves_no_reason_behind(
    make_health_config: Callable[..., Config], fake_prometheus: FakePrometheus
) -> None:
    config = make_health_config('max_failures = 1\nfailover_command = ["false"]\n', prometheus_url=fake_prometheus.url)
    state_of(config).write_current("server1")
    fake_prometheus.loss = "0.9"
    with pytest.raises(ActionError):
        check_health(config)
    # A later OnFailure= run must not take this check's reason.
    assert not (config.state_dir / PENDING_REASON_FILE).exists()


def install_fake_wg(bin_dir: Path, handshake_age: float) -> None:
    """Put a fake `wg` printing one peer whose handshake was handshake_age seconds ago."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "wg"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > "{bin_dir}/wg.args"\n'
        f'printf "%s\\t%s\\n" "{"A" * 43}=" "$(( $(date +%s) - {int(handshake_age)} ))"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(
    ("age", "counter", "verdict", "outcome"),
    [
        (400, "2\n", "unhealthy: Prometheus unusable, newest handshake on wg0 ", "; count failure 2 of 3"),
        (5, "0\n", "healthy: Prometheus unusable, newest handshake on wg0 ", "; reset failures 1 of 3 to 0"),
    ],
)
def test_without_prometheus_the_handshake_decides_when_an_interface_is_set(
    make_health_config: Callable[..., Config],
    tmp_path: Path,
    age: float,
    counter: str,
    verdict: str,
    outcome: str,
) -> None:
    # Nothing listens on port 9 of 127.0.0.1 (discard): connection refused at once.
    config = make_health_config('interface = "wg0"\n', prometheus_url="http://127.0.0.1:9")
    state_of(config).write_failures(1)
    install_fake_wg(tmp_path / "bin", age)
    result = run_command(config, path_prefix=tmp_path / "bin")
    assert result.returncode == 0, result.stderr
    # The age may read a second more than the fake's: the clock moves on.
    assert result.stdout.startswith(verdict)
    assert result.stdout.endswith(f"s ago (limit 180s){outcome}\n")
    assert (config.state_dir / "health-failures").read_text() == counter
    assert "cannot reach Prometheus at http://127.0.0.1:9: connection refused; judging by the handshakes of wg0" in (
        result.stderr
    )
    assert (tmp_path / "bin" / "wg.args").read_text() == "show wg0 latest-handshakes\n"


def test_without_prometheus_url_or_interface_the_check_is_a_config_error(
    make_config_file: Callable[..., Path],
) -> None:
    path = make_config_file()
    result = CliRunner().invoke(main, ["--config", str(path)], env={"JOURNAL_STREAM": None})
    assert result.exit_code == ExitCode.CONFIG == 78
    assert result.stderr == (
        f"wg-health-check: error: {path}: prometheus.url is not set; wg-health-check needs it (or health.interface)\n"
    )
