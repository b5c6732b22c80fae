"""The health check against a real Prometheus scraping a real smokeping prober.

The prober runs in a network namespace made for the test and pings two
loopback addresses there; nftables in that namespace drops the pings to make
real packet loss. Prometheus (root namespace, loopback) scrapes it every
second through wglab's forwarder. Windows are seconds long (min_window 3s),
and every wait is a poll on what Prometheus has stored, never a sleep.

Two behaviours the original scripts get wrong are shown here, each beside the
original's own query giving the wrong answer at the same moment:

- a tunnel that was bad before a switch and is good after it triggers no
  further failover (the original's fixed window still holds the old loss:
  a cascade);
- a blip of total loss lasting one check is one failure, not three.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from wgfailover.actions.health_check import check_health
from wgfailover.config import DEFAULT_HEALTH_QUERY, Config, load_config
from wgfailover.evidence.tunnel import render_query
from wgfailover.output.health_check import describe_check
from wgfailover.policy.health import HealthOutcome
from wgfailover.state import StateDir
from wglab import netns as wglab_netns
from wglab import processes as wglab_processes
from wglab import prometheus as wglab_prometheus

_MISSING = [
    binary
    for binary in (wglab_prometheus.PROMETHEUS_BIN, wglab_prometheus.SMOKEPING_BIN, "nft", "ip")
    if shutil.which(binary) is None
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces, nftables and raw ICMP"),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing binaries: {', '.join(_MISSING)}"),
]

SELECTOR = 'job="vpn-prober"'
TARGETS = ("127.0.0.2", "127.0.0.3")
MIN_WINDOW = 3.0
THRESHOLD = 0.15
DEADLINE = 60.0
# Seconds of total loss before the switch in the cascade test: far more than
# the min_window plus a scrape or two of good data that follow it.
LOSSY_SECONDS = 12.0


@dataclass
class Lab:
    netns: str
    prometheus: wglab_prometheus.PrometheusServer

    def set_loss(self, percent: float, targets: tuple[str, ...] = TARGETS) -> None:
        """Drop percent of the pings to targets (0: none) inside the namespace.

        On input, where the echo request arrives back from loopback: a drop
        on output makes sendto() fail with EPERM, and smokeping_prober then
        does not count the request at all, so it reports no loss.
        """
        addresses = ", ".join(targets)
        match = f"ip daddr {{ {addresses} }} icmp type echo-request"
        wglab_netns.set_loss(self.netns, percent, match, key="tunnel", hooks=["input"])

    def loss(self, window: str) -> float | None:
        """The tunnel loss over window as the health check's default query sees it (None: no data)."""
        result = self.prometheus.query(render_query(DEFAULT_HEALTH_QUERY, SELECTOR, window))
        return float(result[0]["value"][1]) if result else None

    def original_loss(self, at: float | None = None) -> float:
        """The loss as the original script judged it at every check: a fixed window (scaled
        here from 5m to the 60s health.window), result[0], missing data read as 1.
        `at` evaluates it at the moment our check ran, so a loaded machine that is
        slow to reach the assertion does not let the loss slide out of the window."""
        query = (
            f"1 - (rate(smokeping_response_duration_seconds_count{{{SELECTOR}}}[60s])"
            f" / rate(smokeping_requests_total{{{SELECTOR}}}[60s]))"
        )
        result = self.prometheus.query(query, at=at)
        return float(result[0]["value"][1]) if result else 1.0

    def newest_sample_time(self) -> float:
        """The time of the oldest of the newest samples over every prober series."""
        result = self.prometheus.query(f"min(timestamp(smokeping_requests_total{{{SELECTOR}}}))")
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for_data_since(self, since: float, seconds: float) -> None:
        """Wait until Prometheus has stored `seconds` of samples after unix time `since`."""
        wglab_processes.wait_until(
            lambda: self.newest_sample_time() >= since + seconds,
            DEADLINE,
            0.2,
            what=f"{seconds:g}s of prober samples after {since:.1f}",
        )

    def wait_for_loss(self, predicate: Callable[[float], bool], what: str) -> None:
        """Wait until the loss over the last min_window satisfies predicate."""

        def seen() -> bool:
            loss = self.loss(f"{int(MIN_WINDOW)}s")
            return loss is not None and predicate(loss)

        wglab_processes.wait_until(seen, DEADLINE, 0.2, what=what)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A namespace with a smokeping prober pinging two loopback targets, scraped by Prometheus every second."""
    netns = f"wgfh-{uuid.uuid4().hex[:8]}"
    prober = wglab_prometheus.SmokepingProber(
        list(TARGETS), netns=netns, interval="100ms", workdir=tmp_path / "prober", name="vpn-prober"
    )
    prometheus = wglab_prometheus.PrometheusServer(
        [("vpn-prober", [])], scrape_interval="1s", workdir=tmp_path / "prometheus"
    )
    try:
        wglab_netns.add_netns(netns)
        prober.start()
        prometheus.scrape_jobs = [("vpn-prober", [prober.scrape_target])]
        prometheus.start()
        prometheus.wait_for_series(f"smokeping_requests_total{{{SELECTOR}}}", timeout=DEADLINE, min_series=2)
        yield Lab(netns=netns, prometheus=prometheus)
    finally:
        prometheus.stop()
        prober.stop()
        wglab_netns.delete_netns(netns)


@pytest.fixture
def make_lab_config(make_config_file: Callable[..., Path], lab: Lab, tmp_path: Path) -> Callable[[int], Config]:
    """Return a function making a config for the lab's Prometheus with the given max_failures.

    The failover command leaves a marker file, so every trigger is visible.
    """

    def make(max_failures: int) -> Config:
        command = [
            sys.executable,
            "-c",
            "import sys; open(sys.argv[1], 'a').write('failover\\n')",
            str(marker(tmp_path)),
        ]
        extra = f"""
            [prometheus]
            url = "{lab.prometheus.url}"

            [health]
            threshold = {THRESHOLD}
            max_failures = {max_failures}
            min_window = "{int(MIN_WINDOW)}s"
            window = "60s"
            failover_command = {json.dumps(command)}
        """
        return load_config(make_config_file(extra))

    return make


def marker(tmp_path: Path) -> Path:
    return tmp_path / "failovers"


def record_switch(config: Config) -> float:
    """Record a switch from server1 to server2 now, as wg-failover does; return its time."""
    state = StateDir(config.state_dir)
    state.ensure()
    now = time.time()
    state.write_current("server2")
    state.append_history(time=now, from_server="server1", to_server="server2", reason="health-check")
    state.write_failures(0)
    return now


def test_a_tunnel_bad_before_a_switch_and_good_after_it_causes_no_further_failover(
    lab: Lab, make_lab_config: Callable[[int], Config], tmp_path: Path
) -> None:
    config = make_lab_config(1)  # a single bad check would fail over
    lost_from = time.time()
    lab.set_loss(100)  # every target, so whichever series the original reads as result[0] is lossy
    lab.wait_for_loss(lambda loss: loss > 0.3, "the prober to see the old server's loss")
    # Long enough that the original's fixed window is well above the
    # threshold: the few seconds of good data before the next check cannot
    # bring it below. The series began with this test's Prometheus, so the
    # window holds only seconds of data, not 60: a loss above the threshold
    # after one or two lossy seconds falls below it once ~5s of good data
    # follow. LOSSY_SECONDS of loss outweigh those and the data before.
    lab.wait_for_data_since(lost_from, LOSSY_SECONDS)
    wglab_processes.wait_until(
        lambda: lab.original_loss() > 2 * THRESHOLD, DEADLINE, 0.2, what="the original's window to fill with loss"
    )

    # The failover to a good server: the loss stops, the switch is recorded.
    lab.set_loss(0)
    switched = record_switch(config)

    right_after = check_health(config, wall_clock=lambda: switched + 1)
    assert right_after.outcome == HealthOutcome.WAITING
    assert describe_check(right_after) == f"waiting for data since the switch: 1s of {int(MIN_WINDOW)}s"

    # Both judge one pinned moment, the first at which min_window of data
    # since the switch exists: on a loaded machine the wait may take long
    # enough that, judged later, the old loss would slide out of the
    # original's 60s window and the comparison would say nothing.
    lab.wait_for_data_since(switched, MIN_WINDOW + 1)
    checked_at = switched + MIN_WINDOW + 1
    result = check_health(config, wall_clock=lambda: checked_at)
    assert result.outcome == HealthOutcome.HEALTHY, describe_check(result)
    assert result.span.reason == "since the last switch"
    assert not marker(tmp_path).exists()
    assert len(StateDir(config.state_dir).read_history()) == 1
    # The original judges the same moment by its fixed window, still full of
    # the old server's loss, and would fail over again.
    assert lab.original_loss(at=checked_at) > THRESHOLD


def test_a_tunnel_still_bad_after_the_switch_is_caught_once_the_grace_is_over(
    lab: Lab, make_lab_config: Callable[[int], Config], tmp_path: Path
) -> None:
    config = make_lab_config(1)
    lab.set_loss(100, TARGETS[:1])
    lab.wait_for_loss(lambda loss: loss > 0.3, "the prober to see the loss")
    switched = record_switch(config)  # the new server is just as bad
    lab.wait_for_data_since(switched, MIN_WINDOW + 1)
    result = check_health(config)
    assert result.outcome == HealthOutcome.FAILOVER, describe_check(result)
    assert result.reading is not None and result.reading.loss is not None
    assert 0.3 < result.reading.loss < 0.7  # one target of two lost: summed over both series
    assert marker(tmp_path).read_text() == "failover\n"


def test_a_one_check_blip_of_total_loss_causes_no_failover_with_max_failures_3(
    lab: Lab, make_lab_config: Callable[[int], Config], tmp_path: Path
) -> None:
    config = make_lab_config(3)
    state = StateDir(config.state_dir)
    started = time.time()
    lab.wait_for_data_since(started, MIN_WINDOW)
    assert check_health(config).outcome == HealthOutcome.HEALTHY

    # The blip: every ping lost, for the span of one check.
    lab.set_loss(100)
    blip = time.time()
    lab.wait_for_data_since(blip, MIN_WINDOW + 1)
    during = check_health(config)
    assert during.outcome == HealthOutcome.FAILURE, describe_check(during)
    assert state.read_failures() == 1

    lab.set_loss(0)
    cleared = time.time()
    lab.wait_for_data_since(cleared, MIN_WINDOW + 1)
    # The original, with its fixed window, still sees the blip here and counts a second failure.
    checked_at = time.time()
    assert lab.original_loss(at=checked_at) > THRESHOLD
    after = check_health(config)
    assert after.outcome == HealthOutcome.HEALTHY, describe_check(after)
    assert after.span.reason == "since the last check"
    assert state.read_failures() == 0

    last = state.read_last_check()
    assert last is not None
    lab.wait_for_data_since(last.time, MIN_WINDOW + 1)
    assert check_health(config).outcome == HealthOutcome.HEALTHY
    assert state.read_failures() == 0
    assert not marker(tmp_path).exists()
