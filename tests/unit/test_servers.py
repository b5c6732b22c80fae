"""Server names and the endpoint read from each server's WireGuard config."""

from __future__ import annotations

from pathlib import Path

import pytest

from wgfailover.errors import ConfigError
from wgfailover.servers import Server, check_server_name, parse_endpoint_host, resolve_endpoint


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("[Peer]\nEndpoint = 203.0.113.10:51820\n", "203.0.113.10"),
        ("[Peer]\nendpoint=203.0.113.10:51820", "203.0.113.10"),
        ("[Peer]\nENDPOINT   =   vpn.example.com:443  ", "vpn.example.com"),
        ("[Peer]\nEndpoint = [2001:db8::1]:51820\n", "2001:db8::1"),
        ("[Peer]\nEndpoint = 203.0.113.10:51820 # the Amsterdam box\n", "203.0.113.10"),
        ("[Peer]\n# Endpoint = 198.51.100.1:51820\nEndpoint = 203.0.113.10:51820\n", "203.0.113.10"),
        (
            "[Peer]\nPublicKey = abc=\n\n[Peer]\nEndpoint = 203.0.113.20:1\n[Peer]\nEndpoint = 203.0.113.30:1\n",
            "203.0.113.20",
        ),
        ("[Interface]\nPrivateKey = x\n", None),
        ("[Peer]\n# Endpoint = 203.0.113.10:51820\n", None),
        ("[Peer]\nEndpoint = \n", None),
        ("[Peer]\nEndpoint = [2001:db8::1\n", None),
        ("[Peer]\nEndpoint = 2001:db8::1\n", None),
    ],
    ids=[
        "ipv4",
        "lowercase-key-no-spaces",
        "hostname",
        "bracketed-ipv6",
        "trailing-comment",
        "commented-line-skipped",
        "several-peers-first-endpoint",
        "missing",
        "only-commented-out",
        "empty-value",
        "unclosed-bracket",
        "unbracketed-ipv6",
    ],
)
def test_endpoint_host_is_parsed_as_wg_does(text: str, host: str | None) -> None:
    assert parse_endpoint_host(text) == host


def test_an_explicit_endpoint_wins_over_the_config(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("[Peer]\nEndpoint = 203.0.113.10:51820\n")
    assert resolve_endpoint(Server("s", tmp_path / "s", endpoint="198.51.100.7")) == "198.51.100.7"
    assert resolve_endpoint(Server("s", tmp_path / "s")) == "203.0.113.10"


def test_a_missing_config_names_the_file_and_the_key_to_set(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_endpoint(Server("s", tmp_path / "s"))
    assert str(caught.value) == (
        f"{tmp_path / 's'}: cannot read the WireGuard config of server 's' to find its endpoint "
        "(No such file or directory); set servers.s.endpoint instead"
    )


def test_a_config_without_endpoint_says_which_key_to_set(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("[Interface]\n")
    with pytest.raises(ConfigError, match="no usable 'Endpoint =' line for server 's'; set servers.s.endpoint"):
        resolve_endpoint(Server("s", tmp_path / "s"))


@pytest.mark.parametrize("name", ["server1", "nl-ams.2", "_x", "A-b_c.d", "1"])
def test_safe_names_are_accepted(name: str) -> None:
    assert check_server_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "a b", "ä", "x\n", "a" * 256])
def test_unsafe_names_are_refused_with_the_name(name: str) -> None:
    with pytest.raises(ValueError, match="is not a safe file name"):
        check_server_name(name)
