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

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
