# `make test` and `make demo` are all a fresh machine needs: they create the
# virtualenv and install the Debian packages behind the real parts.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint format deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

deps:
	./scripts/install-deps.sh

lint: venv
	$(VENV)/bin/ruff check wgfailover wglab tests benchmarks
	$(VENV)/bin/ruff format --check wgfailover wglab tests benchmarks
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format wgfailover wglab tests benchmarks
	$(VENV)/bin/ruff check --fix wgfailover wglab tests benchmarks

# The whole suite: lint, unit, integration (real Prometheus, VictoriaMetrics,
# smokeping prober) and end-to-end (WireGuard lab in network namespaces).
test: deps venv lint
	$(PY) -m pytest -ra

demo: deps venv
	$(PY) -m wglab.demo

bench: deps venv
	$(PY) -m benchmarks.run

clean:
	-$(PY) -m wglab.cleanup
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
