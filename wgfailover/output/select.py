"""What wg-select prints: the server the tunnel starts with, or JSON."""

from __future__ import annotations

from typing import Any

from wgfailover.actions.select import Selection


def describe_selection(selection: Selection) -> str:
    """Given a Selection, return what wg-select prints: the server's name alone, for scripts."""
    return selection.server


def selection_to_json(selection: Selection) -> dict[str, Any]:
    """Given a Selection, return it as a JSON-ready dict."""
    return {"server": selection.server, "restored": selection.restored, "problem": selection.problem}
