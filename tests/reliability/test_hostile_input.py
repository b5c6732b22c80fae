"""Every hostile input gets a result or a one-line error with its exit code.

Property-based (hypothesis): random TOML documents and random bytes as the
config; random bytes, text and JSON in every state file; random text as a
WireGuard config; random JSON, bytes and a huge body from Prometheus; and
host label values full of quotes and regex metacharacters, checked against
a real Prometheus (skipped without the binary) to show that escaping keeps
the query's meaning: the matcher selects exactly the servers asked about.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests_mock
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.reliability.helpers import FakePrometheus, check_state, serve, write_install
from wgfailover.commands import wg_failover, wg_health_check, wg_select
from wgfailover.config import Config, FailoverSettings, PrometheusSettings, load_config, parse_config
from wgfailover.errors import ConfigError, PrometheusBadResponse, PrometheusError
from wgfailover.evidence.servers_loss import build_query, read_server_readings
from wgfailover.prometheus import PrometheusClient, Sample
from wgfailover.servers import Server, parse_endpoint_host, resolve_endpoint
from wgfailover.state import StateDir

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
DEEP = b"[" * 100_000  # deeper than Python's json recursion limit


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


def check_config_output_is_clear(result: Result) -> None:
    """--check-config: exit 78 with a line per problem, or 0 with the summary; warnings one line each."""
    assert result.exit_code in (0, 78), result.output
    lines = result.output.splitlines()
    assert "Traceback" not in result.output and "internal error" not in result.output
    errors = [line for line in lines if ": error: " in line]
    assert (len(errors) >= 1) if result.exit_code == 78 else not errors, result.output
    other = [line for line in lines if ": error: " not in line and ": warning: " not in line]
    assert len(other) == (0 if result.exit_code == 78 else 1), result.output


# --- strategies ------------------------------------------------------------------

toml_keys = st.text(min_size=1, max_size=12)
toml_scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["5m", "0s", "-1s", "1e400s", "90", "", "/abs/path", "rel/path", "/with\x00nul", "1h30m", "x"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(toml_keys, children, max_size=4),
    max_leaves=12,
)
TOP = ["config_dir", "active_link", "state_dir", "restart_command", "restart_timeout", "lock_timeout", "textfile_dir"]
SECTIONS = {
    "prometheus": [
        "url",
        "timeout",
        "ca_file",
        "insecure_skip_verify",
        "bearer_token_file",
        "username",
        "password_file",
        "headers",
    ],
    "failover": ["window", "hold_down", "on_prometheus_error", "label", "tie_epsilon", "query", "latency_query"],
    "health": [
        "threshold",
        "max_failures",
        "window",
        "min_window",
        "selector",
        "query",
        "on_no_data",
        "failover_command",
        "interface",
        "netns",
        "handshake_timeout",
    ],
}
server_names = st.one_of(
    st.sampled_from(["server1", "a.b", "..", ".hidden", "a/b", "../x", "-x", "x" * 300]), st.text(max_size=20)
)
documents = st.fixed_dictionaries(
    {},
    optional={
        **{key: toml_values for key in TOP},
        "servers": st.dictionaries(
            server_names,
            st.one_of(st.dictionaries(st.sampled_from(["endpoint", "endpiont"]), toml_values), toml_scalars),
            max_size=3,
        ),
        **{
            section: st.one_of(st.dictionaries(st.sampled_from([*keys, "typo"]), toml_values, max_size=5), toml_scalars)
            for section, keys in SECTIONS.items()
        },
        "junk": toml_values,
    },
)


def toml_value(value: Any) -> str:
    """Given a TOML-representable value, return it as an inline TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key, ensure_ascii=False)} = {toml_value(value)}\n" for key, value in document.items())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)


# --- config files ------------------------------------------------------------


def assert_usable(config: Config) -> None:
    """A config that loads never hands the OS a path or argv it would refuse as a value."""
    paths = [config.config_dir, config.active_link, config.state_dir, config.textfile_dir]
    paths += [config.prometheus.ca_file, config.prometheus.bearer_token_file, config.prometheus.password_file]
    assert all("\x00" not in str(path) for path in paths if path is not None)
    argvs = [config.restart_command, config.health.failover_command or ()]
    assert all("\x00" not in argument for argv in argvs for argument in argv)
    for server in config.servers:
        assert server.config_path.parent == config.config_dir


@settings(max_examples=300, deadline=None)
@given(document=documents)
def test_random_toml_documents_give_a_config_or_a_config_error(document: dict[str, Any]) -> None:
    try:
        config = parse_config(document, Path("/etc/wg-failover/config.toml"))
    except ConfigError as error:
        assert one_line(str(error))
        assert error.exit_code == 78
    else:
        assert_usable(config)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(document=documents)
def test_random_toml_files_check_with_exit_0_or_78_and_one_line(tmp_path: Path, document: dict[str, Any]) -> None:
    path = tmp_path / "config.toml"
    path.write_text(to_toml(document))
    result = CliRunner().invoke(wg_select.main, ["--config", str(path), "--check-config"])
    check_config_output_is_clear(result)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(raw=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)))
@example(raw=b"\xff\xfe")
@example(raw=b"servers = " + DEEP)
@example(raw=b'state_dir = "/x\\u0000y"\n[servers.a]\n')
@example(raw=b'restart_command = ["a\\u0000b"]\n[servers.a]\n')
def test_random_bytes_as_config_are_a_config_error_not_a_crash(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(raw)
    try:
        assert_usable(load_config(path))
    except ConfigError as error:
        assert one_line(str(error))
        assert str(path) in str(error)
    for command in (wg_select, wg_failover, wg_health_check):
        result = CliRunner().invoke(command.main, ["--config", str(path), "--check-config"])
        check_config_output_is_clear(result)


@settings(max_examples=200, deadline=None)
@given(name=server_names)
def test_any_accepted_server_name_stays_inside_config_dir(name: str) -> None:
    try:
        config = parse_config({"servers": {name: {}}}, Path("/c.toml"))
    except ConfigError:
        return
    [server] = config.servers
    assert server.config_path.parent == config.config_dir
    assert server.config_path.name == name
    assert name not in (".", "..") and not name.startswith(".")


# --- state files -------------------------------------------------------------------


def history_lines() -> st.SearchStrategy[bytes]:
    field = st.one_of(json_values, st.sampled_from([math.inf, -math.inf, math.nan, 10**400, "1e999", "server1"]))
    record = st.fixed_dictionaries(
        {},
        optional={"seq": field, "time": field, "from": field, "to": field, "reason": field, "losses": field},
    )
    line = st.one_of(record.map(lambda r: json.dumps(r)), json_values.map(json.dumps), st.text(max_size=40))
    return st.lists(line, max_size=5).map(lambda lines: "\n".join(lines).encode())


state_contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from(
        [
            b"",
            b"\n",
            b"../../etc/passwd\n",
            b"server1/../server2\n",
            b"\xef\xbb\xbfserver1\n",
            b"\xb2\n",
            b"9" * 5000,
            b"-1\n",
            DEEP,
        ]
    ),
    history_lines(),
)
STATE_NAMES = ["current", "health-failures", "history.jsonl", "last-check.json"]


@pytest.fixture(scope="module")
def loss_server() -> Iterator[FakePrometheus]:
    yield from serve(FakePrometheus(loss=0.5))


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(contents=st.fixed_dictionaries({name: state_contents for name in STATE_NAMES}))
@example(
    contents={
        "current": b"x",
        "health-failures": b"\xb2\n",
        "history.jsonl": b'{"seq": Infinity, "time": 1, "to": "a"}',
        "last-check.json": b'{"time": NaN}',
    }
)
@example(contents={"current": DEEP, "health-failures": b"9" * 5000, "history.jsonl": DEEP, "last-check.json": DEEP})
@example(
    contents={
        "current": b"server2\n",
        "health-failures": b"1\n",
        "history.jsonl": b'{"seq": 1, "time": NaN, "to": "server2"}',
        "last-check.json": b'{"time": Infinity}',
    }
)
@example(
    contents={
        "current": b"",
        "health-failures": b"",
        "history.jsonl": b'{"seq": 1, "time": 1' + b"0" * 400 + b', "to": "server1"}',
        "last-check.json": b'{"time": 1' + b"0" * 400 + b"}",
    }
)
def test_garbage_in_every_state_file_is_replaced_and_every_command_still_works(
    tmp_path: Path, loss_server: FakePrometheus, contents: dict[str, bytes]
) -> None:
    install = write_install(
        tmp_path, prometheus_url=loss_server.url, extra='[health]\nmax_failures = 1000\nmin_window = "1s"\n'
    )
    install.state_dir.mkdir(exist_ok=True)
    for name, content in contents.items():
        (install.state_dir / name).write_bytes(content)
    runner = CliRunner()
    config = ["--config", str(install.config)]

    # Health first: it reads every file as it was written here.
    health = runner.invoke(wg_health_check.main, config)
    assert health.exit_code == 0, health.output
    select = runner.invoke(wg_select.main, config)
    assert select.exit_code == 0, select.output
    current = install.read("current").decode().strip()
    target = next(name for name in install.servers if name != current)
    failover = runner.invoke(wg_failover.main, [*config, "--to", target])
    assert failover.exit_code == 0, failover.output
    for result in (health, select, failover):
        assert "Traceback" not in result.output and "internal error" not in result.output, result.output

    # A hand-made history may hold records out of order; they are kept as they are.
    assert check_state(install, seqs=False) == []
    assert install.history()[-1].to_server == target
    assert install.read("current") == f"{target}\n".encode()
    assert StateDir(install.state_dir).read_last_check() is not None


# --- WireGuard configs -------------------------------------------------------------

wireguard_texts = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.tuples(
            st.sampled_from(["Endpoint", "endpoint", "ENDPOINT ", "AllowedIPs", "# Endpoint", "Endpoint#"]),
            st.text(alphabet=string.printable + "[]:#=üß", max_size=40),
        ),
        max_size=6,
    ).map(lambda pairs: "\n".join(f"{key} = {value}" for key, value in pairs)),
)


@settings(max_examples=500, deadline=None)
@given(text=wireguard_texts)
@example(text="Endpoint = [::1\n")
@example(text="Endpoint = :\n")
@example(text="Endpoint = []:51820\n")
def test_any_wireguard_config_text_gives_a_host_or_none(text: str) -> None:
    host = parse_endpoint_host(text)
    assert host is None or (isinstance(host, str) and host and host in text)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(raw=st.binary(max_size=300))
def test_any_wireguard_config_file_gives_an_endpoint_or_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "server1"
    path.write_bytes(raw)
    try:
        assert resolve_endpoint(Server("server1", path))
    except ConfigError as error:
        assert one_line(str(error))
        assert "servers.server1.endpoint" in str(error)


# --- Prometheus responses ------------------------------------------------------------

URL = "http://prometheus.test:9090"
near_valid = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "error", None, 1])},
    optional={
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"resultType": st.sampled_from(["vector", "scalar", "matrix", "string", None, 5])},
                optional={
                    "result": st.one_of(
                        json_values,
                        st.lists(
                            st.fixed_dictionaries(
                                {},
                                optional={
                                    "metric": st.one_of(
                                        json_values,
                                        st.dictionaries(st.text(max_size=5), st.text(max_size=5) | json_values),
                                    ),
                                    "value": st.one_of(json_values, st.tuples(json_values, json_values).map(list)),
                                },
                            ),
                            max_size=4,
                        ),
                    )
                },
            ),
        ),
        "error": json_values,
        "errorType": json_values,
        "warnings": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    near_valid.map(lambda value: json.dumps(value).encode()),
    st.just(DEEP),
)


@settings(max_examples=400, deadline=None)
@given(
    body=bodies,
    status=st.sampled_from([200, 200, 200, 204, 302, 400, 401, 404, 422, 500, 503]),
    content_type=st.sampled_from(["application/json", "text/plain", "text/html", ""]),
)
@example(body=DEEP, status=200, content_type="application/json")
@example(
    body=b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[0,' + DEEP + b"]}]}}",
    status=200,
    content_type="application/json",
)
def test_any_prometheus_answer_gives_samples_or_a_prometheus_error(body: bytes, status: int, content_type: str) -> None:
    headers = {"Content-Type": content_type, "Location": "http://elsewhere.test/"}
    with requests_mock.Mocker() as mock:
        mock.post(f"{URL}/api/v1/query", status_code=status, content=body, headers=headers)
        client = PrometheusClient(PrometheusSettings(url=URL, timeout=10))
        try:
            samples = client.query("up")
        except PrometheusError as error:
            assert one_line(str(error)), str(error)
            assert error.exit_code == 69
        else:
            assert all(isinstance(sample, Sample) and isinstance(sample.value, float) for sample in samples)


def test_a_huge_body_is_a_bad_response_not_read_to_the_end() -> None:
    with requests_mock.Mocker() as mock:
        mock.post(
            f"{URL}/api/v1/query", content=b" " * (17 * 1024 * 1024), headers={"Content-Type": "application/json"}
        )
        with pytest.raises(PrometheusBadResponse, match="sent more than"):
            PrometheusClient(PrometheusSettings(url=URL, timeout=10)).query("up")


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES)
@given(body=bodies, status=st.sampled_from([200, 400, 500]))
@example(body=DEEP, status=200)
def test_wg_failover_falls_back_to_random_on_any_prometheus_answer(tmp_path: Path, body: bytes, status: int) -> None:
    install = write_install(tmp_path, prometheus_url=URL)
    install.state_dir.mkdir(exist_ok=True)
    (install.state_dir / "current").write_text("server1\n")
    with requests_mock.Mocker() as mock:
        mock.post(f"{URL}/api/v1/query", status_code=status, content=body)
        result = CliRunner().invoke(wg_failover.main, ["--config", str(install.config)])
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert install.read("current") != b"server1\n"
    assert check_state(install) == []


# --- host labels against a real Prometheus ---------------------------------------------

# Values that differ only where a missing escape would let one match another.
NASTY_HOSTS = [
    "203.0.113.10",
    "203x0x113x10",
    "a|b",
    "a",
    "b",
    "(x)",
    "x",
    "a+",
    "aa",
    ".*",
    "",
    "[ab]",
    "{2}",
    "back\\slash",
    "back\\\\slash",
    'quo"te',
    'quo\\"te',
    "^$",
    "$",
    "new\nline",
    "tab\there",
    "dollar$1",
    "ümlaut",
    "?",
    "a?",
    "\\d",
    "d",
    "\\",
    '"',
    "a|b|c",
    "x)|(y",
    '"}[1m]) or vector(1) #',
]


def nasty_hosts() -> list[str]:
    rng = random.Random(2024)
    alphabet = ".+*?()|[]{}^$\\\"'-: aZ9\t\nü"
    hosts = list(NASTY_HOSTS)
    while len(hosts) < 80:
        candidate = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
        if candidate not in hosts:
            hosts.append(candidate)
    return [host for host in hosts if host]  # an empty label value is no label at all


HOSTS = nasty_hosts()
LOSS = {host: index / 100 for index, host in enumerate(HOSTS)}


@pytest.fixture(scope="module")
def prometheus_with_nasty_hosts() -> Iterator[Any]:
    """A real Prometheus scraping smokeping-like counters for every nasty host; yields it."""
    if shutil.which("prometheus") is None:
        pytest.skip("the prometheus binary is not installed")
    from wglab.prometheus import PrometheusServer, exposition_label_value, serve_exposition

    started = time.monotonic()

    def exposition() -> bytes:
        elapsed = time.monotonic() - started
        lines = []
        for host in HOSTS:
            label = exposition_label_value(host)
            requests = 10 * elapsed
            lines.append(f'smokeping_requests_total{{host="{label}"}} {requests}')
            lines.append(f'smokeping_response_duration_seconds_count{{host="{label}"}} {requests * (1 - LOSS[host])}')
            lines.append(
                f'smokeping_response_duration_seconds_sum{{host="{label}"}} {requests * (1 - LOSS[host]) * 0.01}'
            )
        return ("\n".join(lines) + "\n").encode()

    with (
        serve_exposition(exposition) as exporter,
        PrometheusServer([("smokeping", [exporter])], scrape_interval="1s") as server,
    ):
        # rate() needs two scrapes of every series.
        server.wait_for_series("rate(smokeping_requests_total[1m]) > 0", min_series=len(HOSTS))
        yield server


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(chosen=st.lists(st.sampled_from(HOSTS), min_size=1, max_size=6, unique=True))
@example(chosen=["a|b"])
@example(chosen=[".*"])
@example(chosen=['"}[1m]) or vector(1) #'])
@example(chosen=["back\\slash", 'quo"te', "new\nline"])
def test_escaped_host_matcher_selects_exactly_the_chosen_servers_in_real_prometheus(
    prometheus_with_nasty_hosts: Any, chosen: list[str]
) -> None:
    settings_ = FailoverSettings(window=60)
    endpoints: dict[str, str | None] = {f"server{index}": host for index, host in enumerate(chosen)}
    client = PrometheusClient(PrometheusSettings(url=prometheus_with_nasty_hosts.url, timeout=10))
    samples = client.query(build_query(settings_, chosen))
    assert {sample.labels["host"] for sample in samples} == set(chosen)
    readings = read_server_readings(samples, "host", endpoints)
    for reading in readings:
        assert reading.loss == pytest.approx(LOSS[endpoints[reading.name] or ""], abs=1e-6)
        assert reading.latency == pytest.approx(0.01, rel=1e-6)
