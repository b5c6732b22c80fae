"""Logging to stderr in a form journald keeps.

Under systemd (JOURNAL_STREAM is set when stderr is connected to the
journal) each line starts with an sd-daemon ``<N>`` priority prefix, so
``journalctl -p warning`` filters correctly. Elsewhere lines read
``wg-failover: warning: ...`` like other Unix tools.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.getMessage()}"


class _TerminalFormatter(logging.Formatter):
    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"{self.program}: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"{self.program}: warning: {message}"
        return f"{self.program}: {message}"


def setup_logging(program: str, verbose: bool = False) -> None:
    """Given the command's name, send the package's log records to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(_TerminalFormatter(program))
    logger = logging.getLogger("wgfailover")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
