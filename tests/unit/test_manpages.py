"""Man pages: written from --help at build time, so they say what --help says."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.unit.test_commands import command
from wgfailover import __version__
from wgfailover.commands.common import EXIT_CODES
from wgfailover.commands.manpage import COMMANDS, render_manpage, write_manpages

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_man_page_lists_every_option_of_help_and_every_exit_code(name: str) -> None:
    page = render_manpage(name, command(name))
    help_text = CliRunner().invoke(command(name), ["--help"], prog_name=name).stdout
    options = [word.rstrip(",") for word in help_text.split() if word.startswith("--")]
    for option in options:
        assert f".B {option}".replace("-", "\\-") in page or option.replace("-", "\\-") in page, option
    for code in EXIT_CODES[name]:
        assert f".TP\n.B {code}\n" in page
    assert page.startswith(f'.TH {name.upper()} 1 ""')


def test_man_renders_each_page_without_warnings(tmp_path: Path) -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed")
    for page in write_manpages(tmp_path):
        result = subprocess.run(
            [man, "--warnings", "-l", str(page)],
            capture_output=True,
            text=True,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            timeout=60,
            check=False,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert page.stem in result.stdout


def test_the_wheel_installs_a_man_page_per_command(tmp_path: Path) -> None:
    if not (ROOT / "wgfailover").is_dir():
        pytest.skip("no source tree to build a wheel from: these tests run against an installed package")
    # The build (pip, pipx, Nix) runs setup.py, which writes the pages.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in COMMANDS:
        assert f"wg_failover-{__version__}.data/data/share/man/man1/{name}.1" in names
