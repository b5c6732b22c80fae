"""Unit files from the NixOS module's evaluated `systemd.services` and
`systemd.timers`, written as NixOS writes them, so the suite boots exactly
what the module declares.

NixOS turns each attribute set into a unit file: the top-level dependency
lists and `unitConfig` into [Unit], `serviceConfig` (or `timerConfig`) into
[Service] (or [Timer]), `environment` into Environment= lines; a list value
becomes one line per element, a boolean `true`/`false`; `wantedBy` becomes a
link in TARGET.wants/. An attribute this renderer does not know fails the
test instead of being dropped, so a module change cannot silently boot a
different unit than NixOS would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Top-level options NixOS writes into [Unit], with their directive names.
UNIT_LISTS = {
    "after": "After",
    "before": "Before",
    "wants": "Wants",
    "requires": "Requires",
    "bindsTo": "BindsTo",
    "partOf": "PartOf",
    "conflicts": "Conflicts",
    "requisite": "Requisite",
    "upholds": "Upholds",
    "onFailure": "OnFailure",
    "onSuccess": "OnSuccess",
}
UNIT_SCALARS = {
    "description": "Description",
    "documentation": "Documentation",
    "startLimitIntervalSec": "StartLimitIntervalSec",
    "startLimitBurst": "StartLimitBurst",
}
INSTALL_LISTS = {"wantedBy": "wants", "requiredBy": "requires", "upheldBy": "upholds"}
# NixOS options that produce nothing in the unit file, or nothing the
# container needs: `path` becomes PATH=, and the container's default PATH
# already holds systemctl (what the module puts there); the rest steer
# nixos-rebuild, not systemd.
IGNORED = {
    "path",
    "restartIfChanged",
    "reloadIfChanged",
    "stopIfChanged",
    "restartTriggers",
    "reloadTriggers",
    "enable",
}


@dataclass
class RenderedUnits:
    """Unit files by name, and the links (`X.wants/NAME` -> `NAME`) that
    enable them."""

    files: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


def directive_value(value: Any) -> str:
    """Given a NixOS unit option value (str, int, float, bool), return it as
    written after `Key=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into a unit file")


def section(name: str, directives: Mapping[str, Any]) -> str:
    """Given a section name and {Key: value or list}, return the section's
    text: one `Key=value` line per value, lists in order, empty lists left out."""
    lines = [f"[{name}]"]
    for key, value in directives.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={directive_value(item)}")
    return "\n".join(lines) + "\n"


def render_unit(name: str, attrs: Mapping[str, Any], kind: str) -> tuple[str, dict[str, str]]:
    """Given a unit name without suffix, its evaluated NixOS attribute set
    and its kind ("service" or "timer"), return (unit file text, {link path:
    link target}). Raise ValueError naming an attribute it cannot render."""
    unit_file = f"{name}.{kind}"
    unit: dict[str, Any] = {}
    body_key = "serviceConfig" if kind == "service" else "timerConfig"
    body: dict[str, Any] = {}
    links: dict[str, str] = {}
    for key, value in attrs.items():
        if key in IGNORED or value in (None, "", [], {}):
            continue
        if key in UNIT_LISTS:
            unit[UNIT_LISTS[key]] = list(value)
        elif key in UNIT_SCALARS:
            unit[UNIT_SCALARS[key]] = value
        elif key == "unitConfig":
            unit.update(value)
        elif key == body_key:
            body.update(value)
        elif key == "environment" and kind == "service":
            body.setdefault("Environment", []).extend(f"{var}={val}" for var, val in value.items())
        elif key in INSTALL_LISTS:
            for target in value:
                links[f"{target}.{INSTALL_LISTS[key]}/{unit_file}"] = f"../{unit_file}"
        else:
            raise ValueError(f"{unit_file}: the renderer does not know the NixOS unit attribute {key!r} = {value!r}")
    text = section("Unit", unit) + "\n" + section(kind.capitalize(), body)
    return text, links


def render_units(services: Mapping[str, Any], timers: Mapping[str, Any]) -> RenderedUnits:
    """Given the evaluated `systemd.services` and `systemd.timers`, return
    every unit file and enabling link NixOS would install."""
    rendered = RenderedUnits()
    for kind, units in (("service", services), ("timer", timers)):
        for name, attrs in units.items():
            text, links = render_unit(name, attrs, kind)
            rendered.files[f"{name}.{kind}"] = text
            rendered.links.update(links)
    return rendered
