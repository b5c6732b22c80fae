"""The one clamp and the one notion of "unknown" every reading goes through."""

from __future__ import annotations

import math

import pytest

from wgfailover.evidence.readings import HandshakeCheck, TunnelReading, clean_latency, clean_loss


@pytest.mark.parametrize(
    ("value", "loss"),
    [
        (0.0, 0.0),
        (0.25, 0.25),
        (1.0, 1.0),
        (-0.03, 0.0),  # smokeping counted a reply to a request sent before the window
        (1.5, 1.0),
        (math.nan, None),  # 0/0: the prober sent nothing
        (math.inf, None),
        (-math.inf, None),
    ],
)
def test_loss_is_clamped_to_0_1_and_nan_or_inf_is_unknown(value: float, loss: float | None) -> None:
    assert clean_loss(value) == loss


@pytest.mark.parametrize(
    ("value", "latency"),
    [(0.0, 0.0), (0.012, 0.012), (-0.001, None), (math.nan, None), (math.inf, None)],
)
def test_a_negative_or_non_finite_latency_is_unknown(value: float, latency: float | None) -> None:
    assert clean_latency(value) == latency


@pytest.mark.parametrize(
    ("loss", "bad", "phrase"),
    [
        (0.15, False, "loss 0.15 <= 0.15 over 60s"),  # equal is healthy, as the original's `>`
        (0.151, True, "loss 0.151 > 0.15 over 60s"),
        (None, False, "no data over 60s"),
    ],
)
def test_a_tunnel_reading_is_bad_only_strictly_above_the_threshold(loss: float | None, bad: bool, phrase: str) -> None:
    reading = TunnelReading(source="prometheus", loss=loss, span=60)
    assert reading.is_bad(0.15) is bad
    assert reading.has_data is (loss is not None)
    assert reading.describe(0.15) == phrase


@pytest.mark.parametrize(
    ("newest", "age", "bad", "phrase"),
    [
        (None, None, True, "no handshake on wg0 yet"),
        (1000.0, 180.0, False, "newest handshake on wg0 180s ago (limit 180s)"),
        (1000.0, 181.0, True, "newest handshake on wg0 181s ago (limit 180s)"),
    ],
)
def test_a_handshake_reading_is_bad_when_none_or_older_than_the_timeout(
    newest: float | None, age: float | None, bad: bool, phrase: str
) -> None:
    check = HandshakeCheck(interface="wg0", newest=newest, age=age, timeout=180)
    reading = TunnelReading(source="handshake", loss=None, span=None, handshake=check)
    assert reading.has_data
    assert reading.is_bad(0.15) is bad
    assert reading.describe(0.15) == phrase
