"""Several Prometheus URLs: the order they are asked in, the budget shares, the memory of failures."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as requests_mock_module

from wgfailover.config import PrometheusSettings
from wgfailover.errors import PrometheusError, PrometheusUnreachable
from wgfailover.prometheus_pool import (
    FAILED_URLS_FILE,
    FailedUrls,
    attempt_budget,
    open_prometheus,
    order_urls,
    url_key,
)

A = "http://prom-a.test:9090"
B = "http://prom-b.test:9090"
C = "http://prom-c.test:9090"
NOW = 1_700_000_000.0
ANSWER = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [NOW, "0.5"]}]}}


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        ({}, [A, B, C]),  # nothing failed: the configured order
        ({A: NOW - 10}, [B, C, A]),  # a recent failure goes last
        ({A: NOW - 301}, [A, B, C]),  # past url_hold_down (300s): back in its place
        ({A: NOW - 10, B: NOW - 100}, [C, B, A]),  # several held: the longest-failed first
        ({A: NOW + 50}, [B, C, A]),  # recorded in the future (clock stepped back): just now
        ({A: NOW - 10, B: NOW - 10, C: NOW - 10}, [A, B, C]),  # all held at once: configured order
    ],
)
def test_order_urls_tries_recently_failed_urls_last(failed: dict[str, float], expected: list[str]) -> None:
    keyed = {url_key(url): when for url, when in failed.items()}
    assert order_urls([A, B, C], keyed, NOW, hold_down=300) == expected


@pytest.mark.parametrize(
    ("remaining", "untried", "share"),
    [(6.0, 3, 2.0), (5.0, 2, 2.5), (5.0, 1, 5.0), (0.0, 2, 0.0), (-1.0, 1, 0.0), (5.0, 0, 0.0)],
)
def test_attempt_budget_is_an_even_share_of_what_is_left(remaining: float, untried: int, share: float) -> None:
    assert attempt_budget(remaining, untried) == share


def test_the_memory_never_holds_a_url_or_its_password(tmp_path: Path) -> None:
    secret_url = "https://user:hunter2-password@prom.test"
    FailedUrls(tmp_path / FAILED_URLS_FILE).write({url_key(secret_url): NOW})
    text = (tmp_path / FAILED_URLS_FILE).read_text()
    assert "hunter2" not in text and "prom.test" not in text
    assert FailedUrls(tmp_path / FAILED_URLS_FILE).read() == {url_key(secret_url): NOW}


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"k": "soon"}', '{"k": NaN}'])
def test_a_damaged_memory_is_forgotten(tmp_path: Path, content: str) -> None:
    (tmp_path / FAILED_URLS_FILE).write_text(content)
    assert FailedUrls(tmp_path / FAILED_URLS_FILE).read() == {}


def settings(*urls: str, timeout: float = 5.0) -> PrometheusSettings:
    return PrometheusSettings(urls=urls, timeout=timeout)


def remembered(state_dir: Path) -> dict[str, Any]:
    path = state_dir / FAILED_URLS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def test_the_second_url_answers_when_the_first_refuses(
    requests_mock: requests_mock_module.Mocker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    requests_mock.post(f"{B}/api/v1/query", json=ANSWER)
    pool = open_prometheus(settings(A, B), tmp_path, wall_clock=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="wgfailover"):
        assert [sample.value for sample in pool.query("up")] == [0.5]
    assert pool.answered_url == B
    assert f"Prometheus at {B} answered after 1 failed" in caplog.messages
    assert remembered(tmp_path) == {url_key(A): NOW}


def test_a_remembered_failure_is_asked_last_and_cleared_once_it_answers(
    requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    FailedUrls(tmp_path / FAILED_URLS_FILE).write({url_key(A): NOW - 10})
    a = requests_mock.post(f"{A}/api/v1/query", json=ANSWER)
    requests_mock.post(f"{B}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    pool = open_prometheus(settings(A, B), tmp_path, wall_clock=lambda: NOW)
    pool.query("up")
    assert [request.url for request in requests_mock.request_history] == [f"{B}/api/v1/query", f"{A}/api/v1/query"]
    assert a.call_count == 1
    assert remembered(tmp_path) == {url_key(B): NOW}


def test_a_query_error_is_not_held_against_the_url(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    bad_query = {"status": "error", "errorType": "bad_data", "error": "parse error"}
    requests_mock.post(f"{A}/api/v1/query", status_code=400, json=bad_query)
    requests_mock.post(f"{B}/api/v1/query", status_code=400, json=bad_query)
    with pytest.raises(PrometheusError):
        open_prometheus(settings(A, B), tmp_path, wall_clock=lambda: NOW).query("up{")
    assert remembered(tmp_path) == {}


def test_when_every_url_fails_the_error_names_each(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    requests_mock.post(f"{B}/api/v1/query", status_code=503, text="down")
    with pytest.raises(PrometheusError) as raised:
        open_prometheus(settings(A, B), tmp_path, wall_clock=lambda: NOW).query("up")
    message = str(raised.value)
    assert message.startswith("no Prometheus answered within 5s (prometheus.timeout): ")
    assert f"cannot reach Prometheus at {A}" in message and f"Prometheus at {B} answered HTTP 503" in message
    assert remembered(tmp_path) == {url_key(A): NOW, url_key(B): NOW}


def test_one_url_fails_exactly_as_before_and_remembers_nothing(
    requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(PrometheusUnreachable, match=rf"^cannot reach Prometheus at {A}: "):
        open_prometheus(settings(A), tmp_path).query("up")
    assert not (tmp_path / FAILED_URLS_FILE).exists()


def test_a_dry_run_remembers_nothing(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    requests_mock.post(f"{B}/api/v1/query", json=ANSWER)
    open_prometheus(settings(A, B), tmp_path, remember=False).query("up")
    assert not (tmp_path / FAILED_URLS_FILE).exists()


def test_a_missing_state_directory_is_not_created(requests_mock: requests_mock_module.Mocker, tmp_path: Path) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ConnectionError("refused"))
    requests_mock.post(f"{B}/api/v1/query", json=ANSWER)
    open_prometheus(settings(A, B), tmp_path / "absent").query("up")
    assert not (tmp_path / "absent").exists()


class SteppingClock:
    """A monotonic clock that moves a few microseconds at every reading, as a real one does."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 3e-6
        return self.now


def test_a_timeout_names_the_configured_budget_not_the_float_left_of_it(
    requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ReadTimeout)
    clock = SteppingClock()
    with pytest.raises(PrometheusError) as raised:
        open_prometheus(settings(A, timeout=1), tmp_path, clock=clock).query("up")
    assert str(raised.value) == f"no answer from Prometheus at {A} within the 1s budget (prometheus.timeout)"
    # The attempt itself was bounded by what was left, not by a fresh budget.
    assert requests_mock.last_request.timeout[0] < 1


def test_a_url_before_the_last_is_reported_with_its_share_of_the_budget(
    requests_mock: requests_mock_module.Mocker, tmp_path: Path
) -> None:
    requests_mock.post(f"{A}/api/v1/query", exc=requests.exceptions.ReadTimeout)
    requests_mock.post(f"{B}/api/v1/query", exc=requests.exceptions.ConnectTimeout)
    with pytest.raises(PrometheusError) as raised:
        open_prometheus(settings(A, B, timeout=1), tmp_path, clock=SteppingClock()).query("up")
    assert str(raised.value) == (
        "no Prometheus answered within 1s (prometheus.timeout): "
        f"no answer from Prometheus at {A} within its 0.5s share of the 1s budget (prometheus.timeout); "
        f"could not connect to Prometheus at {B} within the 1s budget (prometheus.timeout)"
    )
