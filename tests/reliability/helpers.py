"""What the reliability tests share: an installation on disk, the real
commands run as processes, a fake Prometheus in this process, and the one
check of everything a crash or a race must never break.

A plain module, not a conftest, because the crash driver imports it in a
fresh interpreter of its own.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.commands import command_argv
from tests.conftest import without_probation, write_wireguard_configs
from wgfailover.state import SwitchRecord

SERVERS = {"server1": "192.0.2.10", "server2": "192.0.2.20", "server3": "192.0.2.30", "server4": "192.0.2.40"}
# pending-reason.json: left by a health check killed while its failover_command ran.
STATE_FILES = {"current", "health-failures", "history.jsonl", "last-check.json", "lock", "pending-reason.json"}
# fsutil's temp names: a dot, the target's name, 8 hex digits, ".tmp".
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.tmp")
_METRIC_LINE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? \S+")


@dataclass(frozen=True)
class Install:
    """One installation under root: config, WireGuard configs, state, link, textfile."""

    root: Path
    config: Path
    servers: tuple[str, ...]

    @property
    def config_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def link(self) -> Path:
        return self.root / "wg-active.conf"

    @property
    def textfile(self) -> Path:
        return self.root / "wg_failover.prom"

    def read(self, name: str) -> bytes | None:
        try:
            return (self.state_dir / name).read_bytes()
        except FileNotFoundError:
            return None

    def history(self) -> list[SwitchRecord]:
        text = (self.read("history.jsonl") or b"").decode()
        return [SwitchRecord.from_json(json.loads(line)) for line in text.splitlines()]

    def snapshot(self) -> dict[str, Any]:
        """Every file a command may change, to compare before and after."""
        files = {name: self.read(name) for name in sorted(STATE_FILES - {"lock"})}
        link = os.readlink(self.link) if self.link.is_symlink() else None
        metrics = self.textfile.read_bytes() if self.textfile.exists() else None
        return {"state": files, "link": link, "metrics": metrics}


def write_install(
    root: Path,
    *,
    prometheus_url: str | None = None,
    top: str = "",
    extra: str = "",
    servers: dict[str, str] | None = None,
    restart_command: Sequence[str] = ("true",),
    state_dir: Path | None = None,
    link: Path | None = None,
    textfile_dir: Path | None = None,
) -> Install:
    """Given a directory, write a complete installation into it and return it."""
    servers = SERVERS if servers is None else servers
    root.mkdir(parents=True, exist_ok=True)
    write_wireguard_configs(root / "secrets", servers)
    prometheus = f'[prometheus]\nurl = "{prometheus_url}"\ntimeout = 10\n' if prometheus_url else ""
    text = (
        f'config_dir = "{root / "secrets"}"\n'
        f'active_link = "{link or root / "wg-active.conf"}"\n'
        f'state_dir = "{state_dir or root / "state"}"\n'
        f'textfile_dir = "{textfile_dir or root}"\n'
        f"restart_command = {json.dumps(list(restart_command))}\n"
        f"{top}\n"
        + "".join(f"[servers.{name}]\n" for name in servers)
        + f"\n{prometheus}\n{without_probation(extra)}\n"
    )
    (root / "config.toml").write_text(text)
    return Install(root=root, config=root / "config.toml", servers=tuple(servers))


def run(command: str, install: Install, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run one of the console scripts against the installation; never raises for its exit code."""
    env = {**os.environ, "WG_FAILOVER_CONFIG": str(install.config)}
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run(
        [*command_argv(command), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def temp_files(directory: Path) -> list[str]:
    """Given a directory, return the names of the atomic-write temp files in it."""
    try:
        return sorted(name for name in os.listdir(directory) if TEMP_NAME.fullmatch(name))
    except FileNotFoundError:
        return []


def check_state(install: Install, *, chain: bool = False, seqs: bool = True) -> list[str]:
    """
    Given an installation, return every broken invariant (empty: all hold):
    `current` is a configured name and a newline, the link points at an
    existing config of a configured server, every history line is a switch
    record with consecutive seqs (unless not seqs; with chain, each switch starts where
    the previous one ended), the counter and the metrics file are complete,
    and the state directory holds nothing but its files and temp files.
    """
    problems: list[str] = []
    current = install.read("current")
    names = set(install.servers)
    if current is None or not current.endswith(b"\n") or current[:-1].decode(errors="replace") not in names:
        problems.append(f"current is {current!r}")
    if not install.link.is_symlink():
        problems.append(f"{install.link} is not a symlink")
    else:
        target = Path(os.readlink(install.link))
        if target.parent != install.config_dir or target.name not in names or not target.is_file():
            problems.append(f"link points at {target}")
    try:
        history = install.history()
    except (ValueError, KeyError, TypeError) as error:
        problems.append(f"history does not parse: {error!r}: {install.read('history.jsonl')!r}")
        history = []
    numbers = [record.seq for record in history]
    if seqs and numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        problems.append(f"history seqs are not consecutive: {numbers}")
    if chain:
        for before, after in zip(history, history[1:]):
            if after.from_server != before.to_server:
                problems.append(f"switch {after.seq} starts at {after.from_server}, not at {before.to_server}")
    failures = install.read("health-failures")
    if failures is not None and not re.fullmatch(rb"\d+\n", failures):
        problems.append(f"health-failures is {failures!r}")
    last_check = install.read("last-check.json")
    if last_check is not None:
        try:
            json.loads(last_check)
        except ValueError:
            problems.append(f"last-check.json is {last_check!r}")
    if install.textfile.exists():
        text = install.textfile.read_text()
        lines = text.splitlines()
        complete = text.endswith("\n") and any(line.startswith("vpn_server_info") for line in lines)
        if not complete or not all(line.startswith("#") or _METRIC_LINE.fullmatch(line) for line in lines):
            problems.append(f"metrics file is incomplete: {text!r}")
    for name in os.listdir(install.state_dir) if install.state_dir.exists() else []:
        if name not in STATE_FILES and not TEMP_NAME.fullmatch(name):
            problems.append(f"unexpected file in the state directory: {name}")
    return problems


# --- processes --------------------------------------------------------------


def wait_all(processes: Sequence[subprocess.Popen[str]], deadline: float) -> list[tuple[int, str, str]]:
    """
    Given started processes and a deadline in seconds, return (exit code,
    stdout, stderr) of each. Raise AssertionError naming those still running
    past the deadline (they are killed).
    """
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=deadline)
            results.append((process.returncode, out, err))
    except subprocess.TimeoutExpired:
        stuck = [process.args for process in processes if process.poll() is None]
        raise AssertionError(f"still running after {deadline}s (deadlock?): {stuck}") from None
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


# --- a fake Prometheus -----------------------------------------------------------


@dataclass
class FakePrometheus:
    """
    A real HTTP server in this process answering /api/v1/query. `answer` maps
    the PromQL of a request to (status, headers, body); by default every
    query gets a vector of one sample, `loss`. Seen requests are kept.
    """

    loss: float = 0.5
    answer: Callable[[str], tuple[int, dict[str, str], bytes]] | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    reason: str | None = None  # the status line's phrase; None: the standard one

    def default_answer(self, query: str) -> tuple[int, dict[str, str], bytes]:
        body = {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(self.loss)]}]},
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def vector_body(value: float) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}}
    ).encode()


def serve(fake: FakePrometheus, tls: tuple[Path, Path] | None = None) -> Iterator[FakePrometheus]:
    """
    Run fake on a loopback port until the generator is closed; yield it with
    its url set. With tls (certificate, key), serve HTTPS.
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            query = form.get("query", [""])[0]
            with lock:
                fake.requests.append({"path": self.path, "query": query, "headers": dict(self.headers)})
            status, headers, body = (fake.answer or fake.default_answer)(query)
            self.send_response(status, fake.reason)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def refusing_port() -> Iterator[int]:
    """Yield a loopback port that refuses connections: bound, never listening, until closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
