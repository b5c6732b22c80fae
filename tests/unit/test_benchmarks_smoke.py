"""The benchmarks can be started and their data is what they claim; nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import fleet
from benchmarks.common import markdown_table
from benchmarks.promdata import make_endpoints, write_openmetrics
from wgfailover.config import parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_run_help_lists_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for option in ("--seed-dir", "--quick", "--only", "--full-fleet", "--restore"):
        assert option in result.stdout
    assert "fleet" in result.stdout.split("--only")[1]


def test_fleet_help_says_what_quick_does() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.fleet", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"{fleet.QUICK_CLIENTS} clients decide" in result.stdout


def test_the_recorded_query_settings_are_valid_and_read_only_recorded_series(tmp_path: Path) -> None:
    rules = (REPO_ROOT / "docs" / "recording-rules.yml").read_text()
    recorded = {line.split("record:")[1].strip() for line in rules.splitlines() if "record:" in line}
    for scope, failover in fleet.RECORDED_RANKING.items():
        config = fleet.recorded_config(tmp_path, "http://127.0.0.1:1", "client-0001", scope)
        assert config.failover.query == failover["query"]
        assert config.health.query == fleet.RECORDED_HEALTH_QUERY
    queries = [query for settings in fleet.RECORDED_RANKING.values() for query in settings.values()]
    for query in [*queries, fleet.RECORDED_HEALTH_QUERY]:
        assert [name for name in recorded if name + "{" in query], query
        assert "smokeping_" not in query.replace(":smokeping_", ":"), query


def test_docs_show_the_recorded_query_settings_the_benchmark_measures() -> None:
    fleets = (REPO_ROOT / "docs" / "fleets.md").read_text()
    for settings in fleet.RECORDED_RANKING.values():
        for key, query in settings.items():
            assert f"{key} = '{query}'" in fleets
    assert f"query = '{fleet.RECORDED_HEALTH_QUERY}'" in fleets


def test_every_tenth_client_of_the_fleet_has_a_failing_tunnel() -> None:
    failing = fleet.failing_tunnels()
    assert len(failing) == fleet.CLIENTS // 10
    assert fleet.TUNNEL_FAILING_LOSS > parse_config({"servers": {"a": {}}}, Path("c.toml")).health.threshold


def test_the_last_endpoint_is_the_clear_best() -> None:
    fleet = make_endpoints(300, subnet=7)
    best, *others = sorted(fleet, key=lambda endpoint: endpoint.loss)
    assert best is fleet[-1]
    # Farther than failover.tie_epsilon (0.02), so there is one right choice.
    assert all(other.loss - best.loss > 0.02 for other in others)
    assert len({endpoint.ip for endpoint in fleet}) == 300
    assert all(endpoint.ip.startswith("10.7.") for endpoint in fleet)


def test_openmetrics_counters_carry_the_endpoint_loss(tmp_path: Path) -> None:
    endpoint = make_endpoints(2)[0]
    path = tmp_path / "data.om"
    samples = write_openmetrics(path, [endpoint], start=1000, end=1060, step=15)
    lines = path.read_text().splitlines()
    assert lines[-1] == "# EOF"
    assert samples == len(lines) - 1 == 3 * 5 * 3  # 3 metrics, 5 timestamps, 1 endpoint + 2 vpn-prober targets
    first = [line for line in lines if line.startswith("smokeping_requests_total") and endpoint.ip in line]
    last = [
        line for line in lines if line.startswith("smokeping_response_duration_seconds_count") and endpoint.ip in line
    ]
    requests = float(first[-1].split()[1]) - float(first[0].split()[1])
    replies = float(last[-1].split()[1]) - float(last[0].split()[1])
    assert abs((1 - replies / requests) - endpoint.loss) < 1e-6


def test_markdown_table_has_a_separator_row() -> None:
    assert markdown_table(("a", "b"), [(1, 2)]) == "| a | b |\n| --- | --- |\n| 1 | 2 |"
