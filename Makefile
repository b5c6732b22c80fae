# `make test` and `make demo` are all a fresh machine needs: they create the
# virtualenv and install the Debian packages behind the real parts.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-installed demo bench lint format deps venv clean

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

# The whole suite: lint, the package as installed, unit, integration (real
# Prometheus, VictoriaMetrics, smokeping prober) and end-to-end (WireGuard lab
# in network namespaces).
test: deps venv lint test-installed
	$(PY) -m pytest -ra

# The package as Nix or a distribution installs it: a wheel installed with its
# dependencies into a directory of its own (no virtualenv, no editable
# install), and the unit tests run by the system interpreter with only that
# directory on PYTHONPATH, from a copy of the tree without wgfailover/, so
# every import and every command comes from the installed package.
SYSTEM_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) $(PYTHON))
INSTALLED := build/installed
# The module evaluation tests find nixpkgs' lib beside the checkout; the copy has none beside it.
NIXPKGS_LIB := $(or $(WGF_NIXPKGS_LIB),$(wildcard $(abspath ..)/shared/nixpkgs-lib/lib))
test-installed: venv
	rm -rf $(INSTALLED)
	$(PY) -m pip wheel -q --no-deps -w $(INSTALLED)/dist .
	$(SYSTEM_PYTHON) -m pip install -q --no-warn-script-location --target $(INSTALLED)/site \
		$(INSTALLED)/dist/*.whl pytest requests-mock hypothesis
	mkdir -p $(INSTALLED)/tree
	git ls-files -z --cached --others --exclude-standard | grep -zv '^wgfailover/' \
		| xargs -0 cp --parents -t $(INSTALLED)/tree
	cd $(INSTALLED)/tree && env -u VIRTUAL_ENV PYTHONPATH=$(abspath $(INSTALLED)/site) \
		$(if $(NIXPKGS_LIB),WGF_NIXPKGS_LIB=$(NIXPKGS_LIB)) \
		$(SYSTEM_PYTHON) -m pytest -q -p no:cacheprovider tests/unit

demo: deps venv
	$(PY) -m wglab.demo

bench: deps venv
	$(PY) -m benchmarks.run

clean:
	-$(PY) -m wglab.cleanup
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
