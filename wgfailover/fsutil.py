"""Atomic filesystem changes: every write is a rename of a complete file.

The original wrote with ``echo > file`` and ``ln -sf``: a crash or a full
disk between truncate and write left an empty state file, and ``ln -sf``
unlinks before it links, so the tunnel unit could find no config at all.
Here a reader sees either the old file or the new one, never a mix.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from wgfailover.errors import StateError


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


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """
    Given a path and its new content, replace the file atomically with that
    mode (set explicitly, so a UMask=0077 unit still writes a file that
    node_exporter can read). Raise StateError naming the path if it cannot
    be written; the previous file is then left as it was.
    """
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
        os.replace(temp, path)
        fsync_dir(path.parent)
    except OSError as error:
        _remove_quietly(temp)
        raise StateError(f"cannot write {path}: {error.strerror or error}") from None


def atomic_symlink(target: Path, link: Path) -> None:
    """
    Given a target and a link path, point the link at the target atomically:
    the link exists throughout and never dangles into a half-made state.
    Raise StateError naming the link if that fails.
    """
    temp = _temp_name(link)
    try:
        os.symlink(target, temp)
        os.replace(temp, link)
        fsync_dir(link.parent)
    except OSError as error:
        _remove_quietly(temp)
        raise StateError(f"cannot point {link} at {target}: {error.strerror or error}") from None


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
