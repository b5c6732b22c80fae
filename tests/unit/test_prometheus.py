"""The Prometheus client: every HTTP edge, the time budget, auth, TLS and escaping.

requests-mock fakes the HTTP layer where a canned answer is enough; a real
socket server on 127.0.0.1 plays the Prometheus that accepts and never
answers, or drips bytes, because only a real socket shows that the budget is
a hard bound and not requests' per-recv timeout.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module
from hypothesis import given, settings
from hypothesis import strategies as st

from wgfailover.config import PrometheusSettings
from wgfailover.errors import (
    ConfigError,
    ExitCode,
    PrometheusBadResponse,
    PrometheusHTTPError,
    PrometheusTimeout,
    PrometheusUnreachable,
)
from wgfailover.prometheus import (
    PrometheusClient,
    Sample,
    escape_label_value,
    escape_regex_value,
)

URL = "http://prometheus.test:9090"
QUERY_URL = f"{URL}/api/v1/query"
TOKEN = "s3cr3t-t0ken-value"
PASSWORD = "hunter2-password"


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_client(url: str | None = URL, clock: Callable[[], float] | None = None, **options: Any) -> PrometheusClient:
    """Return a client for url with the given PrometheusSettings options."""
    prometheus_settings = PrometheusSettings(url=url, **options)
    return PrometheusClient(prometheus_settings, clock=clock or FakeClock())


def vector(*series: tuple[dict[str, str], Any]) -> dict[str, Any]:
    """Return a successful instant-vector answer holding these (labels, value) series."""
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": labels, "value": [1700000000.123, value]} for labels, value in series],
        },
    }


def error_body(error_type: str, error: str) -> dict[str, str]:
    return {"status": "error", "errorType": error_type, "error": error}


# --- answers that parse ---------------------------------------------------------


def test_empty_result_is_an_empty_list(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    assert make_client().query("up") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.25", 0.25),
        ("0", 0.0),
        ("1", 1.0),
        ("-0.5", -0.5),  # smokeping can count more replies than requests; clamping is the caller's
        ("1e-3", 0.001),
        ("1.5E+06", 1.5e6),
        ("+Inf", math.inf),
        ("-Inf", -math.inf),
        (0.5, 0.5),  # a JSON number from a compatible server
    ],
)
def test_numeric_values_parse_to_floats(requests_mock: requests_mock_module.Mocker, raw: Any, expected: float) -> None:
    requests_mock.post(QUERY_URL, json=vector(({"host": "a"}, raw)))
    assert make_client().query("q") == [Sample(labels={"host": "a"}, value=expected)]


def test_nan_parses_to_nan(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector(({"host": "a"}, "NaN")))
    [sample] = make_client().query("q")
    assert math.isnan(sample.value)


def test_every_series_is_returned_with_its_labels(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(
        QUERY_URL,
        json=vector(({"host": "10.0.0.1"}, "0.1"), ({"host": "10.0.0.2"}, "0.2"), ({}, "0.3")),
    )
    assert make_client().query("q") == [
        Sample({"host": "10.0.0.1"}, 0.1),
        Sample({"host": "10.0.0.2"}, 0.2),
        Sample({}, 0.3),
    ]


def test_scalar_result_is_one_unlabelled_sample(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(
        QUERY_URL, json={"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "0.75"]}}
    )
    assert make_client().query("scalar(x)") == [Sample({}, 0.75)]


def test_query_is_sent_as_a_post_form(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    promql = 'sum by (host) (rate(x{host=~"a\\\\.b|c"}[5m]))'
    make_client().query(promql)
    request = requests_mock.last_request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(request.text) == {"query": [promql]}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://mimir.test/prometheus", "http://mimir.test/prometheus/api/v1/query"),
        ("http://mimir.test/prometheus/", "http://mimir.test/prometheus/api/v1/query"),
        ("https://vm.test:8428", "https://vm.test:8428/api/v1/query"),
        ("http://vmselect.test/select/0/prometheus", "http://vmselect.test/select/0/prometheus/api/v1/query"),
    ],
)
def test_path_prefix_in_url_is_kept(requests_mock: requests_mock_module.Mocker, url: str, expected: str) -> None:
    requests_mock.post(expected, json=vector())
    make_client(url=url).query("up")
    assert requests_mock.last_request.url == expected


def test_warnings_in_the_answer_are_logged(
    requests_mock: requests_mock_module.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    body = vector(({"host": "a"}, "0"))
    body["warnings"] = ["remote read failed: partial data"]
    requests_mock.post(QUERY_URL, json=body)
    with caplog.at_level(logging.WARNING, logger="wgfailover.prometheus"):
        make_client().query("q")
    assert [record.getMessage() for record in caplog.records] == [
        f"Prometheus at {URL} warns: remote read failed: partial data"
    ]


# --- answers that don't ---------------------------------------------------------


@pytest.mark.parametrize("raw", ["abc", "", " 1", "1_000", "0x10", "1,5", True, None, [], {"v": 1}])
def test_non_numeric_value_is_a_bad_response(requests_mock: requests_mock_module.Mocker, raw: Any) -> None:
    requests_mock.post(QUERY_URL, json=vector(({"host": "a"}, raw)))
    with pytest.raises(PrometheusBadResponse, match=r"data\.result\[0\]\.value is not a number"):
        make_client().query("q")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([1, 2], "not a JSON object"),
        ({"data": {}}, "status is None"),
        ({"status": "success"}, "data is missing"),
        ({"status": "success", "data": {"resultType": "vector", "result": {}}}, "data.result is not a list"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "gave a matrix"),
        ({"status": "success", "data": {"resultType": "string", "result": [0, "x"]}}, "gave a string"),
        ({"status": "success", "data": {"resultType": "histogram", "result": []}}, "resultType is 'histogram'"),
        ({"status": "success", "data": {"resultType": "vector", "result": [1]}}, r"data.result\[0\] is not an object"),
        (vector(({"host": 1}, "0")), r"data.result\[0\].metric is not a map"),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": ["0"]}]}},
            r"data.result\[0\].value is not a \[timestamp, value\] pair",
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": "1"}}, "data.result is not a"),
    ],
)
def test_wrong_shape_is_a_bad_response(requests_mock: requests_mock_module.Mocker, body: Any, problem: str) -> None:
    requests_mock.post(QUERY_URL, json=body)
    with pytest.raises(PrometheusBadResponse, match=problem) as caught:
        make_client().query("q")
    assert URL in str(caught.value)


def matrix(*result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": list(result)}}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, "not a range matrix"),
        (matrix(1), r"data.result\[0\] is not an object"),
        (matrix({"metric": {"host": 1}, "values": []}), r"data.result\[0\].metric is not a map"),
        (matrix({"metric": {}, "values": {}}), r"data.result\[0\].values is not a list"),
    ],
)
def test_a_range_answer_of_the_wrong_shape_is_a_bad_response(
    requests_mock: requests_mock_module.Mocker, body: Any, problem: str
) -> None:
    requests_mock.post(f"{URL}/api/v1/query_range", json=body)
    with pytest.raises(PrometheusBadResponse, match=problem):
        make_client().query_range("q", start=0, end=60, step=60)


def test_a_range_answer_keeps_each_series_labels_and_points(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(f"{URL}/api/v1/query_range", json=matrix({"metric": {"host": "a"}, "values": [[60, "0.5"]]}))
    [series] = make_client().query_range("q", start=0, end=60, step=60)
    assert (series.labels, series.points) == ({"host": "a"}, [(60.0, 0.5)])


def test_status_error_with_200_is_a_bad_response_naming_the_error(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=error_body("internal", "something broke"))
    with pytest.raises(PrometheusBadResponse, match="reported an error: internal: something broke"):
        make_client().query("q")


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (400, "bad_data", '1:9: parse error: unexpected "}" in label matching'),
        (422, "execution", "query processing would load too many samples into memory"),
        (503, "unavailable", "Prometheus is shutting down"),
        (500, "internal", "panic in query engine"),
    ],
)
def test_http_error_carries_prometheus_error_type_and_message(
    requests_mock: requests_mock_module.Mocker, status: int, error_type: str, error: str
) -> None:
    requests_mock.post(QUERY_URL, status_code=status, json=error_body(error_type, error))
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client().query("q")
    assert caught.value.status == status
    assert caught.value.error_type == error_type
    assert caught.value.exit_code == ExitCode.UNAVAILABLE
    message = str(caught.value)
    assert f"Prometheus at {URL} answered HTTP {status}" in message
    assert f"{error_type}: {error}" in message


def test_multiline_error_text_becomes_one_line(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, status_code=400, json=error_body("bad_data", "line one\nline two\n\tline three"))
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client().query("q")
    assert "\n" not in str(caught.value)
    assert "bad_data: line one line two line three" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "content_type", "detail"),
    [
        (401, "", "text/plain", "HTTP 401 Unauthorized ("),
        (401, "no org id\n", "text/plain; charset=utf-8", "HTTP 401 Unauthorized: no org id ("),
        (403, "<html>Forbidden</html>", "text/html", "HTTP 403 Forbidden ("),
    ],
)
def test_auth_failure_names_status_and_hints_at_credentials(
    requests_mock: requests_mock_module.Mocker, status: int, body: str, content_type: str, detail: str
) -> None:
    requests_mock.post(QUERY_URL, status_code=status, text=body, headers={"Content-Type": content_type}, reason=None)
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client().query("q")
    assert caught.value.status == status
    assert caught.value.error_type is None
    assert detail in str(caught.value)
    assert "prometheus.bearer_token_file" in str(caught.value)


def test_html_error_page_from_a_proxy_is_an_http_error_without_the_page(
    requests_mock: requests_mock_module.Mocker,
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    requests_mock.post(QUERY_URL, status_code=502, text=page, headers={"Content-Type": "text/html"})
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client().query("q")
    assert str(caught.value) == f"Prometheus at {URL} answered HTTP 502 Bad Gateway"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", ""])
def test_html_page_with_200_is_a_bad_response(requests_mock: requests_mock_module.Mocker, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    requests_mock.post(QUERY_URL, text="<!DOCTYPE html><html>Sign in</html>", headers=headers)
    with pytest.raises(PrometheusBadResponse, match="sent an HTML page, not the query API's JSON"):
        make_client().query("q")


@pytest.mark.parametrize("body", [b'{"status":"success","data":{"resultType":"vec', b"", b"\xff\xfe garbage"])
def test_truncated_or_invalid_json_is_a_bad_response(requests_mock: requests_mock_module.Mocker, body: bytes) -> None:
    requests_mock.post(QUERY_URL, content=body, headers={"Content-Type": "application/json"})
    with pytest.raises(PrometheusBadResponse, match="not valid JSON") as caught:
        make_client().query("q")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("declared", [True, False])
def test_body_over_the_cap_is_a_bad_response(requests_mock: requests_mock_module.Mocker, declared: bool) -> None:
    body = json.dumps(vector(*[({"host": f"h{index}"}, "0") for index in range(200)])).encode()
    headers = {"Content-Length": str(len(body))} if declared else {}
    requests_mock.post(QUERY_URL, content=body, headers=headers)
    client = PrometheusClient(PrometheusSettings(url=URL), clock=FakeClock(), max_body_bytes=1000)
    with pytest.raises(PrometheusBadResponse, match="sent more than 1000 bytes"):
        client.query("q")


def test_redirect_is_reported_not_followed(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, status_code=302, headers={"Location": "https://sso.test/login"})
    with pytest.raises(PrometheusHTTPError, match="HTTP 302 .*redirect to https://sso.test/login") as caught:
        make_client().query("q")
    assert caught.value.status == 302
    assert requests_mock.call_count == 1


# --- failures to connect ----------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_connection_refused_is_unreachable_and_names_the_url(closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(PrometheusUnreachable) as caught:
        make_client(url=url, timeout=5).query("up")
    assert str(caught.value) == f"cannot reach Prometheus at {url}: connection refused"
    assert caught.value.exit_code == ExitCode.UNAVAILABLE


def test_unset_url_is_unreachable() -> None:
    with pytest.raises(PrometheusUnreachable, match=r"^prometheus\.url is not set$"):
        make_client(url=None).query("up")


def _wrapped(outer: requests.RequestException, cause: BaseException) -> requests.RequestException:
    """Return outer with cause chained the way urllib3 chains it."""
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "error", "message"),
    [
        (requests.exceptions.ConnectTimeout, PrometheusTimeout, "could not connect to Prometheus at .* within the 5s"),
        (requests.exceptions.ReadTimeout, PrometheusTimeout, "no answer from Prometheus at .* within the 5s budget"),
        (
            _wrapped(
                requests.exceptions.ConnectionError("pool stuff"), socket.gaierror(-2, "Name or service not known")
            ),
            PrometheusUnreachable,
            r"cannot resolve the host name \(Name or service not known\)",
        ),
        (
            _wrapped(
                requests.exceptions.SSLError("pool stuff"),
                ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            ),
            PrometheusUnreachable,
            "TLS certificate verification failed .*prometheus.ca_file",
        ),
        (requests.exceptions.SSLError("handshake"), PrometheusUnreachable, "TLS handshake failed"),
        (
            _wrapped(requests.exceptions.ConnectionError("x"), OSError(113, "No route to host")),
            PrometheusUnreachable,
            "no route to host",
        ),
        (requests.exceptions.ConnectionError, PrometheusUnreachable, "cannot reach Prometheus at .*: ConnectionError"),
    ],
)
def test_transport_failures_are_classified(
    requests_mock: requests_mock_module.Mocker, exc: Any, error: type[Exception], message: str
) -> None:
    requests_mock.post(QUERY_URL, exc=exc)
    with pytest.raises(error, match=message) as caught:
        make_client(timeout=5).query("q")
    assert URL in str(caught.value)
    assert "pool stuff" not in str(caught.value)


# --- the time budget -------------------------------------------------------------


def test_budget_spans_all_queries_of_a_client(requests_mock: requests_mock_module.Mocker) -> None:
    clock = FakeClock()

    def slow_answer(request: Any, context: Any) -> dict[str, Any]:
        clock.advance(2)
        return vector()

    requests_mock.post(QUERY_URL, json=slow_answer)
    client = make_client(clock=clock, timeout=5)
    client.query("first")
    assert requests_mock.last_request.timeout == (5, 5)
    client.query("second")
    assert requests_mock.last_request.timeout == (3, 3)
    client.query("third")
    assert requests_mock.last_request.timeout == (1, 1)
    assert client.remaining() == 0
    with pytest.raises(PrometheusTimeout, match="5s budget .* was used up before this query"):
        client.query("fourth")
    assert requests_mock.call_count == 3


def test_budget_starts_when_the_client_is_made(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    clock = FakeClock()
    client = make_client(clock=clock, timeout=5)
    clock.advance(5)
    with pytest.raises(PrometheusTimeout):
        client.query("q")
    assert requests_mock.call_count == 0


class RawServer:
    """A real TCP server on 127.0.0.1 running `behave(connection, stop)` per connection."""

    def __init__(self, behave: Callable[[socket.socket, threading.Event], None]) -> None:
        self.behave = behave
        self.stop = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            self.behave(connection, self.stop)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        # shutdown() wakes a thread blocked in accept(), close() alone may not.
        for sock in [self.listener, *self.connections]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


def never_answer(connection: socket.socket, stop: threading.Event) -> None:
    connection.recv(65536)
    stop.wait()


def drip_headers(connection: socket.socket, stop: threading.Event) -> None:
    connection.recv(65536)
    connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not stop.wait(0.2):
        connection.sendall(b"a")


def drip_body(connection: socket.socket, stop: threading.Event) -> None:
    connection.recv(65536)
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    while not stop.wait(0.2):
        connection.sendall(b" ")


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, threading.Event], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(behave: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        server = RawServer(behave)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def call_within(seconds: float, function: Callable[[], object]) -> tuple[BaseException | None, float]:
    """
    Run function in a thread; return what it raised (None if nothing) and the
    seconds it took. Fail the test if it has not returned after `seconds`:
    a generous guard against hanging forever, not a timing assertion.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            function()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(f"still running after {seconds}s")
    return outcome[0], elapsed


@pytest.mark.parametrize("behave", [never_answer, drip_headers, drip_body], ids=lambda f: f.__name__)
def test_server_that_stalls_raises_timeout_within_the_budget(
    raw_server: Callable[..., RawServer], behave: Callable[[socket.socket, threading.Event], None]
) -> None:
    server = raw_server(behave)
    timeout = 1.0
    client = PrometheusClient(PrometheusSettings(url=f"http://127.0.0.1:{server.port}", timeout=timeout))
    error, elapsed = call_within(timeout + 5, lambda: client.query("up"))
    assert isinstance(error, PrometheusTimeout), repr(error)
    assert f"within the {timeout:g}s budget (prometheus.timeout)" in str(error)
    print(f"{behave.__name__}: raised after {elapsed:.2f}s with a {timeout}s budget")


def test_after_a_timeout_later_queries_fail_fast_without_connecting(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(never_answer)
    client = PrometheusClient(PrometheusSettings(url=f"http://127.0.0.1:{server.port}", timeout=0.5))
    error, _ = call_within(6, lambda: client.query("first"))
    assert isinstance(error, PrometheusTimeout)
    connections = len(server.connections)
    error, _ = call_within(6, lambda: client.query("second"))
    assert isinstance(error, PrometheusTimeout)
    assert "used up before this query" in str(error)
    assert len(server.connections) == connections


# --- auth, headers, TLS -------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    path.chmod(0o600)  # as secrets are kept; a readable one is warned about
    return path


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(f"{PASSWORD}\n")
    path.chmod(0o600)  # as secrets are kept; a readable one is warned about
    return path


def test_no_credentials_are_sent_by_default(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    make_client().query("q")
    assert "Authorization" not in requests_mock.last_request.headers


def test_bearer_token_is_read_from_its_file_and_sent(
    requests_mock: requests_mock_module.Mocker, token_file: Path
) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    make_client(bearer_token_file=token_file).query("q")
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_basic_auth_uses_username_and_password_file(
    requests_mock: requests_mock_module.Mocker, password_file: Path
) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    make_client(username="wg", password_file=password_file).query("q")
    assert requests_mock.last_request.headers["Authorization"] == requests.auth._basic_auth_str("wg", PASSWORD)


def test_non_ascii_password_is_sent_as_utf8(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pässwörd€\n", encoding="utf-8")
    requests_mock.post(QUERY_URL, json=vector())
    make_client(username="wg", password_file=password).query("q")
    assert requests_mock.last_request.headers["Authorization"] == requests.auth._basic_auth_str(
        b"wg", "pässwörd€".encode()
    )


def test_extra_headers_are_sent(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    make_client(headers={"X-Scope-OrgID": "tenant-1", "X-Other": "x"}).query("q")
    assert requests_mock.last_request.headers["X-Scope-OrgID"] == "tenant-1"
    assert requests_mock.last_request.headers["X-Other"] == "x"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file"),
        ("", "the file is empty"),
        ("  \n\n", "the file is empty"),
        ("two words", "the token contains spaces or control characters"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_unusable_bearer_token_file_is_a_config_error(
    tmp_path: Path, content: str | bytes | None, problem: str
) -> None:
    path = tmp_path / "token"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        make_client(bearer_token_file=path)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert str(caught.value) == f"{path}: prometheus.bearer_token_file: {problem}"


@pytest.mark.parametrize("content", [None, "\n"])
def test_unusable_password_file_is_a_config_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "password"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=r"prometheus\.password_file: ") as caught:
        make_client(username="wg", password_file=path)
    assert caught.value.exit_code == ExitCode.CONFIG


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"prometheus\.ca_file: no such file"):
        make_client(ca_file=tmp_path / "missing.pem")


def test_tls_is_verified_by_default(
    requests_mock: requests_mock_module.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests swaps True for these bundles when set; that is still verifying.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    requests_mock.post("https://prometheus.test/api/v1/query", json=vector())
    make_client(url="https://prometheus.test").query("q")
    assert requests_mock.last_request.verify is True


def test_ca_file_is_used_to_verify(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    requests_mock.post("https://prometheus.test/api/v1/query", json=vector())
    make_client(url="https://prometheus.test", ca_file=ca_file).query("q")
    assert requests_mock.last_request.verify == str(ca_file)


def test_insecure_skip_verify_disables_verification_and_warns_once(
    requests_mock: requests_mock_module.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    requests_mock.post("https://prometheus.test/api/v1/query", json=vector())
    with caplog.at_level(logging.WARNING, logger="wgfailover.prometheus"):
        client = make_client(url="https://prometheus.test", insecure_skip_verify=True)
        client.query("q1")
        client.query("q2")
    assert requests_mock.last_request.verify is False
    assert [record.getMessage() for record in caplog.records] == [
        "TLS certificate of Prometheus at https://prometheus.test is not verified (prometheus.insecure_skip_verify)"
    ]


# --- secrets stay secret -------------------------------------------------------------


def test_secrets_never_appear_in_errors_logs_or_repr(
    requests_mock: requests_mock_module.Mocker,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that echoes the credentials back, in an error and in a warning.
    body = vector()
    body["warnings"] = [f"token {TOKEN} is deprecated"]
    requests_mock.post(
        QUERY_URL,
        [
            {"json": body},
            {"status_code": 401, "json": error_body("unauthorized", f"bad token {TOKEN}")},
            {
                "json": {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, TOKEN]}]},
                }
            },
        ],
    )
    messages = []
    with caplog.at_level(logging.DEBUG, logger="wgfailover.prometheus"):
        client = make_client(bearer_token_file=token_file, headers={"X-Api-Key": "api-key-secret"})
        messages.append(repr(client))
        client.query("q")
        for _ in range(2):
            with pytest.raises(Exception) as caught:  # noqa: PT011 - two different errors, both checked below
                client.query("q")
            messages.append(str(caught.value))
    messages += [record.getMessage() for record in caplog.records]
    # The warning, besides the debug lines of -v (each query and its URL), which are checked too.
    assert len([record for record in caplog.records if record.levelno > logging.DEBUG]) == 1
    for message in messages:
        assert TOKEN not in message
        assert "api-key-secret" not in message
    assert "bad token ***" in messages[1]


def test_credentials_in_the_url_are_masked(closed_port: int) -> None:
    url = f"http://admin:{PASSWORD}@127.0.0.1:{closed_port}"
    client = make_client(url=url, timeout=5)
    with pytest.raises(PrometheusUnreachable) as caught:
        client.query("up")
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(client)
    assert f"http://***@127.0.0.1:{closed_port}" in str(caught.value)


# --- a real TLS server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 it signed, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "server", "server-key", "csr")}
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName = IP:127.0.0.1\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n"
    )
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=wg-failover test CA",
         "-keyout", paths["ca-key"], "-out", paths["ca"],
         "-addext", "keyUsage = critical, keyCertSign, cRLSign", "-addext", "basicConstraints = critical, CA:TRUE"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", paths["server-key"], "-out", paths["csr"]],
        ["openssl", "x509", "-req", "-in", paths["csr"], "-CA", paths["ca"], "-CAkey", paths["ca-key"],
         "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", paths["server"]],
    ]  # fmt: skip
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return paths


@pytest.fixture
def tls_prometheus(certificates: dict[str, Path]) -> Iterator[str]:
    """A real HTTPS server on 127.0.0.1 answering every POST with an empty vector; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(vector(({"host": "a"}, "0.5"))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates["server"], certificates["server-key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_untrusted_certificate_is_unreachable_with_a_ca_file_hint(tls_prometheus: str) -> None:
    with pytest.raises(PrometheusUnreachable, match="TLS certificate verification failed .*prometheus.ca_file"):
        make_client(url=tls_prometheus, timeout=5).query("up")


def test_ca_file_makes_a_private_ca_trusted(tls_prometheus: str, certificates: dict[str, Path]) -> None:
    client = make_client(url=tls_prometheus, timeout=5, ca_file=certificates["ca"])
    assert client.query("up") == [Sample({"host": "a"}, 0.5)]


def test_insecure_skip_verify_accepts_an_untrusted_certificate(tls_prometheus: str) -> None:
    assert make_client(url=tls_prometheus, timeout=5, insecure_skip_verify=True).query("up") == [
        Sample({"host": "a"}, 0.5)
    ]


# --- escaping for PromQL -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("server1", "server1"),
        ("203.0.113.10", "203\\\\.0\\\\.113\\\\.10"),
        ("a|b", "a\\\\|b"),
        ("[2001:db8::1]", "\\\\[2001:db8::1\\\\]"),
        ("a+b*c?", "a\\\\+b\\\\*c\\\\?"),
        ("(x){2}^$", "\\\\(x\\\\)\\\\{2\\\\}\\\\^\\\\$"),
        ("back\\slash", "back\\\\\\\\slash"),
        ('quo"te', 'quo\\"te'),
        ("dash-under_score:colon/slash", "dash-under_score:colon/slash"),
        ("new\nline", "new\\nline"),
        ("ümlaut", "ümlaut"),
    ],
)
def test_escape_regex_value_escapes_re2_then_promql(value: str, expected: str) -> None:
    assert escape_regex_value(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.10", "203.0.113.10"),
        ("a|b", "a|b"),
        ("back\\slash", "back\\\\slash"),
        ('quo"te', 'quo\\"te'),
        ("tab\there\r\n", "tab\\there\\r\\n"),
        ("bell\x07", "bell\\x07"),
    ],
)
def test_escape_label_value_escapes_only_the_promql_string(value: str, expected: str) -> None:
    assert escape_label_value(value) == expected


def _promql_unquote(body: str) -> str:
    """Decode a PromQL double-quoted string body (Go escapes) the way the PromQL lexer does."""
    return codecs.decode(body.encode("latin-1", "backslashreplace"), "unicode_escape")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_escaped_regex_matches_exactly_its_value(value: str, other: str) -> None:
    regex = _promql_unquote(escape_regex_value(value))
    # Python's re agrees with RE2 on backslash-escaped punctuation; Prometheus
    # anchors the regex as ^(?:...)$, as fullmatch does.
    assert re.fullmatch(regex, value, re.DOTALL)
    assert bool(re.fullmatch(regex, other, re.DOTALL)) == (other == value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escaped_label_value_decodes_to_itself(value: str) -> None:
    body = escape_label_value(value)
    assert _promql_unquote(body) == value
    assert "\n" not in body
    assert re.search(r'(?<!\\)(?:\\\\)*"', body) is None  # every quote is escaped


def test_client_closes_only_the_session_it_made(requests_mock: requests_mock_module.Mocker) -> None:
    requests_mock.post(QUERY_URL, json=vector())
    given_session = requests.Session()
    closed: list[str] = []
    given_session.close = lambda: closed.append("given")  # type: ignore[method-assign]
    with PrometheusClient(PrometheusSettings(url=URL), clock=FakeClock(), session=given_session) as client:
        assert client.query("q") == []
    assert closed == []
    assert requests_mock.call_count == 1


# --- hints for the usual wrong URLs -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        (
            "http://prometheus.test:9090/api/v1",
            "prometheus.url must not include /api/v1/...: give the base URL, the query path is added",
        ),
        (
            "http://prometheus.test:9090/prom",
            "is the path prefix /prom right? prometheus.url is what serves /api/v1/query, e.g. Prometheus's --web.route-prefix",
        ),
        (
            "http://prometheus.test:9090",
            "no query API at this URL: is prometheus.url a Prometheus, and does it need a path prefix?",
        ),
    ],
)
def test_a_404_says_what_is_wrong_with_the_url(requests_mock: requests_mock_module.Mocker, url: str, hint: str) -> None:
    requests_mock.post(f"{url}/api/v1/query", status_code=404, text="404 page not found")
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client(url=url).query("up")
    assert str(caught.value).endswith(f"({hint})")


@pytest.fixture
def plain_http_server() -> Iterator[str]:
    """A real http.server on loopback: it answers GET and refuses POST with 501, as any non-Prometheus would."""
    import http.server

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_that_is_not_prometheus_says_so(plain_http_server: str) -> None:
    with pytest.raises(PrometheusHTTPError) as caught:
        make_client(url=f"http://{plain_http_server}", timeout=5, clock=time.monotonic).query("up")
    assert caught.value.status == 501
    assert str(caught.value).endswith(
        "(this server does not take a POST to /api/v1/query: is prometheus.url a Prometheus?)"
    )


def test_https_to_a_plain_http_port_suggests_http(plain_http_server: str) -> None:
    with pytest.raises(PrometheusUnreachable) as caught:
        make_client(url=f"https://{plain_http_server}", timeout=5, clock=time.monotonic).query("up")
    assert str(caught.value).endswith("is this port plain HTTP? then use http:// in prometheus.url")
