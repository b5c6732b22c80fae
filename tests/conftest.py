"""Fixtures shared by every test layer."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from wgfailover.config import Config, load_config

WIREGUARD_CONFIG = """\
[Interface]
PrivateKey = {private_key}
Address = 10.99.0.2/32

[Peer]
PublicKey = {public_key}
Endpoint = {endpoint}:51820
AllowedIPs = 0.0.0.0/0
"""


def without_probation(toml: str) -> str:
    """
    Given the tables of a test config, return them with failover.probation
    = 0 unless they set it: a probation waits for real handshakes or tunnel
    data after each switch, which a test without a tunnel would wait out.
    Tests of the probation set it themselves.
    """
    if re.search(r"^\s*probation\s*=", toml, re.M):
        return toml
    if re.search(r"^\[failover\]\s*$", toml, re.M):
        return re.sub(r"^\[failover\]\s*$", '[failover]\nprobation = "0"', toml, count=1, flags=re.M)
    return f'{toml}\n[failover]\nprobation = "0"\n'


# Documentation addresses (RFC 5737): never contacted, only parsed.
DEFAULT_ENDPOINTS = {"server1": "192.0.2.10", "server2": "192.0.2.20", "server3": "192.0.2.30"}


def write_wireguard_configs(config_dir: Path, endpoints: dict[str, str]) -> None:
    """Write one wg-quick style config per server into config_dir."""
    config_dir.mkdir(parents=True, exist_ok=True)
    for name, endpoint in endpoints.items():
        (config_dir / name).write_text(
            WIREGUARD_CONFIG.format(private_key="a" * 43 + "=", public_key="b" * 43 + "=", endpoint=endpoint)
        )


@pytest.fixture
def make_config_file(tmp_path: Path) -> Callable[..., Path]:
    """
    Return a function that writes a real TOML config under tmp_path, with
    WireGuard configs for its servers, and returns the config's path.
    `top` is TOML placed before the tables, `extra` is appended; `servers`
    maps names to endpoints.
    """

    def make(
        extra: str = "",
        servers: dict[str, str] | None = None,
        top: str = "",
        restart_command: tuple[str, ...] = ("true",),
    ) -> Path:
        servers = DEFAULT_ENDPOINTS if servers is None else servers
        write_wireguard_configs(tmp_path / "secrets", servers)
        server_tables = "".join(f"[servers.{name}]\n" for name in servers)
        text = (
            f'config_dir = "{tmp_path / "secrets"}"\n'
            f'active_link = "{tmp_path / "wg-active.conf"}"\n'
            f'state_dir = "{tmp_path / "state"}"\n'
            f'textfile_dir = "{tmp_path}"\n'
            f"restart_command = {json.dumps(list(restart_command))}\n"
            f"{textwrap.dedent(top)}\n"
            f"{server_tables}\n"
            f"{without_probation(textwrap.dedent(extra))}\n"
        )
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return make


@pytest.fixture
def config(make_config_file: Callable[..., Path]) -> Config:
    """A valid config with three servers under tmp_path."""
    return load_config(make_config_file())
