"""Performance benchmarks for the CDS service (issue 7). Run them all with ``make bench``.

``python -m benchmarks`` measures, in one run: hook calls in process for charts of ~100, 1,000
and 10,000 resources, the service under gunicorn against a bare Flask "floor" app (wrk on
loopback), the FHIR fallback against a slow local FHIR server, and a worker's peak RSS. It
prints a table and writes the figures as JSON under ``benchmarks/results/``.
"""
