"""What wg-select prints: the name alone (for scripts), or JSON."""

from __future__ import annotations

from wgfailover.actions.select import Selection
from wgfailover.output.select import describe_selection, selection_to_json


def test_the_text_is_the_server_name_alone() -> None:
    assert describe_selection(Selection(server="server2", restored=True)) == "server2"


def test_the_json_says_whether_it_was_restored_and_why_not() -> None:
    picked = Selection(server="server1", restored=False, problem="/var/lib/wg-failover/current is empty")
    assert selection_to_json(picked) == {
        "server": "server1",
        "restored": False,
        "problem": "/var/lib/wg-failover/current is empty",
    }
