"""Running the commands wg-failover drives: argv only, always bounded, failures in one line."""

from __future__ import annotations

import sys

import pytest

from wgfailover.errors import ActionError, ExitCode, MeasurementError
from wgfailover.external import MAX_OUTPUT_BYTES, run_command


def test_a_failing_restart_is_reported_with_its_stderr() -> None:
    with pytest.raises(ActionError) as caught:
        run_command(["sh", "-c", "echo 'Job for wg.service failed.' >&2; exit 3"], 10, "restarting the tunnel failed")
    assert (
        str(caught.value)
        == "restarting the tunnel failed: sh -c echo 'Job for wg.service failed.' >&2; exit 3 exited with 3: Job for wg.service failed."
    )
    assert caught.value.exit_code == ExitCode.ACTION_FAILED


def test_a_missing_restart_command_is_reported() -> None:
    with pytest.raises(ActionError, match="restarting the tunnel failed: command not found: /nonexistent/systemctl"):
        run_command(["/nonexistent/systemctl", "restart"], 10, "restarting the tunnel failed")


def test_a_hanging_restart_is_bounded() -> None:
    with pytest.raises(ActionError, match=r"did not finish within 0.2s"):
        run_command(["sleep", "30"], 0.2, "restarting the tunnel failed")


def test_stdout_is_returned() -> None:
    assert run_command(["printf", "a\tb\n"], 10, "x") == "a\tb\n"


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(MeasurementError, match="cannot read handshakes: false exited with 1$") as caught:
        run_command(["false"], 10, "cannot read handshakes", MeasurementError)
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_a_long_stderr_is_cut_to_its_end_on_one_line() -> None:
    with pytest.raises(ActionError) as caught:
        run_command(["sh", "-c", "for i in $(seq 400); do echo line$i >&2; done; exit 1"], 10, "x")
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("line399 line400")
    assert "line1 " not in message


def test_an_argument_is_never_interpreted_by_a_shell() -> None:
    assert run_command(["echo", "$(id) ; rm -rf /"], 10, "x") == "$(id) ; rm -rf /\n"


def test_a_background_child_holding_the_pipes_does_not_make_a_finished_command_fail() -> None:
    # The shell exits at once with 0; its child keeps stdout and stderr open for 20 s.
    assert run_command(["sh", "-c", "echo started; sleep 20 & exit 0"], 5, "restarting the tunnel failed") == (
        "started\n"
    )


def test_a_background_child_does_not_hide_a_failure() -> None:
    with pytest.raises(ActionError, match=r"exited with 4: broken$"):
        run_command(["sh", "-c", "sleep 20 & echo broken >&2; exit 4"], 5, "x")


def test_endless_output_is_kept_as_a_bounded_tail() -> None:
    script = "import sys; sys.stdout.buffer.write(b'x' * (40 * 1024 * 1024) + b'END')"
    output = run_command([sys.executable, "-c", script], 60, "x")
    assert len(output) == MAX_OUTPUT_BYTES
    assert output.endswith("xEND")
