"""The textfile: the last switch's reason, the switch counter, server names for endpoints."""

from __future__ import annotations

from wgfailover.config import Config
from wgfailover.metrics import render_metrics
from wgfailover.state import StateDir


def test_the_last_switch_is_one_info_series_with_from_to_and_reason(config: Config) -> None:
    state = StateDir(config.state_dir)
    state.ensure()
    state.write_current("server2")
    state.append_history(time=100, from_server=None, to_server="server1", reason="first")
    state.append_history(
        time=200,
        from_server="server1",
        to_server="server2",
        reason='health-check: loss 1 > 0.15 for 3 checks\nby "me"',
        losses={"server1": 1 - 0.55, "server2": 0.0},
    )
    text = render_metrics(state, config.servers)
    info = [line for line in text.splitlines() if line.startswith("wg_failover_last_switch_info")]
    assert info == [
        'wg_failover_last_switch_info{from="server1",to="server2",'
        'reason="health-check: loss 1 > 0.15 for 3 checks\\\\nby \\"me\\""} 1'
    ]
    assert "# TYPE wg_failover_switches_total counter\nwg_failover_switches_total 2\n" in text
    assert 'wg_failover_server_loss_ratio{server="server1"} 0.45\n' in text


def test_each_server_endpoint_is_named_for_the_dashboard(config: Config) -> None:
    text = render_metrics(StateDir(config.state_dir), config.servers)
    assert [line for line in text.splitlines() if line.startswith("wg_failover_server_endpoint_info")] == [
        'wg_failover_server_endpoint_info{server="server1",host="192.0.2.10"} 1',
        'wg_failover_server_endpoint_info{server="server2",host="192.0.2.20"} 1',
        'wg_failover_server_endpoint_info{server="server3",host="192.0.2.30"} 1',
    ]
