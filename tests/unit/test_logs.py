"""Log lines: one per event, with syslog priorities when stderr is the journal."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.commands import command_argv
from wgfailover.commands.common import handle_errors
from wgfailover.commands.wg_select import main as wg_select
from wgfailover.config import load_config


def run_with_stderr_file(
    args: list[str], stderr_path: Path, journal_stream: str | None, stdout_too: bool = False
) -> str:
    """Run a command with stderr (and stdout, as StandardOutput=journal does) to a file; return the file."""
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WG_FAILOVER_CONFIG")}
    with open(stderr_path, "wb") as stderr:
        if journal_stream == "this file":
            status = os.fstat(stderr.fileno())
            env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        stdout = stderr if stdout_too else subprocess.DEVNULL
        subprocess.run(args, stderr=stderr, stdout=stdout, env=env, timeout=60, check=False)
    return stderr_path.read_text()


@pytest.fixture
def on_server1(make_config_file: Callable[..., Path]) -> Path:
    """A config whose state records server1."""
    path = make_config_file()
    state = load_config(path).state_dir
    state.mkdir()
    (state / "current").write_text("server1\n")
    return path


@pytest.fixture
def bad_state_config(make_config_file: Callable[..., Path]) -> Path:
    path = make_config_file()
    config = load_config(path)
    config.state_dir.mkdir()
    (config.state_dir / "current").write_text("nope\n")
    return path


def test_when_stderr_is_the_journal_lines_carry_syslog_priorities(bad_state_config: Path, tmp_path: Path) -> None:
    state = load_config(bad_state_config).state_dir
    output = run_with_stderr_file(
        [*command_argv("wg-select"), "--config", str(bad_state_config)], tmp_path / "stderr", "this file"
    )
    lines = output.splitlines()
    assert lines[0] == f"<4>{state / 'current'} names 'nope', which is not a configured server; replacing it"
    assert lines[1].startswith("<6>picked server ")


@pytest.mark.parametrize("journal_stream", [None, "8:12345", "garbage"])
def test_elsewhere_lines_name_the_program_and_level(
    bad_state_config: Path, tmp_path: Path, journal_stream: str | None
) -> None:
    # A shell started from a unit inherits JOURNAL_STREAM, but its stderr is a terminal or a file.
    output = run_with_stderr_file(
        [*command_argv("wg-select"), "--config", str(bad_state_config)], tmp_path / "stderr", journal_stream
    )
    assert output.splitlines()[0].startswith("wg-select: warning: ")


def test_on_a_terminal_the_lines_of_an_instance_name_it(make_config_file: Callable[..., Path], tmp_path: Path) -> None:
    # Two tunnels' commands run by hand must not read alike; the journal names the unit instead.
    path = make_config_file(top='instance = "wg1"')
    state = load_config(path).state_dir
    state.mkdir()
    (state / "current").write_text("nope\n")
    output = run_with_stderr_file([*command_argv("wg-select"), "--config", str(path)], tmp_path / "stderr", None)
    assert output.splitlines()[0].startswith("wg-select@wg1: warning: ")
    journal = run_with_stderr_file(
        [*command_argv("wg-select"), "--config", str(path)], tmp_path / "journal", "this file"
    )
    assert "wg1" not in journal.splitlines()[0]


def test_a_newline_in_a_message_stays_on_one_line(on_server1: Path, tmp_path: Path) -> None:
    path = on_server1
    output = run_with_stderr_file(
        [*command_argv("wg-failover"), "--config", str(path), "--to", "server3", "--reason", "line1\nline2"],
        tmp_path / "stderr",
        "this file",
        stdout_too=True,
    )
    switched = [line for line in output.splitlines() if "switched" in line]
    assert len(switched) == 1
    assert switched[0] == "<6>switched from server1 to server3: asked for with --to (reason: line1\\nline2)"


def test_under_the_journal_wg_select_logs_its_pick_once_with_a_priority(bad_state_config: Path, tmp_path: Path) -> None:
    # stdout and stderr are both the journal, as with StandardOutput=journal (the default).
    output = run_with_stderr_file(
        [*command_argv("wg-select"), "--config", str(bad_state_config)], tmp_path / "out", "this file", stdout_too=True
    )
    lines = output.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("<4>") and lines[1].startswith("<6>picked server ")


def test_under_the_journal_every_line_of_a_switch_has_a_priority_and_none_repeats(
    on_server1: Path, tmp_path: Path
) -> None:
    path = on_server1
    output = run_with_stderr_file(
        [*command_argv("wg-failover"), "--config", str(path), "--to", "server2"], tmp_path / "out", "this file", True
    )
    lines = output.splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>") for line in lines), lines
    assert len(set(lines)) == len(lines)
    assert sum("server2" in line and "switched" in line for line in lines) == 1


def test_on_a_terminal_the_result_goes_to_stdout_and_not_again_to_stderr(on_server1: Path, tmp_path: Path) -> None:
    path = on_server1
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WG_FAILOVER_CONFIG")}
    result = subprocess.run(
        [*command_argv("wg-failover"), "--config", str(path), "--to", "server2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "switched from server1 to server2" in result.stdout
    assert "switched" not in result.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_an_internal_error_is_one_line_and_verbose_adds_the_traceback(
    verbose: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    with pytest.raises(SystemExit) as exited, handle_errors("wg-select", verbose):
        raise RuntimeError("a bug")
    assert exited.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "wg-select: error: internal error: RuntimeError: a bug (run with --verbose for the traceback)"
    if verbose:
        assert lines[1] == "wg-select: error: traceback"
        assert lines[2] == "wg-select: error: Traceback (most recent call last):"
        assert lines[-1] == "wg-select: error: RuntimeError: a bug"
    else:
        assert len(lines) == 1


def test_a_command_leaves_the_package_logger_as_it_found_it(bad_state_config: Path) -> None:
    logger = logging.getLogger("wgfailover")
    before = (logger.handlers[:], logger.level, logger.propagate)
    result = CliRunner().invoke(wg_select, ["--config", str(bad_state_config)])
    assert result.exit_code == 0, result.output
    assert (logger.handlers[:], logger.level, logger.propagate) == before


def test_records_logged_after_a_command_reach_the_callers_handlers(bad_state_config: Path) -> None:
    CliRunner().invoke(wg_select, ["--config", str(bad_state_config)])
    # Another program's handler on the root logger (where pytest's caplog puts its own).
    caught: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = caught.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("wgfailover.state").warning("after the command")
    finally:
        root.removeHandler(handler)
    assert [record.getMessage() for record in caught] == ["after the command"]


def test_under_the_journal_a_failed_health_check_is_one_warning(
    make_config_file: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.reliability.helpers import FakePrometheus, serve

    server = serve(FakePrometheus(loss=0.5))
    fake = next(server)
    try:
        path = make_config_file(extra=f'[prometheus]\nurl = "{fake.url}"\n')
        output = run_with_stderr_file(
            [*command_argv("wg-health-check"), "--config", str(path)], tmp_path / "out", "this file", stdout_too=True
        )
    finally:
        server.close()
    lines = output.splitlines()
    assert lines == [
        "<4>unhealthy: loss 0.5 > 0.15 over 300s (first check: all of health.window); count failure 1 of 3"
    ]
