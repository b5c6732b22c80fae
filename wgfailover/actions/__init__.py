"""Actions: what each command does, in order.

Read the state, gather the evidence, ask the policy, act, record. One module
per command: ``select`` (wg-select), ``failover`` (wg-failover),
``health_check`` (wg-health-check).
"""
