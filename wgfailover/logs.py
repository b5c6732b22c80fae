"""Logging to stderr in a form journald keeps.

Under systemd, when stderr really is the journal (systemd sets
JOURNAL_STREAM to the device and inode of that stream, see
systemd.exec(5)), each line starts with an sd-daemon ``<N>`` priority
prefix, so ``journalctl -p warning`` filters correctly. Elsewhere lines
read ``wg-failover: warning: ...`` like other Unix tools. One event is one
line either way: newlines inside a message (a --reason, a server's stderr)
are escaped, because journald would split them into lines without a
priority.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import TextIO

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def one_line(text: str) -> str:
    """Given a free text (a --reason, a server's stderr), return it with line breaks escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class _OneEventPerLine(logging.Formatter):
    """Render a record as one line; a traceback (--verbose) follows, one line per line."""

    def prefix(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        line = self.prefix(record) + one_line(record.getMessage())
        if record.exc_info:
            trace = self.formatException(record.exc_info).splitlines()
            line += "".join("\n" + self.prefix(record) + trace_line for trace_line in trace)
        return line


class _JournalFormatter(_OneEventPerLine):
    def prefix(self, record: logging.LogRecord) -> str:
        return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>"


class _TerminalFormatter(_OneEventPerLine):
    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def prefix(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.ERROR:
            return f"{self.program}: error: "
        if record.levelno >= logging.WARNING:
            return f"{self.program}: warning: "
        return f"{self.program}: "


def stream_is_journal(stream: TextIO) -> bool:
    """Given stdout or stderr, return whether it is the stream systemd connected to the journal."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def stderr_is_journal() -> bool:
    """Return whether stderr is the stream systemd connected to the journal."""
    return stream_is_journal(sys.stderr)


def stdout_is_journal() -> bool:
    """
    Return whether stdout is the journal too (StandardOutput=journal, the
    default): then a result printed there would repeat, without a priority,
    what a log record already said.
    """
    return stream_is_journal(sys.stdout)


def name_instance(instance: str | None) -> None:
    """
    Given the config's instance (None: the only tunnel), make the lines on
    a terminal say which tunnel they are about: ``wg-failover@wg1: ...``,
    as the plain units are named. Journal lines need nothing: the journal
    records the unit, which names the instance.
    """
    if instance is None:
        return
    for handler in logging.getLogger("wgfailover").handlers:
        formatter = handler.formatter
        if isinstance(formatter, _TerminalFormatter) and "@" not in formatter.program:
            formatter.program = f"{formatter.program}@{instance}"


@contextlib.contextmanager
def logging_to_stderr(program: str, verbose: bool = False) -> Iterator[None]:
    """
    Given the command's name, send the package's log records to stderr, one
    line each, for the duration of the block; then put the package's logger
    back as it was. A command leaves no global state behind, so a program
    (or a test) that runs one and then logs on its own sees its own logging
    setup unchanged.
    """
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(_JournalFormatter())
    else:
        handler.setFormatter(_TerminalFormatter(program))
    logger = logging.getLogger("wgfailover")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Not also through the root logger: an embedding program's handlers
    # would print every line twice.
    logger.propagate = False
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[2]
        logger.setLevel(saved[1])
