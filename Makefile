# Mastery Hub — the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser run test bench lint clean

## install: create .venv and install the project with its embedded, test and dev extras
install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[embedded,test,dev]'
	@touch $(STAMP)

## browser: Debian's Chromium for the page tests (Playwright's own download fails here)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

## run: start the embedded database and the app (Ctrl-C stops both)
run: install
	$(VENV)/bin/masteryhub serve

## test: run the whole test suite against a real MongoDB-wire server
test: install browser
	$(PY) -m pytest

## bench: load and timing benchmarks (not part of make test)
bench: install
	@for f in tests/benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

## lint: ruff
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
