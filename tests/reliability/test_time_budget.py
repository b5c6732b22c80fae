"""One Prometheus time budget per command, even when wg-health-check fails over in-process.

A Prometheus that takes 2.5 s to answer, with prometheus.timeout = 3: the
health check's measurement spends 2.5 s of the budget, so the in-process
failover's ranking has 0.5 s left, cannot get its answer, and falls back to
a random pick. Before, each question got a fresh 3 s: 7.5 s in all for a
command documented to wait at most 3 s for Prometheus.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.reliability.helpers import SERVERS, FakePrometheus, run, serve, write_install

SLOW = 2.5  # seconds the fake Prometheus takes for every answer
BUDGET = 3  # prometheus.timeout


def slow_answer(query: str) -> tuple[int, dict[str, str], bytes]:
    # The server is slow; the test waits for nothing with this sleep.
    time.sleep(SLOW)
    if "wgf_metric" in query:  # the failover's ranking: every server's loss
        result = [{"metric": {"host": host, "wgf_metric": "loss"}, "value": [0, "0.1"]} for host in SERVERS.values()]
    else:  # the health check's tunnel loss
        result = [{"metric": {}, "value": [0, "0.9"]}]
    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def test_an_in_process_failover_spends_what_is_left_of_the_health_checks_budget(tmp_path: Path) -> None:
    for fake in serve(FakePrometheus(answer=slow_answer)):
        install = write_install(
            tmp_path, prometheus_url=fake.url, extra='[health]\nmax_failures = 1\nmin_window = "1s"\n'
        )
        text = install.config.read_text().replace("timeout = 10\n", f"timeout = {BUDGET}\n", 1)
        install.config.write_text(text)
        assert run("wg-select", install).returncode == 0
        result = run("wg-health-check", install)
        assert result.returncode == 0, result.stderr
        assert "failed over" in result.stdout, result.stdout
        # The ranking found the budget spent: random fallback, not the (slow) answer.
        assert "picking at random" in result.stderr, result.stderr
        assert f"{BUDGET}s budget (prometheus.timeout)" in result.stderr, result.stderr
        assert install.history()[-1].losses == {}
