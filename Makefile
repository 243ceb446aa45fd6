# Two commands for a newcomer: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Re-install whenever pyproject.toml changes.
STAMP_APP := $(VENV)/.stamp-app-$(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP_DEV := $(VENV)/.stamp-dev-$(shell cksum pyproject.toml | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-sqlite test-postgres fuzz screenshots lint bench tiny-models docs-config clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_APP): | $(VENV)/bin/python
	$(PIP) install -q -e '.[ml]'
	touch $@

$(STAMP_DEV): | $(VENV)/bin/python
	$(PIP) install -q -e '.[ml,eval,dev]'
	touch $@ $(STAMP_APP)

## make run: install, migrate and start the app with embedded defaults on http://127.0.0.1:8000
run: $(STAMP_APP)
	$(VENV)/bin/repic serve --host $(HOST) --port $(PORT)

## make test: install dev extras, start what the tests need, run the suite on SQLite and PostgreSQL
test: $(STAMP_DEV)
	VENV=$(VENV) scripts/test.sh

## make fuzz: the schemathesis run of `make test`, longer (FUZZ_MAX_EXAMPLES per operation), on PostgreSQL
FUZZ_MAX_EXAMPLES ?= 300
FUZZ_SEED ?= 13
fuzz: $(STAMP_DEV)
	scripts/test-services.sh
	HF_HUB_OFFLINE=1 FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) \
	REPIC_TEST_DATABASE_URL=$${REPIC_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test} \
	$(PY) -m pytest tests/test_api_fuzz.py -s -p no:cacheprovider

## make screenshots: every page at 1280 and 390 px into screenshots/ (git-ignored), for reviewers
screenshots: $(STAMP_DEV)
	VENV=$(VENV) scripts/screenshots.sh

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check app worker trainer tests bench
	$(VENV)/bin/mypy app worker trainer

tiny-models: $(STAMP_APP)
	$(VENV)/bin/repic models build-tiny data/models/tiny

docs-config: $(STAMP_APP)
	$(VENV)/bin/repic config docs > docs/configuration.md

clean-venv:
	rm -rf $(VENV)
