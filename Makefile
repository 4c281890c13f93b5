# Two commands for a fresh machine with Python 3.11+ and make: `make demo` and `make test`.
# `make lint` runs the checkers CI runs before the tests (ruff, mypy, import-linter).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench cluster-test clean translations translations-template

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "newsletter needs Python 3.11 or newer; found " + sys.version.split()[0] + " (set PYTHON=python3.x)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

demo: install
	@bash examples/demo.sh

# The suite runs in one process per core (at most 4): most tests wait on workers and SMTP.
# TEST_JOBS=0 runs it in this one process.
TEST_JOBS ?= auto
test: install
	$(BIN)/python -m pytest -n $(TEST_JOBS) --maxprocesses 4 $(PYTEST_ARGS)

# The checkers, configured in pyproject.toml: ruff (lint and format), mypy (strict), import-linter's
# contracts (the import graph points down only, docs/architecture.md). Each runs even if one before it
# failed, so one run lists every problem; the target fails if any of them did.
LINT_CHECKS := "ruff check ." "ruff format --check ." "mypy" "lint-imports"
lint: install
	@status=0; for check in $(LINT_CHECKS); do \
		echo "$$ $$check"; $(BIN)/$$check || { status=1; echo "make lint: '$$check' failed" >&2; }; \
	done; exit $$status

# The catalogues of what subscribers read (newsletter/locales/, docs/architecture.md): extract every marked
# string of the templates and the code (babel.cfg) into a template, merge it into each language's .po (new
# strings come in untranslated, and tests/test_locales.py fails until they are translated), and compile
# the .mo files the app reads. English is the source language and has no catalogue.
LANGUAGES := de fr es
LOCALES   := newsletter/locales
POT       ?= $(LOCALES)/messages.pot
BABEL_KEYWORDS := -k translatable -k translatable_plural:1,2
translations: translations-template
	@for lang in $(LANGUAGES); do \
		$(BIN)/pybabel --quiet update -i $(POT) -d $(LOCALES) -l $$lang --init-missing --ignore-obsolete \
			--ignore-pot-creation-date --no-wrap || exit 1; \
	done
	$(BIN)/pybabel compile -d $(LOCALES) --statistics

# The template alone: every marked string of the source, into $(POT) (tests/test_locales.py extracts to a
# temporary file with POT=... to compare it with the catalogues).
translations-template: install
	$(BIN)/pybabel --quiet extract -F babel.cfg $(BABEL_KEYWORDS) --add-location=file --no-wrap --sort-output \
		--project=newsletter -o $(POT) .

# Several hosts on this machine (Linux network namespaces): a 100,000-recipient send on PostgreSQL
# and Redis, a worker host cut off and killed and Redis restarted mid-send; every recipient must get
# exactly one copy (tests/cluster/run_cluster.py). Needs root and `ip netns`; says why and skips
# without them (fails instead when CI=true).
cluster-test: install
	$(BIN)/python tests/cluster/run_cluster.py

bench: install
	$(BIN)/python bench/bench_rendering.py
	$(BIN)/python bench/bench_import.py
	$(BIN)/python bench/bench_transport.py
	$(BIN)/python bench/bench_send.py
	$(BIN)/python bench/bench_dkim.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_tracking.py

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info
