"""The columns of the overview's rollup (``roadie_minutes``, ``roadie_hours``): shared by the
tables (``roadie.models``) and the counting (``roadie.rollup``), without SQLAlchemy, so that a
process that counts but never writes (a host) does not load it."""

ROLLUP_BUCKETS = 28  # histogram buckets: < 1 ms, then [2^(i-1), 2^i) ms, the last open-ended
ROLLUP_COUNTS = ("started", "succeeded", "failed", "cancelled")
ROLLUP_HISTOGRAMS = tuple(f"{kind}_{i}" for kind in ("wait", "run")
                          for i in range(ROLLUP_BUCKETS))
