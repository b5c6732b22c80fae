"""wg-health-check --backtest from the command line, against a fake Prometheus (requests-mock).

The fake answers the health query with a 4-minute outage 20 minutes ago and
every server's loss; the real servers are in tests/integration.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module
from click.testing import CliRunner

from tests.conftest import DEFAULT_ENDPOINTS, write_wireguard_configs
from wgfailover.commands.wg_health_check import main
from wgfailover.evidence.history import MAX_POINTS

URL = "http://prometheus.test:9090"
MINUTE = 60.0
# server -> (endpoint in its WireGuard config, loss the external prober saw)
SERVER_LOSS = {"192.0.2.10": 0.9, "192.0.2.20": 0.0, "192.0.2.30": 0.05}


class FakePrometheus:
    """Answers query_range and instant queries from one rule: loss 1 in (outage_start, outage_end]."""

    def __init__(self, requests_mock: requests_mock_module.Mocker, retention: str = "15d") -> None:
        minute = math.floor(time.time() / MINUTE) * MINUTE
        self.outage = (minute - 20 * MINUTE, minute - 16 * MINUTE)
        self.ranges: list[dict[str, str]] = []
        self.instants: list[dict[str, str]] = []
        requests_mock.post(f"{URL}/api/v1/query_range", json=self.range_answer)
        requests_mock.post(f"{URL}/api/v1/query", json=self.instant_answer)
        requests_mock.get(
            f"{URL}/api/v1/status/runtimeinfo",
            json={"status": "success", "data": {"storageRetention": retention}},
        )

    def loss(self, at: float) -> float:
        return 1.0 if self.outage[0] < at <= self.outage[1] else 0.0

    def range_answer(self, request: Any, context: Any) -> dict[str, Any]:
        form = {key: values[0] for key, values in urllib.parse.parse_qs(request.body).items()}
        self.ranges.append(form)
        start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
        count = int(round((end - start) / step)) + 1
        times = [start + n * step for n in range(count)]
        if "host=~" in form["query"]:
            # The failback's slices: server1's endpoint had the outage too, the others none.
            result = [
                {
                    "metric": {"host": host},
                    "values": [[at, str(self.loss(at) if host == "192.0.2.10" else 0)] for at in times],
                }
                for host in SERVER_LOSS
            ]
        else:
            result = [{"metric": {}, "values": [[at, str(self.loss(at))] for at in times]}]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def instant_answer(self, request: Any, context: Any) -> dict[str, Any]:
        form = {key: values[0] for key, values in urllib.parse.parse_qs(request.body).items()}
        self.instants.append(form)
        at = float(form["time"])
        if "wgf_metric" in form["query"]:
            result = [
                {"metric": {"host": host, "wgf_metric": "loss"}, "value": [at, str(loss)]}
                for host, loss in SERVER_LOSS.items()
            ]
        else:
            result = [{"metric": {}, "value": [at, str(self.loss(at))]}]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def config_path(make_config_file: Callable[..., Path]) -> Path:
    path = make_config_file(f'[prometheus]\nurl = "{URL}"\n\n[failover]\nlabel = "host"\n')
    state = path.parent / "state"
    state.mkdir()
    (state / "current").write_text("server1\n")
    return path


def backtest(config_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(config_path), "--backtest", *args])


def test_the_outage_is_one_failover_listed_with_a_summary(
    config_path: Path, requests_mock: requests_mock_module.Mocker
) -> None:
    fake = FakePrometheus(requests_mock)
    result = backtest(config_path, "1h")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("replayed wg-health-check every 60s from ")
    assert lines[0].endswith(", starting on server1; nothing was changed")
    assert lines[1] == "settings: threshold 0.15, max_failures 3, window 300s, min_window 30s"
    header, row = lines[3], lines[4]
    assert header.split() == ["time", "(UTC)", "loss", "checks", "from", "to", "why"]
    failed_over = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(fake.outage[0] + 3 * MINUTE))
    assert row.startswith(failed_over)
    assert row.split()[2:7] == [
        "1",
        "3",
        "from",
        time.strftime("%H:%M:%S", time.gmtime(fake.outage[0] + MINUTE)),
        "server1",
    ]
    assert row.endswith("server2  health-check: loss 1 > 0.15 for 3 checks; lowest loss")
    assert lines[6] == "60 checks (0 more waited after a switch), 4 counted as failures, 1 failover (24.00 per day)"
    assert lines[7].startswith("note: after a replayed failover the recorded tunnel data is what it was")


def write_failback_install(tmp_path: Path, extra: str = "") -> Path:
    """Write an install on server1 (priority 1, the others 2) with a 5m failback and hold-down; return its config."""
    write_wireguard_configs(tmp_path / "secrets", DEFAULT_ENDPOINTS)
    path = tmp_path / "config.toml"
    path.write_text(
        f'config_dir = "{tmp_path / "secrets"}"\nstate_dir = "{tmp_path / "state"}"\n'
        f"[servers.server1]\npriority = 1\n[servers.server2]\npriority = 2\n[servers.server3]\npriority = 2\n"
        f'[prometheus]\nurl = "{URL}"\n[failover]\nfailback_after = "5m"\nhold_down = "5m"\n{extra}'
    )
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "current").write_text("server1\n")
    return path


def test_failovers_and_failbacks_are_listed_apart(tmp_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    path = write_failback_install(tmp_path)
    fake = FakePrometheus(requests_mock)
    result = backtest(path, "1h")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "settings: threshold 0.15, max_failures 3, window 300s, min_window 30s, failback_after 300s"
    assert lines[3] == "failovers:"
    assert lines[5].endswith("server1  server2  health-check: loss 1 > 0.15 for 3 checks; lowest loss")
    # Back once server1's slices were clean for 5 minutes after the outage ended (and 5 after the failover).
    failed_back = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(fake.outage[1] + 5 * MINUTE))
    assert lines[7:10] == [
        "failbacks:",
        "time (UTC)           from     to       why",
        f"{failed_back}  server2  server1  failback: server1 healthy for 5m",
    ]
    assert lines[11].endswith("1 failover (24.00 per day), 1 failback (24.00 per day)")
    document = json.loads(backtest(path, "1h", "--json").stdout)
    assert document["failbacks"] == [
        {
            "time": fake.outage[1] + 5 * MINUTE,
            "from": "server2",
            "to": "server1",
            "reason": "failback: server1 healthy for 5m",
        }
    ]
    assert [failover["to"] for failover in document["failovers"]] == ["server2"]


def test_a_fleet_client_replays_its_own_probes_only(tmp_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    path = write_failback_install(tmp_path, '[fleet]\nclient = "laptop-17"\nclient_label = "wg_client"\n')
    fake = FakePrometheus(requests_mock)
    result = backtest(path, "1h")
    assert result.exit_code == 0, result.output
    queries = [form["query"] for form in fake.ranges + fake.instants]
    assert result.stdout.splitlines()[-2].endswith("1 failover (24.00 per day), 1 failback (24.00 per day)")
    # Tunnel history, the ranking at the failover and the failback's slices: each this client's, none a literal $scope.
    assert any("wgf_metric" in query for query in queries) and any("host=~" in form["query"] for form in fake.ranges)
    for query in queries:
        assert "$" not in query and 'wg_client="laptop-17"' in query, query


def test_json_is_one_object_with_every_failover(config_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    fake = FakePrometheus(requests_mock)
    result = backtest(config_path, "1h", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["checks"] == 60
    assert document["failures"] == 4
    assert document["failovers"] == [
        {
            "time": fake.outage[0] + 3 * MINUTE,
            "from": "server1",
            "to": "server2",
            "loss": 1.0,
            "reason": "health-check: loss 1 > 0.15 for 3 checks",
            "choice": "lowest loss",
            "checks": [fake.outage[0] + n * MINUTE for n in (1, 2, 3)],
        }
    ]
    assert document["per_day"] == 24.0
    assert document["initial_server"] == "server1"


def test_the_settings_given_override_the_config(config_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    FakePrometheus(requests_mock)
    result = backtest(config_path, "1h", "--json", "--max-failures", "5", "--threshold", "0.5", "--window", "2m")
    document = json.loads(result.stdout)
    assert (document["max_failures"], document["threshold"], document["window_seconds"]) == (5, 0.5, 120)
    assert document["failovers"] == []  # 4 bad checks in a row are not 5


def test_a_sweep_prints_a_table_of_failovers_per_combination(
    config_path: Path, requests_mock: requests_mock_module.Mocker
) -> None:
    FakePrometheus(requests_mock)
    result = backtest(config_path, "1h", "--sweep", "max_failures=2,4,5", "threshold=0.1,0.99")
    assert result.exit_code == 0, result.output
    table = [line.split() for line in result.stdout.splitlines()[2:9]]
    assert table == [
        ["threshold", "max_failures", "window", "min_window", "failures", "failovers", "per", "day"],
        ["0.1", "2", "300s", "30s", "4", "2", "48.00"],
        ["0.99", "2", "300s", "30s", "4", "2", "48.00"],
        ["0.1", "4", "300s", "30s", "4", "1", "24.00"],
        ["0.99", "4", "300s", "30s", "4", "1", "24.00"],
        ["0.1", "5", "300s", "30s", "4", "0", "0.00"],
        ["0.99", "5", "300s", "30s", "4", "0", "0.00"],
    ]


def test_30_days_at_one_minute_is_asked_in_chunks_under_the_points_limit(
    config_path: Path, requests_mock: requests_mock_module.Mocker
) -> None:
    fake = FakePrometheus(requests_mock, retention="31d")
    result = backtest(config_path, "30d", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["checks"] == 30 * 24 * 60
    spans = [(float(form["start"]), float(form["end"])) for form in fake.ranges]
    assert len(spans) == 5
    assert all((end - start) / MINUTE + 1 <= MAX_POINTS < 11000 for start, end in spans)
    # Contiguous: every check time asked exactly once.
    assert all(later[0] == earlier[1] + MINUTE for earlier, later in zip(spans, spans[1:]))
    assert (spans[-1][1] - spans[0][0]) / MINUTE + 1 == 30 * 24 * 60


@pytest.mark.parametrize(
    ("args", "retention", "code", "message"),
    [
        (
            ["30d"],
            "15d",
            2,
            "--backtest 30d reaches beyond Prometheus's retention (15d); ask for 15d or less",
        ),
        (["1h", "--every", "2h"], "15d", 2, "--backtest 1h must be at least one --every (2h)"),
        (
            ["1h", "--sweep", "bogus=1"],
            "15d",
            2,
            "--sweep 'bogus=1': expected KEY=V,V,... with KEY one of threshold, max_failures, window, min_window",
        ),
        (["1h", "--min-window", "10m"], "15d", 2, "min_window (10m) is longer than window (5m)"),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(
    config_path: Path,
    requests_mock: requests_mock_module.Mocker,
    args: list[str],
    retention: str,
    code: int,
    message: str,
) -> None:
    FakePrometheus(requests_mock, retention=retention)
    result = backtest(config_path, *args)
    assert (result.exit_code, result.stderr) == (code, f"wg-health-check: error: {message}\n")


def test_no_data_for_the_selector_is_exit_69(config_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    FakePrometheus(requests_mock)
    empty = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    requests_mock.post(f"{URL}/api/v1/query_range", json=empty)
    result = backtest(config_path, "1h")
    assert result.exit_code == 69
    assert result.stderr == (
        'wg-health-check: error: Prometheus has no tunnel loss for job="vpn-prober" in the last 1h '
        "(health.selector and health.query; is the VPN namespace's prober scraped?)\n"
    )


def test_an_unreachable_prometheus_is_exit_69(config_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.register_uri(
        requests_mock_module.ANY, requests_mock_module.ANY, exc=requests.ConnectionError("refused")
    )
    result = backtest(config_path, "1h")
    assert result.exit_code == 69
    assert result.stderr.startswith(f"wg-health-check: error: cannot reach Prometheus at {URL}")
    assert len(result.stderr.splitlines()) == 1


def test_a_prometheus_without_runtime_info_is_asked_anyway(
    config_path: Path, requests_mock: requests_mock_module.Mocker
) -> None:
    # VictoriaMetrics has no /api/v1/status/runtimeinfo: the retention is unknown, not an error.
    FakePrometheus(requests_mock)
    requests_mock.get(f"{URL}/api/v1/status/runtimeinfo", status_code=404, text="unsupported path")
    assert backtest(config_path, "1h").exit_code == 0


def test_the_backtest_changes_nothing(config_path: Path, requests_mock: requests_mock_module.Mocker) -> None:
    FakePrometheus(requests_mock)
    state = config_path.parent / "state"
    before = {path.name: path.read_bytes() for path in state.iterdir()}
    assert backtest(config_path, "1h").exit_code == 0
    assert {path.name: path.read_bytes() for path in state.iterdir()} == before
    assert not (config_path.parent / "wg-active.conf").exists()
    assert not (config_path.parent / "wg_failover.prom").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "5m"], "--every needs --backtest"),
        (["--sweep", "threshold=0.1"], "--sweep needs --backtest"),
        (["--backtest", "1h", "--dry-run"], "--backtest changes nothing already; it does not take --dry-run"),
        (["max_failures=2"], "unexpected argument 'max_failures=2'"),
        (["--backtest", "soon"], "Invalid value for '--backtest': 'soon' is not a duration"),
    ],
)
def test_backtest_flags_misused_are_usage_errors(config_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["--config", str(config_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr
