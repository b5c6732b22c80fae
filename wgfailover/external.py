"""Running the external commands wg-failover drives: the tunnel restart,
the failover trigger and ``wg show``. Always an argv (no shell, so a server
name can never be interpreted), always with a timeout."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from wgfailover.errors import ActionError, WgFailoverError

# Enough of a failing command's stderr to say why (systemctl's "Job for ...
# failed" line, wg's "Unable to access interface"), short enough for one line.
_STDERR_TAIL = 500


def run_command(
    argv: Sequence[str],
    timeout: float,
    failure: str,
    error: type[WgFailoverError] = ActionError,
) -> str:
    """
    Given an argv, a timeout and how to introduce a failure ("restarting the
    tunnel failed"), run it and return its stdout. Raise `error` with that
    introduction and the end of the command's stderr if it cannot be
    started, exits non-zero, or overruns.
    """
    try:
        result = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise error(f"{failure}: command not found: {argv[0]}") from None
    except PermissionError:
        raise error(f"{failure}: permission denied running {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise error(f"{failure}: {' '.join(argv)} did not finish within {timeout:g}s") from None
    if result.returncode != 0:
        stderr = " ".join(result.stderr.decode("utf-8", errors="replace").split())[-_STDERR_TAIL:]
        detail = f": {stderr}" if stderr else ""
        raise error(f"{failure}: {' '.join(argv)} exited with {result.returncode}{detail}")
    return result.stdout.decode("utf-8", errors="replace")
