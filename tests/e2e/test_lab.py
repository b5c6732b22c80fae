"""The lab itself works: tunnel, switching, loss visible in Prometheus,
complete teardown. Every other e2e test builds on these guarantees.

Needs root (namespaces, nftables, TUN) and the Debian binaries; skipped
with the reason otherwise. Waits poll with deadlines; nothing asserts on
wall-clock time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wglab import wireguard
from wglab.cleanup import REGISTRY_DIR
from wglab.lab import INTERNET_ADDRESSES, Lab
from wglab.netns import list_netns
from wglab.processes import pid_alive, wait_until

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project supports 3.9+
    import tomli as tomllib

REQUIRED_BINARIES = ["ip", "nft", "ping", "wg", "wireguard-go", "prometheus", "prometheus-smokeping-prober"]
MISSING = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces, nftables, TUN)"),
    pytest.mark.skipif(bool(MISSING), reason=f"missing binaries: {', '.join(MISSING)} (run .ci/run or apt install)"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A three-server lab shared by the tests of this module, with data."""
    with Lab(servers=3) as built:
        built.wait_for_metrics(timeout=60)
        yield built


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[Lab]:
    """The shared lab, back on server1 with no loss after each test."""
    yield lab
    for name in lab.server_names:
        lab.set_loss(name, 0)
    lab.set_tunnel_loss(0)
    if lab.active_server() != "server1":
        lab.switch_to("server1")
    # The next test must not see this one's losses still inside the rate()
    # window: wait until Prometheus shows a clean lab again.
    wait_until(lambda: _is_clean(lab), 60, 0.5, what="the lab's losses gone from the 5s window")


def _is_clean(lab: Lab) -> bool:
    loss = lab.endpoint_loss("5s")
    return len(loss) == len(lab.server_names) and all(quiet(v) for v in loss.values()) and quiet(vpn_loss(lab))


def quiet(loss: float | None) -> bool:
    """No injected loss: a reply counted a scrape after its request can make
    an undisturbed series differ from 0 by a sample's worth, never by 5%."""
    return loss is not None and abs(loss) < 0.05


def vpn_loss(lab: Lab, window: str = "5s") -> float:
    """Tunnel loss over every vpn-prober series, as the health check sees it."""
    assert lab.prometheus is not None
    sel = 'job="vpn-prober"'
    result = lab.prometheus.query(
        f"1 - sum(rate(smokeping_response_duration_seconds_count{{{sel}}}[{window}]))"
        f" / sum(rate(smokeping_requests_total{{{sel}}}[{window}]))"
    )
    return float(result[0]["value"][1]) if result else float("nan")


def test_lab_comes_up_with_a_working_tunnel(clean_lab: Lab) -> None:
    lab = clean_lab
    assert lab.active_server() == "server1"
    assert lab.active_link.resolve() == lab.config_dir / "server1"
    assert wait_until(lab.ping_through_tunnel, 15, what="ping through the tunnel")
    for addr in INTERNET_ADDRESSES:
        assert lab.ping_through_tunnel(addr)
    assert set(list_netns(lab.prefix + "-")) == {
        lab.router_ns,
        lab.vpn_ns,
        lab.mon_ns,
        *lab.server_ns.values(),
    }


def test_client_configs_are_wg_quick_files_named_after_servers(clean_lab: Lab) -> None:
    lab = clean_lab
    for name in lab.server_names:
        parsed = wireguard.parse_wg_quick((lab.config_dir / name).read_text())
        assert parsed.endpoints == [lab.endpoint(name)]
        assert parsed.addresses == ["10.201.0.2/24"]
        assert "Address" not in parsed.setconf_text


def test_switching_link_and_restarting_moves_traffic(clean_lab: Lab) -> None:
    lab = clean_lab
    before = lab.server_rx_bytes("server2")
    lab.point_link("server2")
    subprocess.run(lab.restart_command, check=True, capture_output=True, timeout=60)
    assert lab.active_server() == "server2"
    assert wait_until(lab.ping_through_tunnel, 15, what="ping through the tunnel to server2")
    wait_until(lambda: lab.server_rx_bytes("server2") > before, 15, what="server2 receiving tunnel traffic")


def test_endpoint_loss_shows_in_prometheus_for_that_server_only(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.set_loss("server2", 100)

    def server2_down() -> dict[str, float] | None:
        loss = lab.endpoint_loss("5s")
        ok = loss.get("server2", 0) > 0.95 and quiet(loss.get("server1")) and quiet(loss.get("server3"))
        return loss if ok else None

    wait_until(server2_down, 30, 0.5, what="100% loss on server2 only")

    lab.set_loss("server2", 0)
    lab.set_loss("server3", 50)

    def server3_partial() -> dict[str, float] | None:
        loss = lab.endpoint_loss("10s")
        ok = 0.2 < loss.get("server3", 0) < 0.8 and quiet(loss.get("server1")) and quiet(loss.get("server2"))
        return loss if ok else None

    wait_until(server3_partial, 40, 0.5, what="about 50% loss on server3 only")


def test_endpoint_loss_on_active_server_breaks_the_tunnel(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.set_loss("server1", 100)
    wait_until(lambda: vpn_loss(lab) > 0.95, 30, 0.5, what="vpn-prober seeing the outage")
    assert not lab.ping_through_tunnel(count=2)
    lab.switch_to("server3")
    wait_until(lab.ping_through_tunnel, 15, what="ping through server3 while server1 is down")


def test_tunnel_loss_is_invisible_to_the_external_prober(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.set_tunnel_loss(100, "server1")
    wait_until(lambda: vpn_loss(lab) > 0.95, 30, 0.5, what="vpn-prober seeing the tunnel loss")
    assert quiet(lab.endpoint_loss("5s").get("server1"))


def test_restart_with_a_dangling_link_fails_and_keeps_the_tunnel(clean_lab: Lab) -> None:
    lab = clean_lab
    lab.active_link.unlink()
    lab.active_link.symlink_to(lab.config_dir / "no-such-server")
    result = subprocess.run(lab.restart_command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    lab.point_link("server1")
    assert lab.active_server() == "server1"
    assert wait_until(lab.ping_through_tunnel, 15, what="tunnel still up")


def test_write_config_is_valid_toml_pointing_at_the_lab(clean_lab: Lab, tmp_path: Path) -> None:
    lab = clean_lab
    path = lab.write_config(tmp_path / "config.toml", health={"threshold": 0.3}, **{"prometheus.timeout": 2})
    config = tomllib.loads(path.read_text())
    assert config["config_dir"] == str(lab.config_dir)
    assert config["active_link"] == str(lab.active_link)
    assert config["restart_command"] == lab.restart_command
    assert config["servers"] == {n: {"endpoint": lab.endpoint_ip[n]} for n in lab.server_names}
    assert config["prometheus"] == {"url": lab.prometheus_url, "timeout": 2}
    assert config["health"]["threshold"] == 0.3
    assert config["health"]["max_failures"] == 3
    removed = tomllib.loads(lab.write_config(tmp_path / "c2.toml", textfile_dir=None).read_text())
    assert "textfile_dir" not in removed


def _lab_pids(lab: Lab) -> list[int]:
    pids = list(lab._server_pids.values())
    for comp in (lab.prometheus, lab.external_prober, lab.internal_prober):
        assert comp is not None and comp.process is not None
        pids.append(comp.process.pid)
    forwarders = [p.forwarder for p in (lab.external_prober, lab.internal_prober) if p is not None]
    pids += [f.pid for f in forwarders if f is not None]
    client = wireguard.read_pidfile(lab.workdir / f"{lab.client_iface}.pid")
    assert client is not None
    return [*pids, client]


def _assert_gone(lab: Lab, pids: list[int]) -> None:
    assert list_netns(lab.prefix) == []
    assert list(wireguard.WG_SOCKET_DIR.glob(f"{lab.prefix}*")) == []
    assert [p for p in pids if pid_alive(p)] == []
    assert not lab.workdir.exists()
    assert not (REGISTRY_DIR / f"{lab.lab_id}.json").exists()


def test_teardown_leaves_nothing_behind() -> None:
    with Lab(servers=2) as lab:
        pids = _lab_pids(lab)
        assert all(pid_alive(p) for p in pids)
    _assert_gone(lab, pids)
    lab.teardown()  # idempotent


def test_cleanup_removes_a_crashed_lab() -> None:
    lab = Lab(servers=2)
    try:
        lab.up()
        pids = _lab_pids(lab)
        state = json.loads(lab.lab_state_path.read_text())
        assert state["lab_id"] == lab.lab_id
        # The owner (this process) is alive, so a plain cleanup keeps it...
        subprocess.run([sys.executable, "-m", "wglab.cleanup"], cwd=REPO_ROOT, check=True, capture_output=True)
        assert list_netns(lab.prefix)
        # ...and --lab-id removes it as if its owner had crashed.
        out = subprocess.run(
            [sys.executable, "-m", "wglab.cleanup", "--lab-id", lab.lab_id],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert f"namespace {lab.vpn_ns}" in out
        _assert_gone(lab, pids)
    finally:
        lab.teardown()
