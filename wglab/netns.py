"""Network namespaces, veth pairs, addresses, routes and nftables packet loss.

Everything here shells out to `ip`, `sysctl` and `nft` (iproute2 and
nftables), because those are the tools an operator would use and their error
messages are the ones worth showing. Nothing is ever created in the root
namespace: veth pairs are created directly inside the namespaces with
`ip -n NS link add ... peer ... netns OTHER`, so concurrent labs (each with
its own prefix) cannot collide on interface names or addresses.

Loss is made with nftables because this kernel has no netem: a rule
`numgen random mod 100 < N drop` drops about N% of the matching packets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from wglab.processes import kill_pid, run

NETNS_DIR = Path("/var/run/netns")
NFT_TABLE = "wglab"
_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,40}$")


def ns_argv(ns: str | None, argv: Sequence[str]) -> list[str]:
    """Given a namespace (or None for the current one) and an argv, return
    the argv that runs it inside the namespace.

    `ip netns exec` execs the command after entering the namespace, so the
    pid of a process started this way is the command's own pid.
    """
    if ns is None:
        return list(argv)
    return ["ip", "netns", "exec", ns, *argv]


def ns_run(ns: str | None, argv: Sequence[str], check: bool = True, input_text: str | None = None) -> str:
    """Given a namespace and an argv, run it there and return its stdout."""
    return run(ns_argv(ns, argv), check=check, input_text=input_text).stdout


def list_netns(prefix: str = "") -> list[str]:
    """Given a name prefix, return the names of existing namespaces with it."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def netns_exists(name: str) -> bool:
    """Given a namespace name, return whether it exists."""
    return (NETNS_DIR / name).exists()


def add_netns(name: str) -> None:
    """Given a name, create the namespace with its loopback up."""
    run(["ip", "netns", "add", name])
    # Loopback is down in a fresh namespace; ping to local addresses and the
    # probers' own HTTP servers need it.
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_pids(name: str) -> list[int]:
    """Given a namespace name, return the pids of processes inside it."""
    result = run(["ip", "netns", "pids", name], check=False)
    return [int(tok) for tok in result.stdout.split() if tok.isdigit()]


def delete_netns(name: str, timeout: float = 5.0) -> None:
    """Given a namespace name, kill every process in it and delete it.

    Killing first matters: a namespace whose processes live on is only
    unmounted by `ip netns del`, and its interfaces (a wireguard-go TUN, a
    prober's listening socket) would stay alive, invisible to later cleanups.
    """
    if not netns_exists(name):
        return
    for pid in netns_pids(name):
        kill_pid(pid, timeout=timeout)
    run(["ip", "netns", "del", name], check=False)


def add_veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """Given two namespaces and an interface name for each, create a veth
    pair between them and bring both ends up."""
    run(["ip", "-n", ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b])
    link_up(ns_a, name_a)
    link_up(ns_b, name_b)


def add_dummy(ns: str, name: str) -> None:
    """Given a namespace and a name, create a dummy interface there, up."""
    run(["ip", "-n", ns, "link", "add", name, "type", "dummy"])
    link_up(ns, name)


def link_up(ns: str, dev: str) -> None:
    """Given a namespace and a device, set the device up."""
    run(["ip", "-n", ns, "link", "set", dev, "up"])


def add_address(ns: str, dev: str, cidr: str) -> None:
    """Given a namespace, a device and an address/prefix, add the address."""
    run(["ip", "-n", ns, "addr", "add", cidr, "dev", dev])


def add_route(ns: str, dest: str, via: str | None = None, dev: str | None = None) -> None:
    """Given a namespace, a destination and a gateway and/or device, add (or
    replace) the route."""
    argv = ["ip", "-n", ns, "route", "replace", dest]
    if via:
        argv += ["via", via]
    if dev:
        argv += ["dev", dev]
    run(argv)


def enable_forwarding(ns: str) -> None:
    """Given a namespace, enable IPv4 forwarding inside it (per-namespace
    sysctl; the root namespace's setting is not touched)."""
    ns_run(ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def loss_rule(percent: float) -> str | None:
    """Given a loss percentage, return the nft verdict expression for it
    (None for no loss).

    100% is a plain `drop`, because `numgen random mod 100 < 100` is true for
    every packet anyway but a plain drop reads unambiguously in `nft list`.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"loss percent must be within [0, 100], got {percent!r}")
    n = round(percent)
    if n == 0:
        return None
    if n >= 100:
        return "drop"
    return f"numgen random mod 100 < {n} drop"


def set_loss(
    ns: str,
    percent: float,
    match: str,
    key: str = "default",
    hooks: Iterable[str] = ("forward", "output"),
) -> None:
    """Given a namespace, a loss percentage, an nft match expression (e.g.
    `ip daddr 10.200.1.2`) and a key naming this loss, make that share of
    matching packets be dropped in the given hooks; 0 removes the loss.

    Each key owns one regular chain `loss_KEY` that the hook chains jump to;
    setting a new loss flushes and refills only that chain, so losses for
    different servers are independent and changing one never leaves a
    window where the others are missing. The default hooks catch both
    forwarded traffic (the VPN client's WireGuard packets crossing the
    router) and traffic the namespace sends itself (a prober inside it).
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"loss key must be [A-Za-z0-9_]{{1,40}}, got {key!r}")
    verdict = loss_rule(percent)
    chain = f"loss_{key}"
    hooks = list(hooks)
    script = [f"add table inet {NFT_TABLE}"]
    for hook in hooks:
        script.append(f"add chain inet {NFT_TABLE} {hook} {{ type filter hook {hook} priority 0; policy accept; }}")
    script.append(f"add chain inet {NFT_TABLE} {chain}")
    script.append(f"flush chain inet {NFT_TABLE} {chain}")
    if verdict is not None:
        script.append(f"add rule inet {NFT_TABLE} {chain} {match} {verdict}")
    ns_run(ns, ["nft", "-f", "-"], input_text="\n".join(script) + "\n")
    # The jump is added once per hook; `add rule` is not idempotent, so look
    # for it first.
    for hook in hooks:
        listing = ns_run(ns, ["nft", "list", "chain", "inet", NFT_TABLE, hook])
        if f"jump {chain}" not in listing:
            ns_run(ns, ["nft", "add", "rule", "inet", NFT_TABLE, hook, "jump", chain])


def list_loss_rules(ns: str) -> str:
    """Given a namespace, return the text of the lab's nft table there."""
    return ns_run(ns, ["nft", "list", "table", "inet", NFT_TABLE], check=False)
