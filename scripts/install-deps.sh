#!/usr/bin/env bash
# Install the Debian packages behind the real parts of the test suite and the
# lab: Prometheus, the smokeping prober, VictoriaMetrics (and its vmalert, which
# evaluates the fleet benchmark's recording rules), userspace WireGuard,
# nftables for packet loss, nix-instantiate for the module, systemd-analyze,
# systemd-nspawn (systemd-container) to boot the units under a real systemd,
# with the tool installed for Debian's python3 (its click, requests, venv);
# curl, jq, bc and gawk run the original scripts beside ours in benchmarks,
# hyperfine times them.
# Idempotent: asks apt only for what is missing. Without root it only warns,
# and the tests that need those parts skip with the reason.
set -euo pipefail

packages=(
  prometheus prometheus-smokeping-prober victoria-metrics
  wireguard-go wireguard-tools nftables iproute2 iputils-ping
  nix-bin systemd systemd-container curl jq bc gawk hyperfine
  python3-venv python3-click python3-requests python3-setuptools python3-wheel
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; missing Debian packages: ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
