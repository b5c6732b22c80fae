"""Atomic writes and link swaps: a reader sees the old file or the new one, never a mix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wgfailover.errors import StateError
from wgfailover.fsutil import atomic_symlink, atomic_write, remove_stale_temps

_WATCHER = textwrap.dedent(
    """
    import os, sys
    link, stop = sys.argv[1], sys.argv[2]
    seen = bad = 0
    while not os.path.exists(stop):
        try:
            target = os.readlink(link)
            seen += 1
            if not os.path.exists(target):
                bad += 1
        except OSError:
            bad += 1
    print(seen, bad)
    """
)


def test_atomic_write_sets_the_mode_even_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "m.prom", b"x 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "m.prom").stat().st_mode & 0o777 == 0o644
    assert list(tmp_path.iterdir()) == [tmp_path / "m.prom"]


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "current"
    with pytest.raises(StateError) as caught:
        atomic_write(target, b"x")
    assert str(caught.value) == f"cannot write {target}: No such file or directory"


def test_the_link_is_never_missing_or_dangling_while_it_is_swapped(tmp_path: Path) -> None:
    configs = [tmp_path / f"server{n}" for n in range(3)]
    for config in configs:
        config.write_text("[Interface]\n")
    link = tmp_path / "wg-active.conf"
    atomic_symlink(configs[0], link)
    stop = tmp_path / "stop"
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(link), str(stop)], stdout=subprocess.PIPE)
    try:
        for round_number in range(3000):
            atomic_symlink(configs[round_number % 3], link)
    finally:
        stop.write_text("")
        out, _ = watcher.communicate(timeout=60)
    seen, bad = (int(x) for x in out.split())
    assert seen > 0
    assert bad == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server0", "server1", "server2", "stop", "wg-active.conf"]


def test_a_replaced_file_is_the_new_content_and_no_temp_is_left(tmp_path: Path) -> None:
    target = tmp_path / "current"
    target.write_text("old\n")
    atomic_write(target, b"new\n")
    assert target.read_text() == "new\n"
    assert list(tmp_path.iterdir()) == [target]


def test_a_failed_symlink_swap_leaves_the_link_and_names_it(tmp_path: Path) -> None:
    link = tmp_path / "missing-dir" / "wg-active.conf"
    with pytest.raises(StateError) as caught:
        atomic_symlink(tmp_path / "server1", link)
    assert str(caught.value) == f"cannot point {link} at {tmp_path / 'server1'}: No such file or directory"


def test_stale_temps_of_the_target_are_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "current"
    stale = tmp_path / ".current.0123abcd.tmp"
    other_target = tmp_path / ".history.jsonl.0123abcd.tmp"
    look_alike = tmp_path / ".current.notahex.tmp"
    for path in (stale, other_target, look_alike):
        path.write_text("x")
    remove_stale_temps(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_target.name, look_alike.name])


def test_removing_temps_of_a_missing_directory_is_quiet(tmp_path: Path) -> None:
    remove_stale_temps(tmp_path / "nope" / "current")
