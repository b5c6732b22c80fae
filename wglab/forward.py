"""Expose a TCP port that lives inside a network namespace on 127.0.0.1 of
the root namespace.

Why: Prometheus runs in the root namespace on loopback (so wg-failover and
the tests reach it at 127.0.0.1), while the probers run inside the lab's
namespaces. Linking the root namespace to the lab with a veth would put lab
addresses outside the lab's namespaces (and collide between concurrent
labs); a loopback forwarder touches nothing.

How: the process binds its listening socket first, while still in the root
namespace, then enters the target namespace with setns(2). Sockets keep the
namespace they were created in, so the listener stays on root loopback while
every outgoing connection is made inside the lab. setns happens before any
thread exists, so all relay threads inherit the lab namespace.

Usage: python -m wglab.forward --listen 127.0.0.1:PORT --netns NS --connect HOST:PORT
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000


def setns(netns_name: str) -> None:
    """Given a namespace name from `ip netns`, move this thread into it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(Path("/var/run/netns") / netns_name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns_name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def parse_hostport(text: str) -> tuple[str, int]:
    """Given "HOST:PORT", return (host, port)."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    """Given two connected sockets, copy src to dst until EOF or error."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Half-close so the other direction can still finish (HTTP/1.1
        # scrapes close after the response).
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve_one(client: socket.socket, target: tuple[str, int]) -> None:
    """Given an accepted connection and a target, relay between them."""
    try:
        upstream = socket.create_connection(target, timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str] | None = None) -> int:
    """Given command-line arguments, forward connections forever; return
    an exit code when stopped."""
    parser = argparse.ArgumentParser(prog="python -m wglab.forward", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_hostport, required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--connect", type=parse_hostport, required=True)
    args = parser.parse_args(argv)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(64)
    setns(args.netns)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listen, connect = args.listen, args.connect
    print(f"forwarding {listen[0]}:{listen[1]} -> {args.netns}/{connect[0]}:{connect[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(client, args.connect), daemon=True).start()


if __name__ == "__main__":
    raise SystemExit(main())
