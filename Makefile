# The two commands in the README: `make run` and `make test`. Both install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install docs clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## Serve the service on http://127.0.0.1:8000 with the development profile (embedded SQLite).
run: $(STAMP)
	$(BIN)/hypermobility-cds serve --profile development

## Lint, check generated files, and run the test suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## Every fixture scenario against a real FHIR R4 server (needs Node.js >= 20 and npm).
.PHONY: integration
integration: $(STAMP)
	bash integration/fhir-server/run-tests.sh $(BIN)/python

## Performance benchmarks (issue 7): prints a table, writes benchmarks/results/*.json.
## The HTTP part needs wrk: `apt-get install -y wrk`.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## Reliability (issue 8). Generated bad input, >= 5,000 requests by default: schemathesis on
## /openapi.json and hypothesis on FHIR payloads; zero 5xx; report in var/fuzz-report.json.
FUZZ_EXAMPLES ?= 300
FUZZ_MIN_REQUESTS ?= 5000
FUZZ_RANDOM ?= 1
.PHONY: fuzz soak reliability
fuzz: $(STAMP)
	mkdir -p var
	CDS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CDS_FUZZ_MIN_REQUESTS=$(FUZZ_MIN_REQUESTS) \
		CDS_FUZZ_RANDOM=$(FUZZ_RANDOM) \
		CDS_FUZZ_REPORT=var/fuzz-report.json $(BIN)/python -m pytest tests/fuzz

## Soak: steady mixed traffic against `hypermobility-cds serve` (5 min at 20 req/s by default);
## zero errors, no feedback lost, worker RSS at start and end; report in var/soak-report.json.
SOAK_SECONDS ?= 300
SOAK_RATE ?= 20
soak: $(STAMP)
	$(BIN)/python -m tools.soak --duration $(SOAK_SECONDS) --rate $(SOAK_RATE) \
		--json var/soak-report.json

## Slow reliability tests: kill -9 of workers under concurrent feedback writers, SIGTERM drain,
## readiness on a read-only database, every failing-EHR mode under gunicorn.
reliability: $(STAMP)
	CDS_SLOW_TESTS=1 $(BIN)/python -m pytest tests/reliability -m slow

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
