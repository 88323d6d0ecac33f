# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both install from the lock files in requirements/ (exact versions with hashes, resolved for
# CPython 3.11 on Linux x86_64), so a fresh clone gets what passed when they were written;
# `make lock` resolves them again from the ranges in pyproject.toml and says what changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
EXAMPLE := examples/tiny_classifier
DEMO_REGISTRY := build/demo-registry
DEMO_LOCK := requirements/demo.lock
DEV_LOCK  := requirements/dev.lock
INSTALLER_LOCK := requirements/installer.lock
UV := $(VENV)/bin/uv
PIP_TOOLS := pip-tools==7.6.2
# pip-compile options shared by both locks: hashes, build dependencies (setuptools) pinned
# too, and no index or find-links lines (pip's own configuration supplies them).
COMPILE := --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	--no-emit-index-url --no-emit-find-links --newline LF

.PHONY: demo test lint typecheck unit bench lock clean system-tools

$(PY):
	$(PYTHON) -m venv $(VENV)

# The lock is complete (hashes for every package), so exactly it is installed; the project
# itself goes in editable on top, built with the locked setuptools. pip installs uv (its own
# lock), and uv the rest from the indexes pip is configured with (requirements/uv_options.py):
# 40 s where pip took 2.5 min of every fresh `make test`. Compiled to bytecode as pip does:
# where PYTHONDONTWRITEBYTECODE is set no import writes it, and every process (each test
# worker, each spawned TensorFlow worker) compiled torch and TensorFlow from source again.
define install_locked
	$(PY) -m pip install -q --require-hashes --no-deps -r $(INSTALLER_LOCK)
	$(UV) pip install -q --compile-bytecode --python $(PY) --require-hashes --no-deps \
		$$($(PY) requirements/uv_options.py) -r $(1)
	$(UV) pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m pip check
endef

$(STAMP): $(PY) $(DEMO_LOCK) $(INSTALLER_LOCK) pyproject.toml
	$(call install_locked,$(DEMO_LOCK))
	touch $@

$(DEVSTAMP): $(PY) $(DEV_LOCK) $(INSTALLER_LOCK) pyproject.toml
	$(call install_locked,$(DEV_LOCK))
	touch $(STAMP) $@

demo: $(STAMP)
	$(VENV)/bin/ferry deploy $(EXAMPLE)/model.py:build -o build/demo
	$(VENV)/bin/ferry check build/demo/model.onnx
	$(VENV)/bin/ferry test build/demo/model.onnx $(EXAMPLE)
	$(VENV)/bin/ferry keygen -o build/demo/keys --force
	$(VENV)/bin/ferry sign build/demo/model.onnx --key build/demo/keys/private_key.pem
	$(VENV)/bin/ferry verify build/demo/model.onnx --public-key build/demo/keys/public_key.pem
	$(VENV)/bin/ferry registry add build/demo/model.onnx --name tiny_classifier \
		--golden $(EXAMPLE) --registry $(DEMO_REGISTRY)
	$(VENV)/bin/ferry registry trust build/demo/keys/public_key.pem --registry $(DEMO_REGISTRY)
	$(VENV)/bin/ferry registry promote tiny_classifier --to production --reason "make demo" \
		--max-slowdown 0.5 --registry $(DEMO_REGISTRY)
	@echo "demo report: build/demo/report.html (and build/demo/report.json)"
	@echo "demo registry: $(DEMO_REGISTRY) (ferry registry list --registry $(DEMO_REGISTRY))"

lint: $(DEVSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(DEVSTAMP)
	nice -n 19 $(VENV)/bin/mypy

# Tools the tests drive that come from Debian's packages, not PyPI: Chromium (every HTML report
# is loaded in a real headless browser) and Graphviz's dot (`ferry graph`). Installed only when
# missing (as root, or through sudo).
SYSTEM_TOOLS := chromium:chromium dot:graphviz

system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
		command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		echo "installing from Debian's packages:$$missing"; \
		$$sudo apt-get update -q && $$sudo apt-get install -y -q $$missing; \
	fi

# pytest-xdist runs the test files on one worker per core (two here: about 1.7x faster; the
# tests keep ONNX Runtime's idle threads from spinning on the other worker's core); a file
# stays on one worker, so its module fixtures (servers, built models) are made once. WORKERS=0
# runs everything in this process. The files run in the order tests/conftest.py sets (those that
# measure their own process's memory first).
WORKERS ?= auto
unit: $(DEVSTAMP) system-tools
	$(PY) -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# mypy (one core, 80-95 s from a fresh clone: pyproject.toml leaves out transformers, ray and
# other large packages it once spent half its 174 s in) runs beside pytest's first
# files rather than before them: on 2 cores the whole run ends about a minute sooner. It runs
# at the lowest priority (typecheck's nice), on what the tests leave idle: at full priority it
# slowed the Ray and Flower tests that start first two to four times.
test: lint
	$(MAKE) --no-print-directory -j2 typecheck unit

bench: $(STAMP)
	$(PY) benchmarks/bench_overhead.py

# The dev lock is resolved first; the demo lock and the installer lock (uv) are held to the
# same versions.
lock:
	$(PYTHON) -m venv build/lockenv
	build/lockenv/bin/python -m pip install -q $(PIP_TOOLS)
	mkdir -p build/lock
	build/lockenv/bin/pip-compile $(COMPILE) --extra dev --extra torch --extra optimize \
		-c requirements/pins.txt -o build/lock/dev.lock pyproject.toml
	build/lockenv/bin/pip-compile $(COMPILE) --extra torch --extra optimize --extra sign \
		-c build/lock/dev.lock -o build/lock/demo.lock pyproject.toml
	build/lockenv/bin/pip-compile $(COMPILE) -c build/lock/dev.lock \
		-o build/lock/installer.lock requirements/installer.in
	for f in dev demo installer; do \
		sed -i -e '/^onnxferry @ /,+1d' -e 's|build/lock/|requirements/|g' build/lock/$$f.lock; \
		$(PYTHON) requirements/changes.py requirements/$$f.lock build/lock/$$f.lock; \
		mv build/lock/$$f.lock requirements/$$f.lock; \
	done

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
