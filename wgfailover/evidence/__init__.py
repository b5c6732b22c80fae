"""Evidence: asking Prometheus or WireGuard what happened.

Each module answers one question and returns plain readings (readings.py);
none of them decides anything. ``servers_loss`` is the external prober's
loss and latency of every server, ``tunnel`` the loss inside the tunnel,
``handshake`` WireGuard's newest handshake. A value that is NaN, infinite
or missing is unknown (None), never 0, and loss is clamped in one place.
"""
