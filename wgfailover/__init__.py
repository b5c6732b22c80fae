"""wg-failover: fail a WireGuard tunnel over between VPN servers, decided from Prometheus metrics."""

__version__ = "0.1.0"
