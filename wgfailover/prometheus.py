"""Ask Prometheus (or Mimir, Cortex, VictoriaMetrics) an instant query.

One PrometheusClient serves one command. Its time budget,
``prometheus.timeout``, starts when the client is made and bounds every
query it sends together, connect included: the original gave each of its
per-server curl calls 5 s of its own, so a slow Prometheus made a failover
slower with every server, and a Prometheus that accepts and never answers
is not bounded by a socket timeout at all (requests' read timeout restarts
with every byte received). The request therefore runs in a worker thread
and the caller waits for it no longer than the budget that is left.

Every failure becomes one subclass of PrometheusError with a one-line
message naming the URL and never a credential; callers decide the policy
(wg-failover falls back to a random server, the health check counts nothing).
"""

from __future__ import annotations

import dataclasses
import http
import http.client
import json
import logging
import math
import os
import queue
import re
import socket
import ssl
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import requests.auth
import urllib3

from wgfailover import __version__
from wgfailover.config import MAX_CONFIG_BYTES, MAX_SECRET_BYTES, PrometheusSettings
from wgfailover.errors import (
    ConfigError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusTimeout,
    PrometheusUnreachable,
)
from wgfailover.fsutil import RefusedFile, read_regular_file
from wgfailover.redact import SecretMask

__all__ = [
    "MAX_BODY_BYTES",
    "PrometheusClient",
    "Sample",
    "Series",
    "escape_label_value",
    "escape_regex_value",
    "round_measured",
]

log = logging.getLogger(__name__)

# An instant query for a handful of servers answers in a few KiB; a body far
# beyond that is a misdirected URL or a runaway query, and reading it all
# would only spend memory on a oneshot that has to stay small.
MAX_BODY_BYTES = 16 * 1024 * 1024
_CHUNK_BYTES = 64 * 1024
# Server-provided text (Prometheus's `error`, a proxy's page) is cut to this
# many characters so every message stays one readable line.
_MAX_DETAIL_CHARS = 300
# Header names whose values are treated as secrets when a user puts their
# own credentials into prometheus.headers (an API key, a cookie, ...).
_SECRET_HEADER = re.compile(r"auth|token|key|secret|passw|cookie", re.IGNORECASE)
_AUTH_HINT = "check prometheus.bearer_token_file, or prometheus.username and prometheus.password_file"
# Go's regexp.QuoteMeta escapes exactly these; RE2 rejects escapes of
# letters and digits (e.g. "\-" is fine but "\d" is a class), so escaping
# more than this, as Python's re.escape does, could change the meaning.
_RE2_METACHARACTERS = frozenset("\\.+*?()|[]{}^$")
# A sample value as Prometheus and VictoriaMetrics format it (Go's
# strconv.FormatFloat). Python's float() also takes "1_000" and " 1 ",
# which no server sends, so the check is made first.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity)|nan", re.IGNORECASE)
_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One series of an instant-query result: its labels and its value.

    The value may be NaN or ±Inf (a rate over no data, a division by zero);
    evidence/readings.py decides what an unknown value means: for
    loss it is "unknown", never 0.
    """

    labels: dict[str, str]
    value: float


@dataclasses.dataclass(frozen=True)
class Series:
    """One series of a range-query result: its labels and its (unix time, value) points, oldest first."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


# Six decimals are finer than anything a prober resolves (a ratio of ping
# counts, a latency in microseconds) and coarse enough that float noise
# such as 1 - 0.55 = 0.44999999999999996 never reaches an output, the
# history or the metrics.
MEASURED_DIGITS = 6


def round_measured(value: float) -> float:
    """Given a measured ratio or number of seconds, return it rounded to what a prober can resolve."""
    return round(value, MEASURED_DIGITS) if math.isfinite(value) else value


def escape_label_value(value: str) -> str:
    """
    Given a label value, return it escaped for the inside of a PromQL
    double-quoted string, as in ``host="<here>"``. The quotes are not added.
    """
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            # A raw control character ends a PromQL string with a lex error.
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def escape_regex_value(value: str) -> str:
    """
    Given a label value, return a PromQL string body that, used in a regex
    matcher (``host=~"<here>"``), matches exactly that value: RE2
    metacharacters are escaped first, then the result is escaped for the
    double-quoted PromQL string. Alternatives are the caller's to join with
    ``|``; the quotes are not added.
    """
    quoted = "".join(f"\\{char}" if char in _RE2_METACHARACTERS else char for char in value)
    return escape_label_value(quoted)


class PrometheusClient:
    """
    Instant queries against one Prometheus-compatible server, within one time
    budget. Given the settings, a monotonic clock and optionally a
    requests.Session, the budget of settings.timeout seconds starts now.
    A caller holding a budget already under way passes time_limit, the
    seconds left of it; with share True the limit is one URL's share of the
    budget among several. Messages name the configured budget either way,
    never the float left of it.
    Raise ConfigError if a CA, token or password file can't be read or is
    empty. A missing settings.url is reported by query(), so the caller's
    policy for an unusable Prometheus applies to it as well.
    """

    def __init__(
        self,
        settings: PrometheusSettings,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        *,
        time_limit: float | None = None,
        share: bool = False,
    ) -> None:
        self._clock = clock
        self._budget = float(settings.timeout)
        limit = self._budget if time_limit is None else min(max(0.0, time_limit), self._budget)
        self._deadline = clock() + limit
        # What a timeout message says was exceeded: the user's prometheus.timeout
        # as configured ("1s", not the 0.999997s left when this client was made).
        self._within = f"the {self._budget:g}s budget (prometheus.timeout)"
        if share:
            self._within = f"its {limit:.2g}s share of {self._within}"
        self._base_url = settings.url.rstrip("/") if settings.url else None
        self._display_url = _redact_url(self._base_url) if self._base_url else "(no prometheus.url)"
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._max_body_bytes = max_body_bytes
        # Once a query has timed out its worker thread may still hold the
        # session; no later query may touch it.
        self._spent = False

        self._headers: dict[str, str] = {
            "Accept": "application/json",
            "User-Agent": f"wg-failover/{__version__}",
        }
        # Every secret we send, in every form a server may echo it in.
        self._mask = SecretMask()
        for name, value in settings.headers.items():
            self._headers[name] = value
            if _SECRET_HEADER.search(name):
                self._mask.add(value)
        if self._base_url:
            _mask_url_credentials(self._base_url, self._mask)

        self._auth: requests.auth.HTTPBasicAuth | None = None
        if settings.bearer_token_file is not None:
            token = _read_secret(settings.bearer_token_file, "prometheus.bearer_token_file")
            if not _TOKEN.fullmatch(token):
                # Checked here because requests would quote the whole header
                # value, token included, in its own error message.
                raise ConfigError(
                    settings.bearer_token_file,
                    "prometheus.bearer_token_file: the token contains spaces or control characters",
                )
            self._headers["Authorization"] = f"Bearer {token}"
            self._mask.add(token)
        if settings.username is not None and settings.password_file is not None:
            password = _read_secret(settings.password_file, "prometheus.password_file")
            # Encoded here: requests would encode str credentials as latin-1
            # and fail on anything else.
            self._auth = requests.auth.HTTPBasicAuth(settings.username.encode("utf-8"), password.encode("utf-8"))
            self._mask.add_basic(settings.username, password)

        self._verify: bool | str = True
        if settings.ca_file is not None:
            _check_readable(settings.ca_file, "prometheus.ca_file")
            self._verify = str(settings.ca_file)
        if settings.insecure_skip_verify:
            self._verify = False
            # urllib3 would warn through the warnings module on every request,
            # a multi-line text journald splits; one line of ours is enough.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            # Once per client, which is once per command run, not per query.
            log.warning(
                "TLS certificate of Prometheus at %s is not verified (prometheus.insecure_skip_verify)",
                self._display_url,
            )

    def __repr__(self) -> str:
        return f"PrometheusClient(url={self._display_url!r}, timeout={self._budget:g})"

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client made it (a session passed in stays open)."""
        if self._owns_session:
            self._session.close()

    def remaining(self) -> float:
        """Return the seconds left of the time budget (0 once it is spent)."""
        if self._spent:
            return 0.0
        return max(0.0, self._deadline - self._clock())

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """
        Given a PromQL expression (and a unix time; None: now), evaluate it
        then and return one Sample per series of the instant vector (one
        unlabelled Sample for a scalar). Raise PrometheusUnreachable if the
        URL is unset or the server can't be reached, PrometheusTimeout if the
        budget runs out, PrometheusHTTPError for an HTTP error status, and
        PrometheusBadResponse for an answer that is not the documented JSON.
        """
        form = {"query": promql}
        if at is not None:
            form["time"] = _format_time(at)
        document = self._request("/api/v1/query", form)
        samples = self._samples(document)
        log.debug("Prometheus at %s answered %d series", self._display_url, len(samples))
        return samples

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """
        Given a PromQL expression and the unix times of the first and last
        evaluation and the seconds between them, return one Series per
        series of the range result. The caller keeps (end - start) / step
        under the server's points-per-series limit (11000 for Prometheus).
        Raise what query() raises.
        """
        form = {"query": promql, "start": _format_time(start), "end": _format_time(end), "step": f"{step:g}"}
        document = self._request("/api/v1/query_range", form)
        series = self._series(document)
        log.debug("Prometheus at %s answered %d series", self._display_url, len(series))
        return series

    def get(self, path: str) -> dict[str, Any]:
        """
        Given an API path (e.g. /api/v1/status/runtimeinfo), GET it and
        return the ``data`` object of its answer. Raise what query() raises.
        """
        document = self._request(path, None)
        data = document.get("data")
        if not isinstance(data, dict):
            raise self._bad_shape("data is missing or not an object")
        return data

    def _request(self, path: str, form: dict[str, str] | None) -> dict[str, Any]:
        """Given an API path and a form to POST (None: GET), return the decoded successful answer."""
        if self._base_url is None:
            raise PrometheusUnreachable("prometheus.url is not set")
        remaining = self.remaining()
        if remaining <= 0:
            raise PrometheusTimeout(f"Prometheus at {self._display_url}: {self._within} was used up before this query")
        if form is None:
            log.debug("GET %s%s", self._display_url, path)
        else:
            log.debug("POST %s%s %s", self._display_url, path, " ".join(f"{k}={v}" for k, v in form.items()))
        reply = self._exchange(f"{self._base_url}{path}", form, remaining)
        return self._decode(reply)

    # --- the HTTP exchange ---------------------------------------------------

    def _exchange(self, endpoint: str, form: dict[str, str] | None, remaining: float) -> _Reply:
        """
        Given the endpoint, the form to POST (None: GET) and the seconds left, return the raw reply. Raise the
        classified PrometheusError if it fails or takes longer than that.
        """
        outcome: queue.Queue[tuple[_Reply | None, BaseException | None]] = queue.Queue(maxsize=1)
        cancelled = threading.Event()

        def run() -> None:
            try:
                outcome.put((self._post(endpoint, form, remaining, cancelled), None))
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                outcome.put((None, error))

        # A daemon thread: if the server never answers, the process must
        # still be able to exit once the caller has moved on.
        worker = threading.Thread(target=run, name="wgfailover-prometheus", daemon=True)
        worker.start()
        try:
            reply, error = outcome.get(timeout=remaining)
        except queue.Empty:
            cancelled.set()
            self._spent = True
            raise PrometheusTimeout(f"no answer from Prometheus at {self._display_url} within {self._within}") from None
        if reply is None:
            raise self._classify(error or RuntimeError("no reply")) from None
        return reply

    def _post(self, endpoint: str, form: dict[str, str] | None, remaining: float, cancelled: threading.Event) -> _Reply:
        """Run in the worker: send the request and read the body within the byte cap."""
        response = self._session.request(
            "GET" if form is None else "POST",
            endpoint,
            data=form,
            headers=self._headers,
            auth=self._auth,
            verify=self._verify,
            # Per connect and per recv; the hard bound is the caller's wait.
            timeout=(remaining, remaining),
            # A redirected POST becomes a GET without the query (and may
            # carry our headers to another host); say so instead.
            allow_redirects=False,
            stream=True,
        )
        try:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self._max_body_bytes:
                raise _TooLarge()
            body = bytearray()
            try:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    if cancelled.is_set():
                        break
                    body += chunk
                    if len(body) > self._max_body_bytes:
                        raise _TooLarge()
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
                raise _CutOff(error) from error
            return _Reply(
                status=response.status_code,
                reason=response.reason or _status_phrase(response.status_code),
                content_type=response.headers.get("Content-Type", ""),
                location=response.headers.get("Location", ""),
                body=bytes(body),
            )
        finally:
            response.close()

    def _classify(self, error: BaseException) -> PrometheusError:
        """Given what the worker raised, return the PrometheusError to raise."""
        url = self._display_url
        if isinstance(error, PrometheusError):
            return error
        if isinstance(error, _TooLarge):
            return PrometheusBadResponse(
                f"Prometheus at {url} sent more than {self._max_body_bytes} bytes; is prometheus.url right?"
            )
        cut_off = isinstance(error, _CutOff)
        timeouts = [cause for cause in _causes(error) if _is_timeout(cause)]
        if any(
            isinstance(cause, (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)) for cause in timeouts
        ):
            return PrometheusTimeout(f"could not connect to Prometheus at {url} within {self._within}")
        if timeouts:
            return PrometheusTimeout(f"no answer from Prometheus at {url} within {self._within}")
        if cut_off:
            return PrometheusBadResponse(
                self._scrub(f"the answer of Prometheus at {url} was cut off: {_reason(error)}")
            )
        return PrometheusUnreachable(self._scrub(f"cannot reach Prometheus at {url}: {_reason(error)}"))

    # --- the answer ------------------------------------------------------------

    def _decode(self, reply: _Reply) -> dict[str, Any]:
        """
        Given the raw reply, return the JSON document of a successful query.
        Raise PrometheusHTTPError for an error status, PrometheusBadResponse
        for anything that is not the query API's JSON.
        """
        url = self._display_url
        document: Any = None
        json_error = ""
        try:
            document = json.loads(reply.body)
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
            json_error = str(error)
        except RecursionError:  # "[[[[..." nested past Python's limit
            json_error = "nested too deeply"

        # Masked before anything else touches the server's text (see redact.py).
        reason = self._scrub(reply.reason)
        if 300 <= reply.status < 400:
            where = f" to {_redact_url(self._scrub(reply.location))}" if reply.location else ""
            raise PrometheusHTTPError(
                self._scrub(
                    f"Prometheus at {url} answered HTTP {reply.status} {_one_line(reason)}, a redirect{where}; "
                    "set prometheus.url to the final address"
                ),
                reply.status,
            )
        if reply.status >= 400:
            error_type = None
            detail = ""
            if isinstance(document, dict) and isinstance(document.get("error"), str):
                raw_type = document.get("errorType")
                error_type = self._scrub(raw_type) if isinstance(raw_type, str) and raw_type else None
                detail = self._scrub(f"{error_type}: {document['error']}" if error_type else document["error"])
            elif reply.content_type.startswith("text/plain") and reply.body.strip():
                # Mimir, Cortex and VictoriaMetrics answer some errors in plain text.
                detail = self._scrub(reply.body.decode("utf-8", "replace"))
            message = f"Prometheus at {url} answered HTTP {reply.status} {_one_line(reason)}".rstrip()
            if detail:
                message += f": {_one_line(detail)}"
            hint = _AUTH_HINT if reply.status in (401, 403) else _status_hint(reply.status, self._base_url or "")
            if hint:
                message += f" ({hint})"
            raise PrometheusHTTPError(self._scrub(message), reply.status, error_type)

        if document is None and json_error:
            if "html" in reply.content_type.lower() or reply.body.lstrip()[:1] == b"<":
                raise PrometheusBadResponse(
                    f"Prometheus at {url} sent an HTML page, not the query API's JSON "
                    "(a proxy or login page? is prometheus.url right?)"
                )
            raise PrometheusBadResponse(
                f"Prometheus at {url} sent a response that is not valid JSON ({_one_line(json_error)})"
            )
        if not isinstance(document, dict):
            raise self._bad_shape("the response is not a JSON object")
        status = document.get("status")
        if status != "success":
            error_type = document.get("errorType")
            error_text = document.get("error")
            if isinstance(error_text, str):
                prefix = f"{error_type}: " if isinstance(error_type, str) and error_type else ""
                raise PrometheusBadResponse(
                    self._scrub(f"Prometheus at {url} reported an error: {_one_line(self._scrub(prefix + error_text))}")
                )
            raise self._bad_shape(f"status is {self._show(status)}, not 'success'")
        self._log_warnings(document)
        return document

    def _samples(self, document: dict[str, Any]) -> list[Sample]:
        """Given a successful query document, return its samples. Raise PrometheusBadResponse on a wrong shape."""
        data = document.get("data")
        if not isinstance(data, dict):
            raise self._bad_shape("data is missing or not an object")
        result_type = data.get("resultType")
        result = data.get("result")
        if result_type == "scalar":
            return [Sample(labels={}, value=self._value(result, "data.result"))]
        if result_type != "vector":
            if result_type in ("matrix", "string"):
                raise self._bad_shape(
                    f"the query gave a {result_type}, not an instant vector (does it end in a range like [5m]?)"
                )
            raise self._bad_shape(f"data.resultType is {self._show(result_type)}")
        if not isinstance(result, list):
            raise self._bad_shape("data.result is not a list")
        samples = []
        for index, item in enumerate(result):
            where = f"data.result[{index}]"
            if not isinstance(item, dict):
                raise self._bad_shape(f"{where} is not an object")
            labels = self._labels(item, where)
            samples.append(Sample(labels=labels, value=self._value(item.get("value"), f"{where}.value")))
        return samples

    def _labels(self, item: dict[str, Any], where: str) -> dict[str, str]:
        """Given one series of a result, return its labels. Raise PrometheusBadResponse if they are not strings."""
        labels = item.get("metric", {})
        if not isinstance(labels, dict) or not all(
            isinstance(name, str) and isinstance(value, str) for name, value in labels.items()
        ):
            raise self._bad_shape(f"{where}.metric is not a map of label names to strings")
        return dict(labels)

    def _series(self, document: dict[str, Any]) -> list[Series]:
        """Given a successful range-query document, return its series. Raise PrometheusBadResponse on a wrong shape."""
        data = document.get("data")
        if not isinstance(data, dict):
            raise self._bad_shape("data is missing or not an object")
        if data.get("resultType") != "matrix":
            raise self._bad_shape(f"data.resultType is {self._show(data.get('resultType'))}, not a range matrix")
        result = data.get("result")
        if not isinstance(result, list):
            raise self._bad_shape("data.result is not a list")
        series = []
        for index, item in enumerate(result):
            where = f"data.result[{index}]"
            if not isinstance(item, dict):
                raise self._bad_shape(f"{where} is not an object")
            labels = self._labels(item, where)
            values = item.get("values")
            if not isinstance(values, list):
                raise self._bad_shape(f"{where}.values is not a list")
            points = [
                (self._time(pair, f"{where}.values[{n}]"), self._value(pair, f"{where}.values[{n}]"))
                for n, pair in enumerate(values)
            ]
            series.append(Series(labels=labels, points=points))
        return series

    def _time(self, pair: object, where: str) -> float:
        """Given a [timestamp, "value"] pair, return the timestamp. Raise PrometheusBadResponse if it is not one."""
        if not isinstance(pair, list) or len(pair) != 2:
            raise self._bad_shape(f"{where} is not a [timestamp, value] pair")
        stamp = pair[0]
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
            return float(stamp)
        raise self._bad_shape(f"{where} has no numeric timestamp: {self._show(stamp)}")

    def _value(self, pair: object, where: str) -> float:
        """Given a [timestamp, "value"] pair, return the value. Raise PrometheusBadResponse if it is not one."""
        if not isinstance(pair, list) or len(pair) != 2:
            raise self._bad_shape(f"{where} is not a [timestamp, value] pair")
        raw = pair[1]
        # Prometheus sends values as strings ("NaN", "+Inf" have no JSON
        # form); a JSON number from a compatible server is accepted too.
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str) and _NUMBER.fullmatch(raw):
            return float(raw)
        raise self._bad_shape(f"{where} is not a number: {self._show(raw)}")

    def _bad_shape(self, problem: str) -> PrometheusBadResponse:
        return PrometheusBadResponse(
            self._scrub(f"Prometheus at {self._display_url} sent an unexpected answer: {problem}")
        )

    def _log_warnings(self, document: dict[str, Any]) -> None:
        # Prometheus answers "success" and still warns, e.g. when a remote
        # read endpoint failed and the result may be partial.
        warnings = document.get("warnings")
        if isinstance(warnings, list):
            for warning in warnings:
                log.warning("Prometheus at %s warns: %s", self._display_url, self._text(warning))
        infos = document.get("infos")
        if isinstance(infos, list):
            for info in infos:
                log.debug("Prometheus at %s notes: %s", self._display_url, self._text(info))

    def _scrub(self, text: str) -> str:
        """Given raw server text or a message built from it, return it with every form of every secret masked."""
        return self._mask.mask(text)

    def _text(self, value: object) -> str:
        """Given a JSON value the server meant as text, return it masked, then on one line."""
        if not isinstance(value, str):
            return f"({_json_type(value)})"
        return _one_line(self._scrub(value))

    def _show(self, value: object) -> str:
        """Given a JSON value from the answer, return a short quotation of it for a message, masked first."""
        if isinstance(value, str):
            # Masked before repr(), which doubles backslashes, and before the cut.
            text = repr(self._scrub(value))
        elif value is None or isinstance(value, (bool, int, float)):
            text = repr(value)
        else:
            # A structure is named, not quoted: its repr would re-escape any secret inside.
            return _json_type(value)
        return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    content_type: str
    location: str
    body: bytes


class _TooLarge(Exception):
    """The body passed the byte cap."""


class _CutOff(Exception):
    """Reading the body failed after the status line and headers arrived."""


def _format_time(unix: float) -> str:
    # Milliseconds, the finest the API resolves; no exponent for large numbers.
    return f"{unix:.3f}"


def _read_secret(path: Path, key: str) -> str:
    """
    Given a credential file and its config key, return its content without
    surrounding whitespace. Raise ConfigError if it can't be read or is empty.
    """
    try:
        # Followed if a symlink (sops-nix and agenix link /run/secrets/NAME).
        text = read_regular_file(path, MAX_SECRET_BYTES, follow_symlinks=True).decode("utf-8")
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        raise ConfigError(path, f"{key}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(path, f"{key}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(path, f"{key}: cannot read: {_file_problem(error)}") from None
    if mode & 0o044:
        # Warned about, not refused: refusing would break the tunnel's failover
        # over a permission that is already the operator's decision.
        log.warning("%s (%s) is readable by other users (mode %04o); chmod 600 it", path, key, mode)
    # Files written by `echo` or editors end in a newline that is no part
    # of the secret; surrounding blanks never are either.
    text = text.strip()
    if not text:
        raise ConfigError(path, f"{key}: the file is empty")
    return text


def _check_readable(path: Path, key: str) -> None:
    """Given a file and its config key, return if it can be read. Raise ConfigError if not."""
    try:
        read_regular_file(path, MAX_CONFIG_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        raise ConfigError(path, f"{key}: no such file") from None
    except OSError as error:
        raise ConfigError(path, f"{key}: cannot read: {_file_problem(error)}") from None


def _file_problem(error: OSError) -> str:
    return f"it {error.strerror}" if isinstance(error, RefusedFile) else str(error.strerror or error)


def _redact_url(url: str) -> str:
    """Given a URL, return it with any user:password@ replaced by ***@."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(an invalid URL)"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """Given an exception, yield it and everything it wraps (urllib3 nests several deep)."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for inner in (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _find(error: BaseException, *types: type[BaseException]) -> BaseException | None:
    """Given an exception, return the first exception in its chain of one of these types, or None."""
    for cause in _causes(error):
        if isinstance(cause, types):
            return cause
    return None


def _is_timeout(error: BaseException) -> bool:
    """Given one exception of a chain, return whether it is a timeout."""
    # urllib3 derives NewConnectionError (refused, unreachable) from
    # ConnectTimeoutError for history's sake; it is no timeout.
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(error, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError, socket.timeout))


def _reason(error: BaseException) -> str:
    """Given a connection failure, return a short reason a user understands."""
    verification = _find(error, ssl.SSLCertVerificationError)
    if isinstance(verification, ssl.SSLCertVerificationError):
        # Set by the ssl module when it raises; absent on hand-made instances.
        detail = getattr(verification, "verify_message", None) or getattr(verification, "reason", None) or "failed"
        return (
            f"TLS certificate verification failed ({_one_line(str(detail))}); "
            "set prometheus.ca_file to the CA that signed it"
        )
    tls = _find(error, ssl.SSLError)
    if isinstance(tls, ssl.SSLError):
        reason = str(getattr(tls, "reason", None) or tls)
        # What OpenSSL says when the other side answers TLS with plain HTTP.
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
            return f"TLS handshake failed ({reason}): is this port plain HTTP? then use http:// in prometheus.url"
        return f"TLS handshake failed ({_one_line(reason)})"
    if _find(error, requests.exceptions.SSLError):
        return "TLS handshake failed"
    resolution = _find(error, socket.gaierror)
    if isinstance(resolution, socket.gaierror):
        return f"cannot resolve the host name ({_one_line(str(resolution.strerror or resolution))})"
    if _find(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if _find(error, ConnectionRefusedError):
        return "connection refused"
    if _find(error, ConnectionResetError):
        return "connection reset"
    if _find(error, http.client.IncompleteRead, urllib3.exceptions.ProtocolError):
        return "the connection closed before the whole answer arrived"
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.strerror:
            return _one_line(cause.strerror.lower())
    if _find(error, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
        return "invalid URL"
    # Not requests' own message: it quotes pools, URLs and header values.
    return type(error).__name__


def _status_hint(status: int, base_url: str) -> str:
    """
    Given an HTTP error status and prometheus.url, return what the user
    most likely has to fix ("" when nothing specific is known).
    """
    path = urllib.parse.urlsplit(base_url).path.rstrip("/")
    if status == 404:
        if "/api/v1" in path:
            return "prometheus.url must not include /api/v1/...: give the base URL, the query path is added"
        if path:
            return (
                f"is the path prefix {path} right? prometheus.url is what serves /api/v1/query, "
                "e.g. Prometheus's --web.route-prefix"
            )
        return "no query API at this URL: is prometheus.url a Prometheus, and does it need a path prefix?"
    if status in (405, 501):
        # Every Prometheus-compatible server takes the query as a POST form.
        return "this server does not take a POST to /api/v1/query: is prometheus.url a Prometheus?"
    return ""


def _status_phrase(status: int) -> str:
    """Given an HTTP status, return its standard phrase ("" if unknown); HTTP/2 sends none."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _one_line(text: str) -> str:
    """Given server-provided text, return it on one line, cut to a readable length."""
    flat = " ".join(text.split())
    if len(flat) > _MAX_DETAIL_CHARS:
        flat = flat[: _MAX_DETAIL_CHARS - 3] + "..."
    return flat


def _json_type(value: object) -> str:
    """Given a decoded JSON value, return its kind as a message names it."""
    return "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def _mask_url_credentials(url: str, mask: SecretMask) -> None:
    """
    Given prometheus.url, add a password in it to the mask: as written (URL-encoded), decoded,
    and as requests sends it (the base64 of the decoded ``user:password``).
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return
    userinfo = parts.netloc.rpartition("@")[0]
    if not userinfo:
        return
    raw_user, _, raw_password = userinfo.partition(":")
    if not raw_password:
        return
    mask.add(raw_password)
    mask.add_basic(urllib.parse.unquote(raw_user), urllib.parse.unquote(raw_password))
