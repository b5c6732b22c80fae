"""Build-time step pyproject.toml cannot express: the man pages.

They are written from the commands' --help texts into build/man and
installed as data files (share/man/man1 under the install prefix: the
virtualenv, pipx's venv, or the Nix store path), so they always match the
version being installed. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
# The package being built, not an installed copy: its --help texts are the source.
sys.path.insert(0, str(HERE))

from wgfailover.commands.manpage import write_manpages  # noqa: E402

pages = write_manpages(HERE / "build" / "man")
setup(data_files=[("share/man/man1", [str(page.relative_to(HERE)) for page in pages])])
