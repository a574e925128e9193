"""Developer tools: synthetic patients and hook scenarios, and a tiny in-memory FHIR server.

Nothing here is used by the running service; it serves the tests, the ``hypermobility-cds fire``
CLI, benchmarks and the loader that puts the fixtures into a real FHIR server.
"""
