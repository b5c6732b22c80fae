"""The local fallback signal: the newest WireGuard handshake, read with a fake `wg` on PATH."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from wgfailover.errors import ExitCode, MeasurementError
from wgfailover.evidence.handshake import check_handshake, parse_latest_handshakes, wg_show_argv

NOW = 1_700_000_000.0
KEY_A = "A" * 43 + "="
KEY_B = "B" * 43 + "="


def install_fake(bin_dir: Path, name: str, script: str) -> Path:
    """Write an executable shell script called name into bin_dir."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory put first on PATH, for fake `wg` and `ip` commands."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def fake_wg(bin_dir: Path, output: str, exit_code: int = 0) -> Path:
    """A fake `wg` that records its arguments and prints output."""
    (bin_dir / "wg.out").write_text(output)
    return install_fake(
        bin_dir,
        "wg",
        f"""\
        echo "$@" > "{bin_dir}/wg.args"
        cat "{bin_dir}/wg.out"
        [ {exit_code} -eq 0 ] || echo "Unable to access interface: No such device" >&2
        exit {exit_code}
        """,
    )


def test_the_output_of_wg_show_latest_handshakes_is_parsed() -> None:
    output = f"{KEY_A}\t1700000000\n{KEY_B}\t0\n"
    assert parse_latest_handshakes(output, "wg show wg0 latest-handshakes") == [1_700_000_000.0]


def test_garbage_from_wg_is_a_measurement_error_naming_the_command() -> None:
    with pytest.raises(MeasurementError) as caught:
        parse_latest_handshakes("interface: wg0\n", "wg show wg0 latest-handshakes")
    assert str(caught.value) == "wg show wg0 latest-handshakes printed 'interface: wg0', not 'PUBLIC-KEY SECONDS'"


def test_the_namespace_is_entered_with_ip_netns_exec() -> None:
    assert wg_show_argv("wg0") == ["wg", "show", "wg0", "latest-handshakes"]
    assert wg_show_argv("wg0", "vpn") == ["ip", "netns", "exec", "vpn", "wg", "show", "wg0", "latest-handshakes"]


@pytest.mark.parametrize(
    ("ages", "failed", "described"),
    [
        ([30], False, "newest handshake on wg0 30s ago (limit 180s)"),
        ([180], False, "newest handshake on wg0 180s ago (limit 180s)"),
        ([181], True, "newest handshake on wg0 181s ago (limit 180s)"),
        # The newest handshake over all peers counts, not the first line.
        ([900, 20], False, "newest handshake on wg0 20s ago (limit 180s)"),
        ([], True, "no handshake on wg0 yet"),
    ],
)
def test_a_newest_handshake_older_than_the_timeout_is_a_failure(
    fake_bin: Path, ages: list[int], failed: bool, described: str
) -> None:
    lines = [f"{KEY_A}\t{int(NOW) - age}" for age in ages] or [f"{KEY_A}\t0"]
    fake_wg(fake_bin, "\n".join(lines) + "\n")
    check = check_handshake("wg0", None, 180.0, NOW)
    assert check.failed is failed
    assert check.describe() == described
    assert (fake_bin / "wg.args").read_text() == "show wg0 latest-handshakes\n"


def test_a_handshake_from_the_future_after_a_clock_step_counts_as_fresh(fake_bin: Path) -> None:
    fake_wg(fake_bin, f"{KEY_A}\t{int(NOW) + 60}\n")
    check = check_handshake("wg0", None, 180.0, NOW)
    assert not check.failed and check.age == 0


def test_wg_runs_inside_the_configured_namespace(fake_bin: Path) -> None:
    fake_wg(fake_bin, f"{KEY_A}\t{int(NOW) - 5}\n")
    install_fake(
        fake_bin,
        "ip",
        f"""\
        echo "$@" > "{fake_bin}/ip.args"
        shift 3
        exec "$@"
        """,
    )
    assert not check_handshake("wg0", "vpn", 180.0, NOW).failed
    assert (fake_bin / "ip.args").read_text() == "netns exec vpn wg show wg0 latest-handshakes\n"


def test_a_failing_wg_is_a_measurement_error_with_its_stderr(fake_bin: Path) -> None:
    fake_wg(fake_bin, "", exit_code=1)
    with pytest.raises(MeasurementError) as caught:
        check_handshake("wg9", None, 180.0, NOW)
    assert str(caught.value) == (
        "cannot read handshakes: wg show wg9 latest-handshakes exited with 1: Unable to access interface: No such device"
    )
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_a_missing_wg_is_a_measurement_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MeasurementError) as caught:
        check_handshake("wg0", None, 180.0, NOW)
    assert str(caught.value) == "cannot read handshakes: command not found: wg"
