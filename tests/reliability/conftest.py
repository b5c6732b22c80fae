"""Fixtures of the reliability tests: a fake Prometheus and a refusing port, both cleaned up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.helpers import FakePrometheus, refusing_port, serve


@pytest.fixture
def fake_prometheus() -> Iterator[FakePrometheus]:
    """A real HTTP server in this process answering every query with a loss of 0.5."""
    yield from serve(FakePrometheus())


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test."""
    yield from refusing_port()
