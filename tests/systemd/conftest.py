"""One lab and one container for the whole systemd suite.

The container boots once per way of installing the units (the plain files
of contrib/systemd/, then the NixOS module's units): each install gets a
fresh overlay and a real boot, since booting is itself under test; the lab
and the container are shared by every scenario. Everything is torn down at
the end of the session, also when a test or a fixture fails.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.nix_module import default_nixpkgs_lib
from tests.systemd.machine import (
    Machine,
    gate_in,
    install_contrib,
    install_nixos,
    install_package,
)
from wglab.container import SystemdContainer, nspawn_missing_reason
from wglab.lab import Lab
from wglab.scenarios import REQUIRED_BINARIES

NEEDED = [*REQUIRED_BINARIES, "wg-quick", "nsenter"]


def skip_reason() -> str | None:
    """Given this machine, return why systemd cannot boot the units here."""
    missing = [binary for binary in NEEDED if shutil.which(binary) is None]
    if missing:
        return f"missing binaries: {', '.join(missing)} (run scripts/install-deps.sh)"
    return nspawn_missing_reason()


@pytest.fixture(scope="session")
def systemd_lab() -> Iterator[Lab]:
    """A three-server lab whose VPN namespace is left without a client: the
    container's tunnel unit brings it up."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with Lab(servers=3) as lab:
        lab.wait_for_metrics(timeout=60)
        lab.stop_client()
        yield lab


@pytest.fixture(scope="session")
def container(systemd_lab: Lab) -> Iterator[SystemdContainer]:
    """The container, mounted, in the lab's VPN namespace (booted by `machine`)."""
    # Inside the lab's work dir: should this process die, the lab's cleanup
    # (python -m wglab.cleanup) unmounts the overlay with the rest.
    with SystemdContainer(netns=systemd_lab.vpn_ns, workdir=systemd_lab.workdir / "container") as box:
        yield box


@pytest.fixture(scope="session")
def gate(systemd_lab: Lab) -> Iterator:
    """The token-checking relay to the lab's Prometheus inside the VPN namespace."""
    with gate_in(systemd_lab, secrets.token_hex(16)) as started:
        yield started


@pytest.fixture(scope="module", params=["contrib", "nixos"])
def machine(request: pytest.FixtureRequest, container: SystemdContainer, systemd_lab: Lab, gate) -> Iterator[Machine]:
    """The container booted with one install of the units."""
    container.reimage()
    scripts = install_package(container)
    if request.param == "contrib":
        installed = install_contrib(container, systemd_lab, gate, scripts)
    else:
        lib = default_nixpkgs_lib()
        if lib is None:
            pytest.skip("no nixpkgs lib: set WGF_NIXPKGS_LIB or provide ../shared/nixpkgs-lib/lib")
        if shutil.which("nix-instantiate") is None:
            pytest.skip("nix-instantiate is not installed (Debian package nix-bin)")
        installed = install_nixos(container, systemd_lab, gate, scripts, lib)
    gate.log.authorized = 0
    gate.log.refused.clear()
    container.boot()
    yield Machine(container, systemd_lab, gate, installed)
    container.poweroff()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failed scenario's report carries the container's journal of this boot."""
    report = yield
    machine = getattr(item, "funcargs", {}).get("machine")
    if report.failed and isinstance(machine, Machine) and machine.box.running:
        try:
            journal = machine.box.journal()
        except (RuntimeError, OSError) as error:
            journal = f"(journal unavailable: {error})"
        report.sections.append(("container journal (this boot)", journal[-30000:]))
    return report
