"""Where the fault is, as the commands act on it: local faults declined, probation episodes.

Prometheus is requests-mock; the handshakes come from a stand-in `wg` on
PATH that reports a fresh handshake unless the active link points at a
server listed as dead. The clock is a fake that sleeping advances, so a
20 s probation costs no real time.
"""

from __future__ import annotations

import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from wgfailover.actions.failover import fail_over
from wgfailover.actions.health_check import check_health
from wgfailover.config import Config, parse_config
from wgfailover.errors import ExitCode, LocalFaultError, ProbationFailedError
from wgfailover.metrics import TEXTFILE_NAME
from wgfailover.output.failover import format_failover
from wgfailover.policy.health import HealthOutcome
from wgfailover.state import StateDir

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
NOW = 1_700_000_000.0
ENDPOINTS = {"server1": "192.0.2.1", "server2": "192.0.2.2", "server3": "192.0.2.3"}


class Clock:
    """A wall clock that sleep() moves forward; the stand-in `wg` reads it from a file."""

    def __init__(self, path: Path | None = None, now: float = NOW) -> None:
        self.path = path
        self.now = now
        self.sleep(0)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.01)
        if self.path is not None:
            self.path.write_text(f"{int(self.now) + 1}\n")


@pytest.fixture
def fake_wg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `wg` on PATH: a handshake a second from the fake clock's now, unless the link points at a server in dead.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "wg"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            server=$(basename "$(readlink {tmp_path}/wg-active.conf)")
            if grep -qx "$server" {tmp_path}/dead.txt 2>/dev/null; then echo "KEY= 0"; else echo "KEY= $(cat {tmp_path}/now.txt)"; fi
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return tmp_path / "dead.txt"


def make_config(tmp_path: Path, *, probation: str = "20s", interface: str | None = "wg0") -> Config:
    config_dir = tmp_path / "wireguard"
    config_dir.mkdir(exist_ok=True)
    for name, endpoint in ENDPOINTS.items():
        (config_dir / name).write_text(f"[Peer]\nEndpoint = {endpoint}:51820\n")
    health: dict[str, Any] = {"interface": interface} if interface else {}
    document: dict[str, Any] = {
        "config_dir": str(config_dir),
        "active_link": str(tmp_path / "wg-active.conf"),
        "state_dir": str(tmp_path / "state"),
        "textfile_dir": str(tmp_path),
        "restart_command": ["true"],
        "servers": {name: {} for name in ENDPOINTS},
        "prometheus": {"url": URL, "timeout": 2},
        "failover": {"probation": probation},
        "health": health,
    }
    config = parse_config(document, tmp_path / "config.toml")
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("server1")
    return config


def servers_answer(losses: dict[str, float]) -> dict[str, Any]:
    """Prometheus's answer to the ranking query: each server's loss, no latency."""
    result = [
        {"metric": {"host": ENDPOINTS[name], "wgf_metric": "loss"}, "value": [NOW, str(loss)]}
        for name, loss in losses.items()
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def history(config: Config) -> list[tuple[str | None, str, str]]:
    return [(r.from_server, r.to_server, r.reason) for r in StateDir(config.state_dir).read_history()]


def metric(config: Config, name: str) -> str:
    lines = (config.textfile_dir / TEXTFILE_NAME).read_text().splitlines()  # type: ignore[operator]
    return next(line.split()[1] for line in lines if line.startswith(f"{name} "))


# --- local faults --------------------------------------------------------------


def test_wg_failover_declines_when_every_server_is_losing_packets(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 1.0, "server3": 0.98}))
    with pytest.raises(LocalFaultError) as raised:
        fail_over(config, reason="unit-failed", rng=random.Random(1), wall_clock=Clock())
    assert raised.value.exit_code == ExitCode.LOCAL_FAULT
    assert int(raised.value.exit_code) == 3
    assert str(raised.value) == (
        "local fault: every server is losing packets (server1 100%, server2 100%, server3 98%); not switching: "
        "the fault is on this side and no server would do better (--force or --to NAME to switch anyway)"
    )
    assert history(config) == []


def test_a_dry_run_says_it_would_decline(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path)
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 1.0, "server3": 1.0}))
    result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(1), wall_clock=Clock())
    assert result.local_fault is not None and result.local_fault.startswith("local fault: every server")
    assert format_failover(result).splitlines()[-1] == (
        "would not switch: local fault: every server is losing packets (server1 100%, server2 100%, server3 100%) "
        "(dry run: nothing changed; --force to switch anyway)"
    )


def test_force_switches_in_a_local_fault_and_a_healthy_current_is_no_local_fault(
    tmp_path: Path, requests_mock: Any, fake_wg: Path
) -> None:
    config = make_config(tmp_path)
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 1.0, "server3": 1.0}))
    clock = Clock(tmp_path / "now.txt")
    result = fail_over(config, reason="manual", force=True, rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert result.choice in ("server2", "server3") and result.local_fault is None
    # Only the current server lossy: a server fault, switched without --force.
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 0.0, "server2": 1.0, "server3": 0.0}))
    result = fail_over(config, reason="failover", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert result.choice is not None and result.local_fault is None


def test_a_failed_check_during_a_local_fault_is_not_counted(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, interface=None)
    state = StateDir(config.state_dir)
    state.write_failures(1)

    def answer(request: Any, context: Any) -> dict[str, Any]:
        if "wgf_metric" in request.text:  # every server over the check's span
            return servers_answer({"server1": 1.0, "server2": 1.0, "server3": 1.0})
        return {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [NOW, "1"]}]}}

    requests_mock.post(QUERY_URL, json=answer)
    result = check_health(config, wall_clock=Clock())
    assert result.outcome == HealthOutcome.LOCAL_FAULT
    assert (result.failures_before, result.failures) == (1, 1)
    assert state.read_failures() == 1
    assert history(config) == []
    assert metric(config, "wg_failover_local_fault") == "1"
    # The span of the every-server query is the check's own (first check: health.window).
    assert any("[300s]" in request.text or "%5B300s%5D" in request.text for request in requests_mock.request_history)


# --- probation -------------------------------------------------------------------


def test_a_dead_replacement_is_left_at_once_for_the_next_candidate(
    tmp_path: Path, requests_mock: Any, fake_wg: Path
) -> None:
    config = make_config(tmp_path)
    fake_wg.write_text("server2\n")
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 0.0, "server3": 0.05}))
    clock = Clock(tmp_path / "now.txt")
    result = fail_over(config, reason="failover", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert history(config) == [
        ("server1", "server2", "failover"),
        ("server2", "server3", "probation failed: no handshake with server2 within 20s"),
    ]
    assert result.choice == "server3"
    assert result.tried == (("server2", "no handshake with server2 within 20s"),)
    assert result.probation == "handshake with server3 1s after the restart"
    assert clock.now - NOW < 25  # one probation waited out, the second passed at once


def test_when_every_server_fails_it_goes_back_to_the_best_ranked_and_says_so(
    tmp_path: Path, requests_mock: Any, fake_wg: Path
) -> None:
    config = make_config(tmp_path)
    fake_wg.write_text("server1\nserver2\nserver3\n")
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 0.0, "server3": 0.05}))
    clock = Clock(tmp_path / "now.txt")
    with pytest.raises(ProbationFailedError) as raised:
        fail_over(config, reason="failover", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert raised.value.exit_code == ExitCode.PROBATION_FAILED
    assert int(raised.value.exit_code) == 4
    assert str(raised.value) == (
        "all servers failed (server2: no handshake with server2 within 20s; "
        "server3: no handshake with server3 within 20s); staying on server2"
    )
    assert history(config) == [
        ("server1", "server2", "failover"),
        ("server2", "server3", "probation failed: no handshake with server2 within 20s"),
        ("server3", "server2", "all servers failed: back to the best-ranked server2"),
    ]
    state = StateDir(config.state_dir)
    record = state.read_all_failed()
    assert record is not None and record.stayed_on == "server2" and list(record.failed) == ["server2", "server3"]
    assert metric(config, "wg_failover_all_servers_failed") == "1"


def test_a_server_asked_for_by_hand_that_fails_is_kept_with_exit_4(
    tmp_path: Path, requests_mock: Any, fake_wg: Path
) -> None:
    config = make_config(tmp_path)
    fake_wg.write_text("server3\n")
    clock = Clock(tmp_path / "now.txt")
    with pytest.raises(ProbationFailedError, match="server3 failed its probation .*; staying on it as asked"):
        fail_over(config, reason="manual", to="server3", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert history(config) == [("server1", "server3", "manual")]


def test_a_passing_switch_ends_all_servers_failed(tmp_path: Path, requests_mock: Any, fake_wg: Path) -> None:
    config = make_config(tmp_path)
    fake_wg.write_text("server1\nserver2\nserver3\n")
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 0.0, "server3": 0.05}))
    clock = Clock(tmp_path / "now.txt")
    with pytest.raises(ProbationFailedError):
        fail_over(config, reason="failover", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    fake_wg.write_text("")
    fail_over(config, reason="manual", to="server3", rng=random.Random(1), wall_clock=clock, sleep=clock.sleep)
    assert StateDir(config.state_dir).read_all_failed() is None
    assert metric(config, "wg_failover_all_servers_failed") == "0"


def test_probation_0_switches_once_without_reading_the_tunnel(tmp_path: Path, requests_mock: Any) -> None:
    config = make_config(tmp_path, probation="0")
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 1.0, "server2": 0.0, "server3": 0.05}))
    result = fail_over(config, reason="failover", rng=random.Random(1), wall_clock=Clock())
    assert (result.choice, result.probation, result.tried) == ("server2", None, ())
    assert requests_mock.call_count == 1


def test_a_failback_whose_server_fails_its_probation_returns_to_the_server_it_left(
    tmp_path: Path, requests_mock: Any, fake_wg: Path
) -> None:
    config = make_config(tmp_path)
    fake_wg.write_text("server3\n")
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": 0.0, "server2": 0.0, "server3": 0.0}))
    clock = Clock(tmp_path / "now.txt")
    result = fail_over(
        config,
        reason="failback: server3 healthy for 15m",
        to="server3",
        back_if_unconfirmed=True,
        rng=random.Random(1),
        wall_clock=clock,
        sleep=clock.sleep,
    )
    assert history(config) == [
        ("server1", "server3", "failback: server3 healthy for 15m"),
        ("server3", "server1", "probation failed: no handshake with server3 within 20s; back to server1"),
    ]
    assert (result.choice, result.tried) == ("server1", (("server3", "no handshake with server3 within 20s"),))
    assert StateDir(config.state_dir).read_all_failed() is None


def test_endpoints_the_prober_could_not_send_to_are_unreachable_and_count_towards_a_local_fault(
    tmp_path: Path, requests_mock: Any
) -> None:
    # 0/0: the series are there, but with the host's interface down the
    # prober counted no request at all. NaN is never a loss, but it is
    # "unreachable", and every server so (or lossy) is a local fault.
    config = make_config(tmp_path)
    requests_mock.post(
        QUERY_URL, json=servers_answer({"server1": float("nan"), "server2": float("nan"), "server3": 1.0})
    )
    with pytest.raises(LocalFaultError, match=r"\(server1 unreachable, server2 unreachable, server3 100%\)"):
        fail_over(config, reason="unit-failed", rng=random.Random(1), wall_clock=Clock())
    # No series at all for one server is no evidence: not a local fault.
    requests_mock.post(QUERY_URL, json=servers_answer({"server1": float("nan"), "server2": float("nan")}))
    result = fail_over(config, reason="failover", dry_run=True, rng=random.Random(1), wall_clock=Clock())
    assert result.local_fault is None
