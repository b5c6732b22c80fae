"""The renderer that writes the NixOS module's units as NixOS would: what
the systemd suite boots must be what the module declares. Runs everywhere."""

from __future__ import annotations

import pytest

from tests.systemd.render import render_unit, render_units


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"description": "D"}, "[Unit]\nDescription=D\n\n[Service]\n"),
        ({"after": ["a.service", "b.service"]}, "[Unit]\nAfter=a.service\nAfter=b.service\n\n[Service]\n"),
        ({"onFailure": ["f.service"]}, "[Unit]\nOnFailure=f.service\n\n[Service]\n"),
        ({"unitConfig": {"StartLimitIntervalSec": 0}}, "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\n"),
        ({"serviceConfig": {"RemainAfterExit": True}}, "[Unit]\n\n[Service]\nRemainAfterExit=true\n"),
        (
            {"serviceConfig": {"ReadWritePaths": ["/a", "/b"]}},
            "[Unit]\n\n[Service]\nReadWritePaths=/a\nReadWritePaths=/b\n",
        ),
        ({"environment": {"X": "1"}}, "[Unit]\n\n[Service]\nEnvironment=X=1\n"),
        # Options left at their defaults write nothing.
        ({"after": [], "script": "", "path": ["systemd"], "serviceConfig": {}}, "[Unit]\n\n[Service]\n"),
    ],
)
def test_a_service_is_written_as_nixos_writes_it(attrs: dict, expected: str) -> None:
    assert render_unit("x", attrs, "service")[0] == expected


def test_wanted_by_becomes_a_link_in_the_target_wants_directory() -> None:
    rendered = render_units({"wg-select": {"wantedBy": ["wg.service"]}}, {"t": {"wantedBy": ["timers.target"]}})
    assert rendered.links == {
        "wg.service.wants/wg-select.service": "../wg-select.service",
        "timers.target.wants/t.timer": "../t.timer",
    }
    assert rendered.files["t.timer"] == "[Unit]\n\n[Timer]\n"


def test_an_attribute_the_renderer_does_not_know_fails_instead_of_vanishing() -> None:
    with pytest.raises(ValueError, match="x.service: the renderer does not know the NixOS unit attribute 'script'"):
        render_unit("x", {"script": "wg-quick up wg0"}, "service")
