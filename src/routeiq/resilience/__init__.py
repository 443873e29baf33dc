"""Resilience: load shedding, graceful drain and failure handling for RouteIQ front ends.

Circuit breakers per deployment: :mod:`routeiq.resilience.breakers` (the guard),
:mod:`routeiq.resilience.breaker` (the state machine), :mod:`routeiq.resilience.shared_breakers`
(sharing through Redis); see ``docs/breakers.md``.
"""
