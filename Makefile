# Two entry points for a fresh clone: `make demo` and `make test`. Each creates (or reuses)
# .venv, installs the CPU build of torch 2.13.0 first (a plain `torch` requirement would pull a
# multi-GB CUDA build), then raynas with pinned dependencies, then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.raynas-installed

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,cluster]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/raynas demo

# Two workers, a test file per worker at a time (module fixtures stay in one process): most of
# the end-to-end tests wait on processes they started, so two files overlap their waits.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check spaces searchers raynas tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) raynas_demo raynas_results
