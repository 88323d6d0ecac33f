# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
EXAMPLE := examples/tiny_classifier

.PHONY: demo test lint typecheck unit bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[torch,optimize]'
	touch $@

$(DEVSTAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/ferry deploy $(EXAMPLE)/model.py:build -o build/demo
	$(VENV)/bin/ferry check build/demo/model.onnx
	$(VENV)/bin/ferry test build/demo/model.onnx $(EXAMPLE)
	@echo "demo report: build/demo/report.html (and build/demo/report.json)"

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(DEVSTAMP)
	$(VENV)/bin/mypy

unit: $(DEVSTAMP)
	$(PY) -m pytest

test: lint typecheck unit

bench: $(STAMP)
	$(PY) benchmarks/bench_overhead.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
