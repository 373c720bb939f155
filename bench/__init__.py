"""flowdeck benchmarks: ``python -m bench`` runs them all; each prints its figures beside a
baseline measured in the same run.  Benchmarks are not tests and never fail on speed."""
