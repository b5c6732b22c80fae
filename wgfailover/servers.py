"""VPN servers: their names, WireGuard config files and probed endpoints.

A server's IP is written once, in its WireGuard config; the endpoint the
prober pings defaults to the host of that config's ``Endpoint =`` line, so
the three copies of every IP in the original (failover script, prober,
WireGuard config) cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from wgfailover.errors import ConfigError
from wgfailover.fsutil import RefusedFile, read_regular_file

# A server name becomes a file name under config_dir: a safe alphabet and no
# leading dot rule out "..", hidden files and any path separator.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_MAX_NAME_LENGTH = 255
MAX_WIREGUARD_CONFIG_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Server:
    name: str
    config_path: Path
    endpoint: str | None = None  # explicit override from the config file
    priority: int | None = None  # lower is preferred; None: after every numbered tier
    weight: float = 1.0  # capacity relative to the others: its share of clients choosing among near-ties


def is_safe_server_name(name: str) -> bool:
    """Given a string, return whether it is usable as a server (file) name."""
    return len(name) <= _MAX_NAME_LENGTH and _SAFE_NAME.fullmatch(name) is not None


def check_server_name(name: str) -> str:
    """
    Given a server name, return it unchanged. Raise ValueError naming it if it
    is not a safe file name ([A-Za-z0-9_.-], no leading dot).
    """
    if not is_safe_server_name(name):
        raise ValueError(
            f"server name {name!r} is not a safe file name (letters, digits, '_', '.', '-'; no leading dot)"
        )
    return name


def parse_endpoint_host(text: str) -> str | None:
    """
    Given the text of a WireGuard config, return the host of the first peer's
    Endpoint (IPv4, IPv6 without brackets, or a hostname), or None if no peer
    has one. Parsed as wg(8) does: keys case-insensitive, '#' starts a comment.
    """
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key.lower() != "endpoint" or not value:
            continue
        if value.startswith("["):
            host, bracket, _ = value[1:].partition("]")
            return host if bracket and host else None
        host, colon, port = value.rpartition(":")
        if not colon:
            return value
        # An unbracketed IPv6 address without port has several colons.
        return host if host and ":" not in host and port.isdigit() else None
    return None


def resolve_endpoint(server: Server) -> str:
    """
    Given a server, return the host its external prober pings: the configured
    endpoint, else the Endpoint host in its WireGuard config. Raise
    ConfigError naming the file if neither gives one.
    """
    if server.endpoint:
        return server.endpoint
    try:
        # A WireGuard config is a few hundred bytes; the bound keeps a wrong
        # path (a device, a huge file) from being read into memory.
        raw = read_regular_file(server.config_path, MAX_WIREGUARD_CONFIG_BYTES, follow_symlinks=True)
        text = raw.decode("utf-8", errors="replace")
    except OSError as error:
        why = f"it {error.strerror}" if isinstance(error, RefusedFile) else error.strerror
        raise ConfigError(
            server.config_path,
            f"cannot read the WireGuard config of server {server.name!r} to find its endpoint "
            f"({why}); set servers.{server.name}.endpoint instead",
        ) from None
    host = parse_endpoint_host(text)
    if host is None:
        raise ConfigError(
            server.config_path,
            f"no usable 'Endpoint =' line for server {server.name!r}; set servers.{server.name}.endpoint",
        )
    return host
