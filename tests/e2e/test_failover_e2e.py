"""wg-failover end to end: the real commands fail over real WireGuard tunnels.

Each test runs one scenario of wglab.scenarios (the same ones `make demo` and
`python -m wglab.scenarios` run) in a three-server lab shared by the module,
with its own config and state directory: wg-select boots it, the scenario
first removes every loss and waits until Prometheus shows a clean lab. A
"check" is one wg-health-check run, started once Prometheus holds
health.min_window of new tunnel samples since the previous check (polling
Prometheus, never sleeping). Nothing asserts on wall-clock time; the frozen
Prometheus test prints how long wg-failover took.

The lab runs at twice the demo's cadence (probers ping every 100 ms,
Prometheus scrapes every 500 ms): its windows are counted in pings
(wglab.lab.MIN_WINDOW_PINGS), so every check judges as many samples as the
demo's, in half the time, and the tests count checks, not seconds.

The lab needs root and the Debian binaries; those tests are skipped with the
reason otherwise. The tests of how a user's config is mapped onto the lab
run everywhere.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wgfailover.config import format_duration, load_config
from wgfailover.state import CheckRecord, StateDir, SwitchRecord
from wglab.lab import Lab
from wglab.processes import wait_until
from wglab.scenarios import (
    LAB_FAILBACK_SLICES,
    REQUIRED_BINARIES,
    Runner,
    all_down,
    blip,
    dead_replacement,
    failback,
    flapping_preferred,
    frozen_prometheus,
    lab_server_names,
    no_cascade,
    outage,
    partial_loss,
    restart_fails,
    tiers,
    unit_failed,
    uplink,
    write_lab_config,
)

pytestmark = pytest.mark.e2e

MISSING = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A three-server lab shared by the module's tests, with data in Prometheus."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, nftables, TUN)")
    if MISSING:
        pytest.skip(f"missing binaries: {', '.join(MISSING)} (run .ci/run or apt install)")
    with Lab(servers=3, ping_interval="100ms", scrape_interval="500ms") as built:
        built.wait_for_metrics(timeout=60)
        yield built


@pytest.fixture
def runner(lab: Lab, tmp_path: Path) -> Iterator[Runner]:
    """The shared lab driven by a fresh config and state directory, booted
    by wg-select (first boot: a random server) with traffic through it."""
    config = write_lab_config(lab, tmp_path / "config.toml", state_dir=str(tmp_path / "state"))
    booted = Runner(lab, config)
    booted.start()
    yield booted
    # A failed test may leave losses or a stopped Prometheus behind; the
    # next test's scenario waits for Prometheus to show a clean lab.
    assert lab.prometheus is not None and lab.prometheus.process is not None
    os.kill(lab.prometheus.process.pid, signal.SIGCONT)
    lab.clear_loss()


def test_hard_outage_switches_to_a_healthy_server_within_max_failures_plus_one_checks(runner: Runner) -> None:
    outcome = outage(runner)
    assert outcome.switch is not None, outcome.describe()
    assert len(outcome.checks) <= runner.max_failures + 1
    assert outcome.switch.to_server != outcome.from_server
    assert outcome.switch.reason.startswith("health-check: loss 1 > 0.15 for 3 checks")
    # The new server was healthy when chosen: the ranking saw no loss there.
    assert (outcome.switch.losses[outcome.switch.to_server] or 0) < 0.05
    assert runner.lab.active_server() == outcome.switch.to_server
    assert runner.lab.ping_through_tunnel()
    assert outcome.ok, outcome.describe()


def test_30_percent_loss_switches(runner: Runner) -> None:
    outcome = partial_loss(runner, 30)
    assert outcome.switch is not None, outcome.describe()
    assert outcome.switch.to_server != outcome.from_server
    assert runner.lab.active_server() == outcome.switch.to_server
    assert outcome.ok, outcome.describe()


def test_a_one_check_blip_does_not_switch(runner: Runner) -> None:
    outcome = blip(runner)
    first, *after = outcome.checks
    assert first.bad and first.failures == 1, outcome.describe()
    assert len(after) == runner.max_failures
    assert outcome.switch is None, outcome.describe()
    assert after[-1].failures == 0
    assert runner.current() == outcome.from_server == runner.lab.active_server()
    assert outcome.ok, outcome.describe()


def test_ten_checks_after_a_switch_cause_no_further_switch(runner: Runner) -> None:
    # The original judged a fixed 5-minute window at every check, so the old
    # server's losses failed the next checks and switched again: a cascade.
    outcome = no_cascade(runner, checks=10)
    assert outcome.switch is not None, outcome.describe()
    switched_at = outcome.checks.index(next(c for c in outcome.checks if c.switch is not None))
    after = outcome.checks[switched_at + 1 :]
    assert len(after) == 10
    assert [c for c in after if c.switch is not None] == []
    # Every one of them judged data (none was still waiting after the switch).
    assert all(c.judged and not c.bad for c in after), outcome.describe()
    assert runner.current() == outcome.switch.to_server == runner.lab.active_server()
    assert outcome.ok, outcome.describe()


def test_a_frozen_prometheus_still_switches_at_random(runner: Runner) -> None:
    outcome = frozen_prometheus(runner)
    assert outcome.command is not None
    print(
        f"wg-failover took {outcome.command.seconds:.1f}s with Prometheus frozen "
        f"(prometheus.timeout {runner.config.prometheus.timeout:g}s)"
    )
    assert outcome.command.exit_code == 0, outcome.command.stderr
    assert "Prometheus not used" in outcome.command.stdout
    assert outcome.switch is not None and outcome.switch.to_server != outcome.from_server
    assert outcome.switch.reason == "failover"
    assert outcome.switch.losses == {}
    assert runner.lab.active_server() == outcome.switch.to_server
    assert outcome.ok, outcome.describe()


def test_a_failing_restart_command_exits_1_and_leaves_the_state_consistent(runner: Runner) -> None:
    outcome = restart_fails(runner)
    assert outcome.command is not None
    assert outcome.command.exit_code == 1
    assert "restarting the tunnel failed" in outcome.command.stderr.strip().splitlines()[-1]
    current = runner.current()
    assert current in runner.config.server_names and current != outcome.from_server
    target = runner.link_target()
    assert target == runner.config.config_dir / current and target.is_file()
    history = runner.state.read_history()
    assert history[-1].to_server == current
    assert history[-1].from_server == outcome.from_server
    assert outcome.ok, outcome.describe()


def test_the_onfailure_path_switches_and_records_unit_failed(runner: Runner) -> None:
    outcome = unit_failed(runner)
    assert outcome.command is not None and outcome.command.exit_code == 0, outcome.describe()
    assert outcome.switch is not None
    assert outcome.switch.reason == "unit-failed"
    assert outcome.switch.to_server != outcome.from_server
    assert runner.current() == outcome.switch.to_server == runner.lab.active_server()
    assert outcome.ok, outcome.describe()


# --- where the fault is (issue 15) -------------------------------------------


def test_with_the_uplink_down_it_stays_put_reports_a_local_fault_and_restarts_nothing(runner: Runner) -> None:
    outcome = uplink(runner, checks=10)
    down = outcome.checks[:10]
    assert (outcome.switches, outcome.restarts) == (0, 0), outcome.describe()
    local = [c for c in down if "local fault: every server is losing packets (server1 100%" in c.run.stdout]
    assert len(local) >= 9, outcome.describe()
    assert all(c.failures == 0 for c in down)  # the counter never ran towards a failover
    after = outcome.checks[10:]
    assert after[-1].judged and not after[-1].bad and after[-1].failures == 0
    assert runner.current() == outcome.from_server == runner.lab.active_server()
    assert runner.lab.ping_through_tunnel()
    assert outcome.ok, outcome.describe()


@pytest.mark.parametrize("probation_by", ["tunnel data", "handshake"])
def test_a_dead_replacement_is_left_at_once_for_the_working_server(lab: Lab, runner: Runner, probation_by: str) -> None:
    if probation_by == "handshake":
        path = runner.variant_config("handshake", **{"health.interface": lab.client_iface, "health.netns": lab.vpn_ns})
        runner = Runner(lab, path)
    picks = []
    # By handshake twice, so the random tie-break between the dead and the
    # working server has more chances to pick each (benchmarks/faults.py
    # runs both picks on purpose); either way the same must hold.
    for _ in range(2 if probation_by == "handshake" else 1):
        outcome = dead_replacement(runner)
        switches = outcome.switches
        assert outcome.switch is not None, outcome.describe()
        assert switches <= 2, outcome.describe()
        assert len(outcome.checks) <= runner.max_failures, outcome.describe()
        assert runner.lab.active_server() == runner.current() == outcome.switch.to_server
        assert runner.lab.ping_through_tunnel()
        assert outcome.ok, outcome.describe()
        picks.append(outcome.observed.split(";")[0])
    print(f"first picks ({probation_by}): {picks}")


def test_when_every_server_is_down_it_makes_one_pass_then_stays_until_one_recovers(runner: Runner) -> None:
    outcome = all_down(runner, checks_after=3)
    assert outcome.ok, outcome.describe()
    episode = runner.state.read_history()
    reasons = [r.reason for r in episode[-3:]]
    assert reasons[0].startswith("health-check: loss 1 > 0.15 for 3 checks"), reasons
    assert reasons[1].startswith("probation failed: tunnel loss"), reasons
    assert reasons[2].startswith("all servers failed: back to the best-ranked"), reasons
    failed = next(c for c in outcome.checks if c.run.exit_code == 4)
    assert "all servers failed (" in failed.run.stderr
    assert runner.state.read_all_failed() is None  # a healthy check ended it
    assert runner.lab.ping_through_tunnel()


def test_failback_returns_to_the_preferred_server_exactly_once_within_failback_after_plus_two_checks(
    runner: Runner,
) -> None:
    outcome = failback(runner)
    print(outcome.observed)
    assert outcome.ok, outcome.describe()
    history = runner.state.read_history()
    failbacks = [record for record in history if record.reason.startswith("failback")]
    after = format_duration(LAB_FAILBACK_SLICES * runner.config.health.min_window)
    assert [(r.from_server, r.to_server, r.reason) for r in failbacks] == [
        (failbacks[0].from_server, "server1", f"failback: server1 healthy for {after}")
    ]
    assert failbacks[0].from_server in ("server2", "server3")
    assert history[-1] == failbacks[0]  # nothing switched after it
    assert runner.current() == "server1" == runner.lab.active_server()
    assert runner.lab.ping_through_tunnel()


def test_a_flapping_preferred_server_is_never_failed_back_to(runner: Runner) -> None:
    outcome = flapping_preferred(runner)
    print(outcome.observed)
    assert outcome.ok, outcome.describe()
    history = runner.state.read_history()
    first_failover = next(r for r in history if r.from_server == "server1" and r.reason.startswith("health-check"))
    assert history[-1] == first_failover  # 0 switches after the first failover
    assert not [r for r in history if r.reason.startswith("failback")]
    assert runner.current() == first_failover.to_server == runner.lab.active_server()


def test_tiers_pick_a_healthy_less_preferred_server_over_a_lossy_preferred_one_and_vice_versa(runner: Runner) -> None:
    outcome = tiers(runner)
    print(outcome.observed)
    assert outcome.ok, outcome.describe()
    failovers = [r for r in runner.state.read_history() if r.reason.startswith("health-check")]
    lossy, healthy = failovers[-2:]
    assert (lossy.from_server, lossy.to_server) == ("server2", "server3")
    assert (lossy.losses["server1"] or 0) > 0.15  # the ranking saw server1 lossy, and passed it over
    assert (healthy.from_server, healthy.to_server) == ("server3", "server1")
    assert (healthy.losses["server1"] or 0) <= 0.15  # healthy, so its tier beats server2's lower loss


# --- a user's config in the lab (no root needed) ---------------------------


def test_a_user_config_brings_its_thresholds_and_windows_and_the_lab_its_paths(
    make_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    user = load_config(
        make_config_file(
            extra="""
            [prometheus]
            url = "https://prometheus.example.com"
            timeout = 3

            [failover]
            window = "2m"
            hold_down = "10m"

            [health]
            threshold = 0.3
            max_failures = 2
            window = "90s"
            min_window = "20s"
            selector = 'job="my-prober"'
            failover_command = ["systemctl", "start", "wg-failover.service"]
            """
        )
    )
    lab = Lab(servers=lab_server_names(user), workdir=tmp_path / "lab")
    config = load_config(write_lab_config(lab, tmp_path / "lab.toml", user))
    assert config.server_names == ["server1", "server2", "server3"]
    assert (config.health.threshold, config.health.max_failures) == (0.3, 2)
    assert (config.health.window, config.health.min_window) == (90, 20)
    assert (config.failover.window, config.failover.hold_down) == (120, 600)
    assert config.prometheus.timeout == 3
    assert config.prometheus.url == "http://127.0.0.1:9"  # the lab's (its Prometheus is not running here)
    assert config.health.selector == 'job="vpn-prober"'
    assert config.health.failover_command is None
    assert config.config_dir == lab.config_dir and config.state_dir == lab.state_dir
    assert list(config.restart_command) == lab.restart_command


def test_a_user_config_without_health_settings_gets_the_production_defaults_not_the_labs(
    make_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    user = load_config(make_config_file())
    lab = Lab(servers=3, workdir=tmp_path / "lab")
    config = load_config(write_lab_config(lab, tmp_path / "lab.toml", user))
    assert (config.health.window, config.health.min_window) == (300, 30)
    assert config.failover.window == 300


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["ams1", "fra1"], ["ams1", "fra1"]),
        (["vpn-ams", "vpn-fra", "vpn-lon"], ["server1", "server2", "server3"]),  # '-' is not a lab name
        (["only"], ["server1", "server2"]),  # a failover needs a second server
        ([f"s{i}" for i in range(12)], [f"server{i}" for i in range(1, 9)]),  # at most 8 on a small machine
    ],
)
def test_lab_servers_are_named_like_the_users_when_possible(
    make_config_file: Callable[..., Path], names: list[str], expected: list[str]
) -> None:
    user = load_config(make_config_file(servers={name: f"192.0.2.{i + 1}" for i, name in enumerate(names)}))
    assert lab_server_names(user) == expected


def test_with_prometheus_unreachable_the_real_wireguard_handshake_decides(
    lab: Lab, runner: Runner, tmp_path: Path
) -> None:
    # health.interface: while Prometheus cannot be asked, `wg show` in the
    # VPN namespace decides. A tunnel carrying the prober's pings has a
    # fresh handshake; a tunnel restarted towards a dead server has none.
    from wglab.processes import free_port

    closed = free_port()  # nothing listens there: connection refused
    path = runner.variant_config(
        "handshake",
        **{
            "prometheus.url": f"http://127.0.0.1:{closed}",
            "health.interface": lab.client_iface,
            "health.netns": lab.vpn_ns,
        },
    )
    state = StateDir(load_config(path).state_dir)
    server = runner.current()
    assert server is not None

    runner.wait_for_traffic(server)
    healthy = runner.command("wg-health-check", config_path=path)
    assert healthy.exit_code == 0, healthy.stderr
    assert "connection refused" in healthy.stderr
    assert f"judging by the handshakes of {lab.client_iface} instead" in healthy.stderr
    assert f"newest handshake on {lab.client_iface}" in healthy.stdout, healthy.stdout
    assert healthy.stdout.startswith("healthy"), healthy.stdout
    assert state.read_failures() == 0

    # The active server goes dark and the tunnel is rebuilt: no handshake can complete.
    lab.set_loss(server, 100)
    lab.restart()
    state.write_last_check(CheckRecord(time=0.0, loss=None))  # as if a timer period had passed
    broken = runner.command("wg-health-check", config_path=path)
    assert broken.exit_code == 0, broken.stderr
    assert f"no handshake on {lab.client_iface} yet" in broken.stdout, broken.stdout
    assert broken.stdout.startswith("unhealthy"), broken.stdout
    assert state.read_failures() == 1


# --- the replay of the live rule ----------------------------------------------------

# The timer's period for the live-versus-replay test (at least the lab's
# min_window), and how long after each tick the live check runs (Prometheus
# scrapes the lab's probers every 500 ms).
PERIOD = 5.0
TICK_OFFSET = 1.0


def timer_check(runner: Runner) -> tuple[float, SwitchRecord | None]:
    """Run wg-health-check at the next tick of a PERIOD timer, as systemd would;
    return the tick and the switch the check made, if any."""
    tick = math.floor(time.time() / PERIOD) * PERIOD + PERIOD
    wait_until(lambda: time.time() >= tick + TICK_OFFSET, PERIOD + 5, 0.05, what="the timer's next tick")
    before = runner.last_switch()
    run = runner.command("wg-health-check")
    assert run.exit_code == 0, run.stderr
    after = runner.last_switch()
    switched = after is not None and (before is None or after.seq != before.seq)
    runner.say(f"timer check at {tick:.0f}: {run.summary}")
    return tick, after if switched else None


def test_a_backtest_replays_the_live_outage_and_blip(runner: Runner) -> None:
    # Live: a hard outage and a one-period blip, with the health check on a
    # fixed timer. Then --backtest over the same span with the same config
    # and --every that period must find the same failovers, each within one
    # period of the live one, and none for the blip.
    runner.settle()
    first_tick, _ = timer_check(runner)
    timer_check(runner)  # the counter is at 0 before the outage, live and replayed

    server = runner.current()
    assert server is not None
    runner.lab.set_loss(server, 100)
    live_switches = []
    for _ in range(runner.max_failures + 1):
        tick, switch = timer_check(runner)
        if switch is not None:
            live_switches.append((tick, switch))
            break
    assert len(live_switches) == 1, "the live outage did not switch"
    runner.lab.clear_loss()
    timer_check(runner)
    timer_check(runner)

    blipped = runner.current()
    assert blipped is not None
    runner.lab.set_loss(blipped, 100)
    blip_tick, switch = timer_check(runner)
    runner.lab.set_loss(blipped, 0)
    assert switch is None
    for _ in range(runner.max_failures):
        _, switch = timer_check(runner)
        assert switch is None, "the live blip switched"

    duration = math.ceil((time.time() - first_tick) / PERIOD) * PERIOD
    replay = runner.command("wg-health-check", "--backtest", f"{duration:.0f}s", "--every", f"{PERIOD:.0f}s", "--json")
    assert replay.exit_code == 0, replay.stderr
    text = runner.command("wg-health-check", "--backtest", f"{duration:.0f}s", "--every", f"{PERIOD:.0f}s")
    runner.say(text.stdout)
    replayed = json.loads(replay.stdout)["failovers"]
    assert len(replayed) == len(live_switches), replay.stdout
    for (live_tick, live), again in zip(live_switches, replayed):
        assert abs(again["time"] - live_tick) <= PERIOD, (live_tick, again)
        assert again["from"] == live.from_server
    assert not [f for f in replayed if f["time"] >= blip_tick - PERIOD], replay.stdout
