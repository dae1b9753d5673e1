"""Policies with memory: circuit breakers (``breakers``), bulkheads (``bulkheads``) and
background health probes (``health``). Each is a small object with one job."""
