"""Ask the first of several Prometheus URLs that answers, within one time budget.

``prometheus.url`` may list several servers (an HA pair, or a local
Prometheus and a central one). One budget, ``prometheus.timeout``, covers
every attempt of a command: each URL still to try gets an even share of
what is left, so a first URL that accepts connections and never answers
costs half the budget, not all of it, and the second is still asked. A URL
that failed is remembered in ``state_dir/prometheus-failed.json`` and tried
after the others for ``prometheus.url_hold_down``, so a dead first URL does
not cost every run its share again.

The order and the shares are decided by pure functions (order_urls,
attempt_budget); PrometheusPool does the asking and the remembering. The
memory file is keyed by a hash of each URL, never the URL itself, which may
hold a password.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

from wgfailover.config import PrometheusSettings
from wgfailover.errors import PrometheusError, PrometheusHTTPError, StateError
from wgfailover.fsutil import atomic_write, read_regular_file
from wgfailover.prometheus import PrometheusClient, Sample, Series
from wgfailover.prometheus import _redact_url as redact_url  # one redaction rule for every message

log = logging.getLogger(__name__)

FAILED_URLS_FILE = "prometheus-failed.json"

_T = TypeVar("_T")

# HTTP statuses that say the query is wrong, not the server: every server of
# an HA pair would answer the same, so the URL is not held down for them.
_QUERY_ERROR_STATUSES = frozenset({400, 422})


def url_key(url: str) -> str:
    """Given a URL, return the key it is remembered under (a hash: the URL may hold a password)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def order_urls(urls: Sequence[str], failed: Mapping[str, float], now: float, hold_down: float) -> list[str]:
    """
    Given the configured URLs in preference order, {url_key: unix time it
    last failed}, the unix time now and the hold-down in seconds, return the
    order to try them in: URLs without a failure within hold_down first, in
    the configured order, then the held-down ones, the longest-failed first
    (it is the likeliest to be back). A failure recorded in the future
    (clock stepped back) counts as just now.
    """
    fresh = []
    held: list[tuple[float, int, str]] = []
    for index, url in enumerate(urls):
        when = failed.get(url_key(url))
        if when is not None and now - min(when, now) < hold_down:
            held.append((min(when, now), index, url))
        else:
            fresh.append(url)
    return fresh + [url for _, _, url in sorted(held)]


def attempt_budget(remaining: float, untried: int) -> float:
    """
    Given the seconds left of the budget and how many URLs are still to try
    (this one included), return the seconds this attempt may take: an even
    share, so a hung URL leaves the same to each one after it.
    """
    if untried <= 0 or remaining <= 0:
        return 0.0
    return remaining / untried


@dataclasses.dataclass
class FailedUrls:
    """The remembered failures: a small JSON file {url_key: unix time}, read and written best-effort."""

    path: Path | None  # None: remember nothing (one URL, or no state directory)
    writable: bool = True  # False for dry runs, which change nothing

    def read(self) -> dict[str, float]:
        """Return {url_key: unix time of its last failure}; {} if there is no readable memory."""
        if self.path is None:
            return {}
        try:
            data = json.loads(read_regular_file(self.path, 64 * 1024))
        except (OSError, ValueError):
            # Missing (no failure yet) or damaged: forgetting costs one slow attempt at most.
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            key: float(value)
            for key, value in data.items()
            if isinstance(key, str) and isinstance(value, (int, float)) and math.isfinite(value)
        }

    def write(self, failed: Mapping[str, float]) -> None:
        """Replace the memory with {url_key: time}; a failure to write is logged, never raised."""
        if self.path is None or not self.writable or not self.path.parent.is_dir():
            return
        try:
            atomic_write(self.path, (json.dumps(dict(sorted(failed.items()))) + "\n").encode("utf-8"))
        except StateError as error:
            # The decision matters more than the memory of a slow URL.
            log.debug("not remembering failed Prometheus URLs: %s", error)


class PrometheusPool:
    """
    Instant queries against the first of settings.urls that answers, all
    within settings.timeout from now. Given the settings, the memory of
    failed URLs, a monotonic clock, a wall clock (for the memory) and
    optionally a requests.Session shared by every attempt.
    """

    def __init__(
        self,
        settings: PrometheusSettings,
        failed_urls: FailedUrls | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        self._settings = settings
        self._failed_urls = failed_urls or FailedUrls(None)
        self._clock = clock
        self._wall_clock = wall_clock
        self._session = session
        shared = _SHARED_DEADLINE.get()
        if shared is None:
            self._deadline = clock() + float(settings.timeout)
        else:
            # Inside one_budget(): the first pool of the command starts the
            # budget, every later one spends what is left of it.
            if not shared:
                shared.append(clock() + float(settings.timeout))
            self._deadline = shared[0]
        self._answered: str | None = None  # the URL that answered last; asked first next time
        self.answered_url: str | None = None  # redacted, for logs and reports

    def remaining(self) -> float:
        """Return the seconds left of the time budget (0 once it is spent)."""
        return max(0.0, self._deadline - self._clock())

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """
        Given a PromQL expression (and a unix time; None: now), return the
        samples from the first URL that answers. With one URL, raise exactly
        what PrometheusClient.query raises; with several, raise
        PrometheusError naming each URL and why it failed. Raise ConfigError
        if a credential file can't be read.
        """
        return self._first_answer(lambda client: client.query(promql, at))

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """Given what PrometheusClient.query_range takes, return its answer from the first URL that answers."""
        return self._first_answer(lambda client: client.query_range(promql, start, end, step))

    def get(self, path: str) -> dict[str, Any]:
        """Given an API path, return PrometheusClient.get's answer from the first URL that answers."""
        return self._first_answer(lambda client: client.get(path))

    def _first_answer(self, ask: Callable[[PrometheusClient], _T]) -> _T:
        """Given what to ask one client, return the answer of the first URL that gives one."""
        urls = list(self._settings.urls)
        if len(urls) <= 1:
            return self._ask(urls[0] if urls else None, ask, self.remaining(), share=False)
        failed = self._failed_urls.read()
        order = order_urls(urls, failed, self._wall_clock(), self._settings.url_hold_down)
        if self._answered in order:
            order.remove(self._answered)
            order.insert(0, self._answered)
        problems: list[str] = []
        changed = False
        for index, url in enumerate(order):
            share = attempt_budget(self.remaining(), len(order) - index)
            try:
                # The last one has all that is left: its timeout is the budget's.
                answer = self._ask(url, ask, share, share=index < len(order) - 1)
            except PrometheusError as error:
                problems.append(str(error))
                if not (isinstance(error, PrometheusHTTPError) and error.status in _QUERY_ERROR_STATUSES):
                    failed[url_key(url)] = self._wall_clock()
                    changed = True
                continue
            self._answered = url
            self.answered_url = redact_url(url)
            changed |= failed.pop(url_key(url), None) is not None
            if changed:
                self._failed_urls.write(failed)
            skipped = f" after {len(problems)} failed" if problems else ""
            log.info("Prometheus at %s answered%s", self.answered_url, skipped)
            return answer
        if changed:
            self._failed_urls.write(failed)
        budget = f"{self._settings.timeout:g}s"
        raise PrometheusError(f"no Prometheus answered within {budget} (prometheus.timeout): " + "; ".join(problems))

    def _ask(self, url: str | None, ask: Callable[[PrometheusClient], _T], time_limit: float, *, share: bool) -> _T:
        # The client keeps the configured timeout, so its messages name the
        # budget the user set; time_limit is what is left of it for this attempt.
        settings = dataclasses.replace(self._settings, url=url, urls=(url,) if url else ())
        with PrometheusClient(
            settings, clock=self._clock, session=self._session, time_limit=time_limit, share=share
        ) as client:
            return ask(client)


# The deadline every pool of one command shares (see one_budget); a list so
# the first pool can start it. None: each pool has a budget of its own.
_SHARED_DEADLINE: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "wgfailover_prometheus_deadline", default=None
)


@contextlib.contextmanager
def one_budget() -> Iterator[None]:
    """
    Within the block, every PrometheusPool opened shares one time budget of
    prometheus.timeout, started by the first: a command that asks Prometheus
    several times (wg-health-check measuring the tunnel, then failing over
    in-process and ranking the servers) waits for it no longer in all than
    prometheus.timeout, as documented, instead of once per question.
    """
    token = _SHARED_DEADLINE.set([])
    try:
        yield
    finally:
        _SHARED_DEADLINE.reset(token)


@contextlib.contextmanager
def own_budget() -> Iterator[None]:
    """Within the block, pools have budgets of their own (a probation, which waits for new data by design)."""
    token = _SHARED_DEADLINE.set(None)
    try:
        yield
    finally:
        _SHARED_DEADLINE.reset(token)


def open_prometheus(
    settings: PrometheusSettings,
    state_dir: Path,
    *,
    remember: bool = True,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    session: requests.Session | None = None,
) -> PrometheusPool:
    """
    Given the Prometheus settings and the state directory, return the pool a
    command queries through; its budget starts now (inside one_budget(), the
    command's budget is shared, started by its first pool). With remember False (a
    dry run), failed URLs are read from the memory but not written to it.
    """
    memory_path = state_dir / FAILED_URLS_FILE if len(settings.urls) > 1 else None
    return PrometheusPool(
        settings,
        FailedUrls(memory_path, writable=remember),
        clock=clock,
        wall_clock=wall_clock,
        session=session,
    )
