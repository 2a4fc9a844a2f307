# opuslm: two commands get a working toolkit: `make install`, then `make test`.
#   VENV    where the virtual environment goes (default .venv)
#   PYTHON  the interpreter that creates it (default python3.11)
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Debian packages the recipes need: flite makes speech, sox converts it, fortunes gives the
# mini recipe its sentences. Optional: tcmalloc speeds up CPU training (the recipes' path.sh
# preloads it where installed); without it training runs on glibc's malloc, about 1.2x slower.
APT_PACKAGES := flite sox fortunes
APT_COMMANDS := flite sox
APT_OPTIONAL := libtcmalloc-minimal4
PYTEST_ARGS ?=
# `make test` runs the suite on TEST_JOBS pytest-xdist workers, one torch thread each (two workers
# on two cores would otherwise each start two threads). The whole-recipe tests are collected first
# (test/conftest.py) and loadgroup hands each to its own worker at once.
TEST_JOBS ?= 2

.PHONY: install system-packages test lint smoke demo bench clean

install: system-packages $(VENV)/.installed

system-packages:
	@missing=""; \
	for c in $(APT_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	[ -e /usr/share/games/fortunes/fortunes ] || missing="$$missing fortunes"; \
	optional=""; \
	utils/tcmalloc_lib.sh >/dev/null || optional="$(APT_OPTIONAL)"; \
	if [ -n "$$missing$$optional" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "[install] apt-get install:$$missing $$optional"; \
	    apt-get update -qq; \
	    if [ -n "$$missing" ]; then \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null || exit 1; \
	    fi; \
	    if [ -n "$$optional" ]; then \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$optional >/dev/null || \
	        echo "[install] optional $$optional not installed: CPU training uses glibc's malloc (slower)"; \
	    fi; \
	  else \
	    echo "[install] missing system packages:$$missing $$optional"; \
	    echo "[install] run: sudo apt-get install -y $(APT_PACKAGES) $(APT_OPTIONAL)"; \
	  fi; \
	fi

$(VENV)/.installed: setup.py tools/requirements-cpu.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r tools/requirements-cpu.txt
	$(PIP) install -q -e '.[dev]'
	@touch $@
	@echo "[install] done: activate with 'source $(VENV)/bin/activate'"

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS) test

smoke:
	cd egs2/mini_flite/speechlm1 && ./run.sh --preset smoke

demo:
	cd egs2/mini_flite/speechlm1 && ./run.sh

bench:
	$(VENV)/bin/pytest -q -m slow test
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
