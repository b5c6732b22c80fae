"""The one exception hierarchy of wg-failover and the exit codes it maps to.

Every error a user can cause, or that the environment can cause, is a
subclass of WgFailoverError. Each class carries its exit code; the command
layer prints the message as one line and exits with that code, so the
mapping lives here and nowhere else.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit codes (sysexits.h values where one fits)."""

    OK = 0
    ACTION_FAILED = 1  # could not act: restart failed, state not writable, ...
    USAGE = 2  # bad flags; click uses 2 as well
    LOCAL_FAULT = 3  # wg-failover declined: every server is lossy, the fault is on this side
    PROBATION_FAILED = 4  # the servers switched to did not carry the tunnel (all servers failed)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: a health check that could not measure
    TEMPFAIL = 75  # EX_TEMPFAIL: the state lock stayed busy past its bound
    CONFIG = 78  # EX_CONFIG: the configuration file is missing or invalid


class WgFailoverError(Exception):
    """Base of every expected failure. str(error) is the one-line message."""

    exit_code: ExitCode = ExitCode.ACTION_FAILED


class ConfigError(WgFailoverError):
    """The configuration (or a file it names) is missing or invalid."""

    exit_code = ExitCode.CONFIG

    def __init__(self, path: object, problems: list[str] | str) -> None:
        self.path = str(path)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = f"{self.path}: {self.problems[0]}"
        else:
            listed = "; ".join(self.problems)
            message = f"{self.path}: {len(self.problems)} problems: {listed}"
        super().__init__(message)


class UsageError(WgFailoverError):
    """The command line asks for something impossible (e.g. an unknown --to)."""

    exit_code = ExitCode.USAGE


class ActionError(WgFailoverError):
    """The command could not do its job (restart failed, disk full, ...)."""

    exit_code = ExitCode.ACTION_FAILED


class LocalFaultError(WgFailoverError):
    """wg-failover declined to switch: every server, the current one included, is losing packets."""

    exit_code = ExitCode.LOCAL_FAULT


class ProbationFailedError(WgFailoverError):
    """No server switched to passed its probation; the tunnel stayed on the best-ranked one."""

    exit_code = ExitCode.PROBATION_FAILED


class StateError(ActionError):
    """The state directory could not be read, locked or written."""


class LockBusyError(WgFailoverError):
    """Another wg-failover process held the state lock past the bound."""

    exit_code = ExitCode.TEMPFAIL


class MeasurementError(WgFailoverError):
    """A health check could not measure the tunnel; nothing was counted."""

    exit_code = ExitCode.UNAVAILABLE


class PrometheusError(MeasurementError):
    """Prometheus could not be asked, or its answer could not be used."""


class PrometheusUnreachable(PrometheusError):
    """Connecting to Prometheus failed (refused, DNS, TLS handshake, ...)."""


class PrometheusTimeout(PrometheusError):
    """Prometheus did not answer within the configured time budget."""


class PrometheusHTTPError(PrometheusError):
    """Prometheus answered with an HTTP error status."""

    def __init__(self, message: str, status: int, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class PrometheusBadResponse(PrometheusError):
    """The answer was not the JSON shape the query API documents."""
