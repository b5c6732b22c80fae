"""Real Prometheus, VictoriaMetrics and smokeping_prober for tests and the lab.

Binaries are the Debian packages' (`prometheus` 2.42, `victoria-metrics`
1.79, `prometheus-smokeping-prober` 0.6.1); a path can be passed to use
others.

smokeping_prober 0.6.1 (Debian binary `/usr/bin/prometheus-smokeping-prober`;
upstream calls it `smokeping_prober`) flags used here:
``--config.file=FILE`` (targets with per-target `interval`; the `-i,
--ping.interval` flag only applies to hosts given as arguments),
``--web.listen-address=HOST:PORT`` (repeatable), ``--privileged`` (raw ICMP
sockets; we run as root, so no ping_group_range needed).
It exits on an empty config file, so an empty target list is written as
`targets: []`; never rely on Debian's default config, which pings localhost.

Labels it exports (0.6.1): every `smokeping_*` series carries exactly
``host`` (the target as written in the config) and ``ip`` (the address it
resolved to), e.g.::

    smokeping_requests_total{host="10.200.1.2",ip="10.200.1.2"} 71
    smokeping_response_duration_seconds_count{host="10.200.1.2",ip="10.200.1.2"} 60

There is no `source` label in this version. Prometheus adds `job` and
`instance` at scrape time. Note: the prober starts its pingers 500 ms apart
before it listens, and pings sent in that start-up phase are counted in
`smokeping_requests_total` but their replies are not counted in
`..._response_duration_seconds_count`, so the raw counters differ by a
constant offset; `rate()` over scraped samples is unaffected.

Prometheus and VictoriaMetrics both read YAML; we write JSON, which is valid
YAML, so no third-party YAML library is needed.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from wglab import processes
from wglab.netns import ns_argv
from wglab.processes import GiveUp, Process, free_port, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_BIN = "/usr/bin/prometheus"
VICTORIA_METRICS_BIN = "/usr/bin/victoria-metrics"
SMOKEPING_BIN = "/usr/bin/prometheus-smokeping-prober"

ScrapeJobs = Sequence[tuple[str, Sequence[str]]]

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: float | str) -> float:
    """Given seconds or a duration like "200ms"/"1s"/"5m", return seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION_RE.match(value.strip())
    if not match:
        raise ValueError(f"bad duration {value!r}; use e.g. 200ms, 1s, 5m")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(value: float | str) -> str:
    """Given seconds or a duration string, return it in whole milliseconds
    ("1000ms"), a form Prometheus, VictoriaMetrics and smokeping all parse."""
    ms = max(1, math.ceil(parse_duration(value) * 1000))
    return f"{ms}ms"


def scrape_config(scrape_jobs: ScrapeJobs, scrape_interval: float | str = "1s") -> dict[str, Any]:
    """Given (job_name, [host:port, ...]) pairs and an interval, return a
    prometheus.yml as a dict.

    scrape_timeout is set to the interval because Prometheus rejects a
    timeout longer than the interval, and its default (10s) is longer than
    the 1s we use in tests. A job named twice is one job with both target
    lists (Prometheus refuses a duplicate job_name): several labs' external
    probers share the "smokeping" job, as one host's instances do.
    """
    interval = format_duration(scrape_interval)
    jobs: dict[str, list[str]] = {}
    for job, targets in scrape_jobs:
        jobs.setdefault(job, []).extend(targets)
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in jobs.items()
        ],
    }


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """Given a URL, return (status, body) of a GET; HTTP errors are returned,
    not raised."""
    try:
        # Only ever http://127.0.0.1 URLs built by this module.
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


_Started = TypeVar("_Started", bound="_StartStop")


class _StartStop:
    """A background service used as a context manager: stopped also when starting fails."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Started) -> _Started:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _QueryableServer(_StartStop):
    """Shared lifecycle and query API of Prometheus and VictoriaMetrics."""

    kind = "server"
    ready_path = "/"

    def __init__(
        self,
        scrape_jobs: ScrapeJobs = (),
        scrape_interval: float | str = "1s",
        workdir: Path | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 30.0,
    ) -> None:
        self.scrape_jobs = [(job, list(targets)) for job, targets in scrape_jobs]
        self.scrape_interval = scrape_interval
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"wglab-{self.kind}-"))
        self.binary = binary or self.default_binary()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.port = 0
        self.process: Process | None = None

    # -- to be provided by subclasses --
    def default_binary(self) -> str:
        """Given nothing, return the default binary path."""
        raise NotImplementedError

    def argv(self, config: Path, storage: Path, listen: str) -> list[str]:
        """Given config path, storage dir and listen address, return argv."""
        raise NotImplementedError

    # -- lifecycle --
    @property
    def url(self) -> str:
        """Given a started server, return its base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        """Given a server, return the path of its generated scrape config."""
        return self.workdir / "prometheus.yml"

    def write_config(self) -> None:
        """Given the scrape jobs, (re)write the scrape config file."""
        self.config_path.write_text(json.dumps(scrape_config(self.scrape_jobs, self.scrape_interval), indent=2))

    def start(self) -> None:
        """Given a configured server, start it and return once it is ready.

        free_port() can race with another process binding the port before
        we do, so a server that dies at start-up is retried on a new port.
        """
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.kind} binary not found: {self.binary}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        storage = self.workdir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for attempt in range(3):
            self.port = free_port()
            argv = self.argv(self.config_path, storage, f"127.0.0.1:{self.port}") + self.extra_args
            self.process = processes.start(self.kind, argv, self.workdir / f"{self.kind}-{attempt}.log")
            try:
                wait_until(self._ready, self.start_timeout, 0.1, what=f"{self.kind} ready on {self.url}")
                return
            except (TimeoutError, GiveUp) as exc:
                last_error = exc
                processes.stop(self.process)
        tail = self.process.log_tail() if self.process else ""
        raise RuntimeError(f"{self.kind} did not start: {last_error}\n--- log ---\n{tail}")

    def _ready(self) -> bool:
        """Given a starting server, return whether it answers its ready
        endpoint; raise if the process already died (fail fast)."""
        if self.process is None:
            raise RuntimeError(f"{self.kind} was not started")
        if not self.process.alive():
            raise GiveUp(f"{self.kind} exited with {self.process.popen.returncode}")
        status, _ = http_get(self.url + self.ready_path, timeout=1.0)
        return status == 200

    def stop(self) -> None:
        """Given a server, stop it (idempotent) and remove its temp dir if we
        created it."""
        if self.process is not None:
            processes.stop(self.process)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- queries --
    def query(self, promql: str, timeout: float = 5.0, at: float | None = None) -> list[dict[str, Any]]:
        """Given a PromQL expression (and optionally the unix time to evaluate
        it at; default now), return the instant query's result list (POST form
        to /api/v1/query); raise RuntimeError on an API error."""
        form = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        data = urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url + "/api/v1/query", data=data, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{self.kind} query failed ({exc.code}): {exc.read()[:500]!r}") from exc
        if body.get("status") != "success":
            raise RuntimeError(f"{self.kind} query failed: {body}")
        result = body["data"]["result"]
        return list(result) if isinstance(result, list) else [result]

    def query_values(self, promql: str, label: str) -> dict[str, float]:
        """Given a PromQL expression and a label, return {label value: value}
        for each returned series (NaN kept as NaN)."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql)}

    def wait_for_series(self, promql: str, timeout: float = 30.0, min_series: int = 1) -> list[dict[str, Any]]:
        """Given a PromQL expression, poll until it returns at least
        min_series series and return them; TimeoutError otherwise."""

        def enough() -> list[dict[str, Any]] | None:
            result = self.query(promql)
            return result if len(result) >= min_series else None

        return wait_until(enough, timeout, 0.25, what=f"{min_series}+ series for {promql!r} from {self.kind}")


class PrometheusServer(_QueryableServer):
    """A real `prometheus` on a free 127.0.0.1 port with temp storage.

    with PrometheusServer([("smokeping", ["127.0.0.1:9374"])]) as prom:
        prom.wait_for_series('smokeping_requests_total')
    """

    kind = "prometheus"
    ready_path = "/-/ready"

    def default_binary(self) -> str:
        """Given nothing, return the Debian prometheus binary path."""
        return PROMETHEUS_BIN

    def argv(self, config: Path, storage: Path, listen: str) -> list[str]:
        """Given config path, storage dir and listen address, return argv."""
        return [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={listen}",
            # Tests never need console templates; Debian's defaults point at
            # /etc paths that may be missing.
            "--web.console.templates=/dev/null",
            "--web.console.libraries=/dev/null",
            "--log.level=warn",
        ]


class VictoriaMetricsServer(_QueryableServer):
    """A real single-node `victoria-metrics` scraping like Prometheus; the
    query API is the same /api/v1/query."""

    kind = "victoria-metrics"
    ready_path = "/health"

    def default_binary(self) -> str:
        """Given nothing, return the Debian victoria-metrics binary path."""
        return VICTORIA_METRICS_BIN

    def argv(self, config: Path, storage: Path, listen: str) -> list[str]:
        """Given config path, storage dir and listen address, return argv."""
        return [
            self.binary,
            f"-promscrape.config={config}",
            f"-httpListenAddr={listen}",
            f"-storageDataPath={storage}",
            "-retentionPeriod=1d",
            # VictoriaMetrics hides the newest 30s of data from queries by
            # default (-search.latencyOffset) and caches responses; tests
            # query data that is seconds old.
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]


def smokeping_config(targets: Sequence[str], interval: float | str) -> dict[str, Any]:
    """Given ping targets and an interval, return a smokeping_prober config.

    An empty target list is written as `targets: []` because 0.6.1 exits on
    an empty config file.
    """
    if not targets:
        return {"targets": []}
    return {
        "targets": [
            {
                "hosts": list(targets),
                "interval": format_duration(interval),
                "network": "ip4",
                "protocol": "icmp",
                "size": 56,
            }
        ]
    }


class SmokepingProber(_StartStop):
    """A real smokeping_prober pinging targets, optionally inside a netns.

    Without netns it listens on listen_address (default a free 127.0.0.1
    port). With netns it listens inside the namespace (default
    127.0.0.1:9374 there) and a forwarder (wglab.forward) exposes it on a
    free 127.0.0.1 port of the root namespace; `scrape_target` is always the
    address Prometheus in the root namespace should scrape.
    """

    def __init__(
        self,
        targets: Sequence[str],
        netns: str | None = None,
        listen_address: str | None = None,
        interval: float | str = "200ms",
        workdir: Path | None = None,
        name: str = "smokeping",
        binary: str = SMOKEPING_BIN,
        privileged: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        self.targets = list(targets)
        self.netns = netns
        self.interval = interval
        self.name = name
        self.binary = binary
        self.privileged = privileged
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="wglab-smokeping-"))
        if listen_address is None:
            listen_address = "127.0.0.1:9374" if netns else f"127.0.0.1:{free_port()}"
        self.listen_address = listen_address
        self.scrape_target = listen_address
        self.process: Process | None = None
        self.forwarder: Process | None = None

    @property
    def config_path(self) -> Path:
        """Given a prober, return the path of its generated config."""
        return self.workdir / f"{self.name}.yml"

    def start(self) -> None:
        """Given a configured prober, start it (and its forwarder) and return
        once its /metrics answers through the scrape target."""
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"smokeping prober binary not found: {self.binary}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(smokeping_config(self.targets, self.interval), indent=2))
        argv = [self.binary, f"--config.file={self.config_path}", f"--web.listen-address={self.listen_address}"]
        if self.privileged:
            argv.append("--privileged")
        self.process = processes.start(self.name, ns_argv(self.netns, argv), self.workdir / f"{self.name}.log")
        if self.netns:
            port = free_port()
            self.scrape_target = f"127.0.0.1:{port}"
            fwd = [
                sys.executable,
                "-m",
                "wglab.forward",
                "--listen",
                self.scrape_target,
                "--netns",
                self.netns,
                "--connect",
                self.listen_address,
            ]
            self.forwarder = processes.start(
                f"{self.name}-forward",
                fwd,
                self.workdir / f"{self.name}-forward.log",
                env={"PYTHONPATH": str(REPO_ROOT)},
            )
        try:
            wait_until(self._ready, self.start_timeout, 0.1, what=f"{self.name} /metrics on {self.scrape_target}")
        except (TimeoutError, GiveUp) as exc:
            tail = self.process.log_tail()
            raise RuntimeError(f"{self.name} did not start: {exc}\n--- log ---\n{tail}") from exc

    def _ready(self) -> bool:
        """Given a starting prober, return whether /metrics answers; raise if
        the prober or its forwarder already died."""
        for proc in (self.process, self.forwarder):
            if proc is not None and not proc.alive():
                raise GiveUp(f"{proc.name} exited with {proc.popen.returncode}: {proc.log_tail(1000)}")
        status, _ = http_get(f"http://{self.scrape_target}/metrics", timeout=1.0)
        return status == 200

    def metrics(self) -> str:
        """Given a running prober, return its /metrics text."""
        return http_get(f"http://{self.scrape_target}/metrics")[1]

    def stop(self) -> None:
        """Given a prober, stop it and its forwarder (idempotent)."""
        for proc in (self.forwarder, self.process):
            if proc is not None:
                processes.stop(proc)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def exposition_label_value(value: str) -> str:
    """Given a label value, return it escaped for the text exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@contextlib.contextmanager
def serve_exposition(render: Callable[[], bytes]) -> Iterator[str]:
    """
    Given a function returning a text exposition, serve it on a free
    127.0.0.1 port for Prometheus to scrape (any GET path), and yield
    host:port; the server is shut down on exit, whatever happens.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            body = render()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class PrometheusAgent(PrometheusServer):
    """A real `prometheus` in agent mode: scrapes, keeps only a WAL, and
    remote-writes everything to remote_write_url with external_labels added,
    as each host of a fleet ships its probes to a central backend.

    with PrometheusAgent([("smokeping", [exporter])], "http://127.0.0.1:8428/api/v1/write",
                         external_labels={"wg_client": "laptop-17"}) as agent:
        ...
    """

    kind = "prometheus-agent"

    def __init__(
        self,
        scrape_jobs: ScrapeJobs,
        remote_write_url: str,
        external_labels: dict[str, str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(scrape_jobs, **options)
        self.remote_write_url = remote_write_url
        self.external_labels = dict(external_labels or {})

    def write_config(self) -> None:
        """Given the scrape jobs, the remote and the labels, (re)write the agent's config file."""
        config = scrape_config(self.scrape_jobs, self.scrape_interval)
        config["global"]["external_labels"] = self.external_labels
        # Sent within a second, so a test sees the data soon after a scrape.
        config["remote_write"] = [{"url": self.remote_write_url, "queue_config": {"batch_send_deadline": "1s"}}]
        self.config_path.write_text(json.dumps(config, indent=2))

    def argv(self, config: Path, storage: Path, listen: str) -> list[str]:
        """Given config path, storage dir and listen address, return argv (agent mode: no TSDB flags)."""
        return [
            self.binary,
            "--enable-feature=agent",
            f"--config.file={config}",
            f"--storage.agent.path={storage}",
            f"--web.listen-address={listen}",
            "--log.level=warn",
        ]
