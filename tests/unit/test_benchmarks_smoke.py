"""The benchmarks can be started and their data is what they claim; nothing here is timed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.common import markdown_table
from benchmarks.promdata import make_endpoints, write_openmetrics

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_run_help_lists_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--help"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for option in ("--seed-dir", "--quick", "--only", "--restore"):
        assert option in result.stdout


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
