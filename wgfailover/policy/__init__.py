"""Policy: every decision rule, as pure functions.

Given evidence, settings, state and a time, each function returns a decision
and its reason. No I/O, no clock, no global randomness (a random.Random is
passed in), so the live commands and ``wg-health-check --backtest`` run the
same rules, and tables of evidence in and decisions out test them.

- ``spans``: which stretch of time a health check judges.
- ``health``: the failure counter, and when it calls for a failover.
- ``ranking``: which server to fail over to (hold-down, priority tiers).
- ``local_fault``: is every server lossy, so switching cannot help.
- ``probation``: is a newly chosen server confirmed, or is it time to move on.
- ``failback``: is it time to return to a more preferred server.
"""
