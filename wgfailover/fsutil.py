"""Atomic filesystem changes: every write is a rename of a complete file.

The original wrote with ``echo > file`` and ``ln -sf``: a crash or a full
disk between truncate and write left an empty state file, and ``ln -sf``
unlinks before it links, so the tunnel unit could find no config at all.
Here a reader sees either the old file or the new one, never a mix.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path

from wgfailover.errors import StateError


class RefusedFile(OSError):
    """
    A file that is not read: a symlink where none may be, not a regular
    file (a FIFO, a device, a directory), or larger than its bound. An
    OSError, so every reader's handling of unreadable files applies; its
    strerror says why.
    """


def read_regular_file(path: Path, max_bytes: int, *, follow_symlinks: bool = False, tail: bool = False) -> bytes:
    """
    Given a path and a size bound, return the content of the regular file
    there. Without follow_symlinks a symlink is refused (O_NOFOLLOW): in a
    state directory a planted link could make us quote /etc/shadow or read
    /dev/zero. What is not a regular file is refused before reading: a FIFO
    would block forever (while the state lock is held), a device never
    ends. A file larger than max_bytes is refused, or with tail only its
    last max_bytes are returned. Raise FileNotFoundError if there is none,
    RefusedFile or another OSError otherwise.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: opening a FIFO does not wait for a writer
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise RefusedFile(errno.ELOOP, "is a symlink, not a file", str(path)) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise RefusedFile(errno.EINVAL, f"is {_file_kind(status.st_mode)}, not a regular file", str(path))
        if status.st_size > max_bytes:
            if not tail:
                raise RefusedFile(errno.EFBIG, f"is larger than {max_bytes} bytes", str(path))
            os.lseek(fd, status.st_size - max_bytes, os.SEEK_SET)
        chunks = []
        left = max_bytes + 1  # one more: a file that grew since fstat is still caught
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        if not tail:
            raise RefusedFile(errno.EFBIG, f"is larger than {max_bytes} bytes", str(path))
        data = data[-max_bytes:]
    return data


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _temp_name(path: Path) -> Path:
    # Beside the target, so the rename stays within one filesystem; a dot
    # prefix keeps node_exporter from reading half-written *.prom files.
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"


def remove_stale_temps(path: Path) -> None:
    """
    Given a target path, delete the temp files _temp_name made for it that
    are still there. A process killed between creating its temp file and
    the rename (SIGKILL, power loss) cannot clean up, and every such crash
    would leave one more. Call only under the state lock, which every writer
    of the target holds, so no live writer's temp file is touched.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            _remove_quietly(path.parent / name)


def fsync_dir(directory: Path) -> None:
    """Given a directory, flush its entries (a rename) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Given a target, its content and mode, write and fsync a temp file beside it and return its path."""
    temp = _temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        _remove_quietly(temp)
        raise
    return temp


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """
    Given a path and its new content, replace the file atomically with that
    mode (set explicitly, so a UMask=0077 unit still writes a file that
    node_exporter can read). Raise StateError naming the path if it cannot
    be written; the previous file is then left as it was.
    """
    with StagedChanges() as staged:
        staged.write(path, data, mode)
        staged.commit()


def atomic_symlink(target: Path, link: Path) -> None:
    """
    Given a target and a link path, point the link at the target atomically:
    the link exists throughout and never dangles into a half-made state.
    Raise StateError naming the link if that fails.
    """
    with StagedChanges() as staged:
        staged.symlink(target, link)
        staged.commit()


class StagedChanges:
    """
    Several files and links changed together: each is first written in full
    to a temp file beside its target and fsynced (stage), then all are
    renamed over their targets in the order staged (commit). Everything
    that needs disk space happens while staging, so a full disk fails
    before anything is changed; a rename over an existing name needs none.
    Used as a context manager, whatever was staged and not committed is
    removed on the way out.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path, str]] = []  # (temp, target, what failed means)

    def __enter__(self) -> StagedChanges:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Given a path, its new content and mode, stage the file. Raise StateError naming it if that fails."""
        try:
            temp = _write_temp(path, data, mode)
        except OSError as error:
            raise StateError(f"cannot write {path}: {error.strerror or error}") from None
        self._staged.append((temp, path, f"cannot write {path}"))

    def symlink(self, target: Path, link: Path) -> None:
        """Given a target and a link path, stage the link. Raise StateError naming it if that fails."""
        temp = _temp_name(link)
        failure = f"cannot point {link} at {target}"
        try:
            os.symlink(target, temp)
        except OSError as error:
            _remove_quietly(temp)
            raise StateError(f"{failure}: {error.strerror or error}") from None
        self._staged.append((temp, link, failure))

    def commit(self) -> None:
        """
        Rename every staged file over its target, in the order staged, each
        rename flushed to disk before the next (so a crash keeps that order).
        Raise StateError naming the first target that could not be replaced.
        """
        while self._staged:
            temp, target, failure = self._staged[0]
            try:
                os.replace(temp, target)
                fsync_dir(target.parent)
            except OSError as error:
                raise StateError(f"{failure}: {error.strerror or error}") from None
            self._staged.pop(0)

    def discard(self) -> None:
        """Remove every staged temp file not yet committed."""
        for temp, _, _ in self._staged:
            _remove_quietly(temp)
        self._staged.clear()


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
