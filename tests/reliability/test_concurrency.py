"""Concurrent runs serialise on the state lock: no switch is lost or doubled.

Over fifty real processes of the three commands start at once against one
state directory. Every wg-failover carries its own `--reason`, so each
history record names the process that made it: every process that says it
switched has exactly one record, the seqs run 1..N without gaps, and each
switch starts where the previous one ended (a lost update would start it
from a stale server). Waits on the lock are bounded by lock_timeout: past
it, exit 75 with one clear line and nothing changed.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.commands import command_argv
from tests.reliability.helpers import FakePrometheus, Install, check_state, run, serve, wait_all, write_install

DEADLINE = 300  # seconds for all processes together: generous, only to catch a deadlock


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    """Health queries get a loss of 0.5; the failover query (tagged wgf_metric) gets a 503, so the pick is random."""
    fake = FakePrometheus(loss=0.5)

    def answer(query: str) -> tuple[int, dict[str, str], bytes]:
        if "wgf_metric" in query:
            return 503, {"Content-Type": "text/plain"}, b"overloaded"
        return fake.default_answer(query)

    fake.answer = answer
    yield from serve(fake)


def start(command: str, install: Install, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WG_FAILOVER_CONFIG": str(install.config)}
    env.pop("JOURNAL_STREAM", None)
    return subprocess.Popen(
        [*command_argv(command), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_fifty_six_concurrent_commands_record_every_switch_exactly_once(
    tmp_path: Path, prometheus: FakePrometheus
) -> None:
    install = write_install(
        tmp_path,
        prometheus_url=prometheus.url,
        top='lock_timeout = "240s"',
        extra='[failover]\nhold_down = "0s"\n[health]\nmax_failures = 1000000\nmin_window = "1s"\n',
    )
    assert run("wg-select", install).returncode == 0
    initial = install.read("current")
    rng = random.Random(56)
    planned: list[tuple[str, tuple[str, ...]]] = []
    for index in range(20):
        planned.append(("wg-failover", ("--to", rng.choice(install.servers), "--reason", f"to-{index}")))
    for index in range(12):
        planned.append(("wg-failover", ("--reason", f"auto-{index}")))
    planned += [("wg-health-check", ())] * 12 + [("wg-select", ())] * 12
    rng.shuffle(planned)

    processes = [start(command, install, *args) for command, args in planned]
    results = wait_all(processes, DEADLINE)

    assert len(processes) >= 50
    for (command, args), (code, _out, err) in zip(planned, results):
        assert code == 0, f"{command} {args} exited {code}: {err}"
        assert "Traceback" not in err
    switched = {args[-1]: out for (command, args), (_, out, _) in zip(planned, results) if command == "wg-failover"}
    made = {reason for reason, out in switched.items() if re.search(r"^switched from \S+ to \S+", out, re.M)}
    skipped = {reason for reason, out in switched.items() if re.search(r"^not switching: ", out, re.M)}
    assert made | skipped == set(switched), "every wg-failover either switched or said why not"
    assert not made & skipped

    history = install.history()
    print(f"\n{len(processes)} processes: {len(made)} switched, {len(skipped)} said why not")
    assert Counter(record.reason for record in history) == Counter(made), "each switch recorded exactly once"
    assert [record.seq for record in history] == list(range(1, len(history) + 1))
    assert history[0].from_server == initial.decode().strip()
    assert check_state(install, chain=True) == []
    assert install.read("current") == f"{history[-1].to_server}\n".encode()
    assert Path(os.readlink(install.link)).name == history[-1].to_server


def test_concurrent_health_checks_lose_no_count(tmp_path: Path, prometheus: FakePrometheus) -> None:
    install = write_install(
        tmp_path,
        prometheus_url=prometheus.url,
        top='lock_timeout = "240s"',
        extra='[health]\nmax_failures = 1000000\nmin_window = "1s"\n',
    )
    assert run("wg-select", install).returncode == 0
    counted = 0
    for _ in range(3):  # waves, so later checks have a previous one to be compared with
        age_last_check(install)
        processes = [start("wg-health-check", install) for _ in range(20)]
        results = wait_all(processes, DEADLINE)
        assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
        messages = [out.strip() for _, out, _ in results]
        counted += sum("count failure" in message for message in messages)
        # The others either overlapped a check that counted, or started after it.
        uncounted = ("not counted", "too soon after the last check")
        assert all("count failure" in m or any(u in m for u in uncounted) for m in messages), messages
    assert counted >= 3
    assert install.read("health-failures") == f"{counted}\n".encode()


def age_last_check(install: Install, seconds: float = 3600) -> None:
    """Move the last check (if any) back in time, as if the timer's minute had passed."""
    path = install.state_dir / "last-check.json"
    if path.exists():
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "time": record["time"] - seconds}) + "\n")


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    """The state lock, held by this process for the whole test."""
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield state / "lock"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "command, args",
    [("wg-select", ()), ("wg-failover", ("--to", "server2")), ("wg-failover", ()), ("wg-health-check", ())],
)
def test_lock_held_past_lock_timeout_exits_75_with_one_line_and_changes_nothing(
    tmp_path: Path, prometheus: FakePrometheus, held_lock: Path, command: str, args: tuple[str, ...]
) -> None:
    install = write_install(tmp_path, prometheus_url=prometheus.url, top='lock_timeout = "0.5s"')
    # A state to keep: written as a finished earlier run would have.
    (install.state_dir / "current").write_text("server1\n")
    (install.state_dir / "health-failures").write_text("2\n")
    install.link.symlink_to(install.config_dir / "server1")
    before = install.snapshot()

    # Several at once, so the bound holds for every waiter, not just one.
    results = wait_all([start(command, install, *args) for _ in range(3)], DEADLINE)

    for code, _out, err in results:
        assert code == 75, err
        assert err.splitlines()[-1] == (
            f"{command}: error: another wg-failover command has held {held_lock} for over 0.5s; giving up"
        )
        assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert install.snapshot() == before


def test_dry_runs_do_not_wait_for_the_lock(tmp_path: Path, prometheus: FakePrometheus, held_lock: Path) -> None:
    install = write_install(tmp_path, prometheus_url=prometheus.url, top='lock_timeout = "0.5s"')
    (install.state_dir / "current").write_text("server1\n")
    results = wait_all(
        [start("wg-failover", install, "--dry-run", "--json"), start("wg-health-check", install, "--dry-run")],
        DEADLINE,
    )
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert json.loads(results[0][1])["dry_run"] is True
