"""Test and demo lab for wg-failover: real Prometheus, smokeping probers and
WireGuard tunnels between network namespaces.

This package is test infrastructure only; it is not shipped with
``wgfailover``. It uses nothing but the standard library so that the lab can
be built before (or without) the project's virtualenv.
"""
