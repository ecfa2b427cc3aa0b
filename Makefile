# netgeom: every target runs inside the project's virtual environment (.venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
STAMP := $(VENV)/.installed

.PHONY: help setup lock data fashion-mnist repro exp preset test bench ui sync pipeline clean

help:  ## List the targets
	@grep -E '^[a-z][a-zA-Z0-9_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP)  ## Create .venv and install netgeom with pinned dependencies (idempotent)

# requirements.lock pins every package of the environment (pip constraints), so a clone made next
# year installs what this one was tested with; `make lock` rewrites it from the current .venv.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray,cluster]' -c requirements.lock
	touch $(STAMP)

lock: $(STAMP)  ## Rewrite requirements.lock from .venv (after changing a dependency in pyproject.toml)
	{ echo "# pip constraints: the exact versions make setup installs (written by make lock)"; \
	  $(PY) -m pip freeze --exclude-editable; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

data: $(STAMP)  ## Materialise the embedded datasets into data/ (a no-op when data/ already matches data.dvc)
	@if [ -d data ] && dvc status -q data.dvc 2>/dev/null; then echo "data/ matches data.dvc"; \
	else netgeom data materialise && dvc add -q data; fi

FMNIST_DEB := /usr/share/datasets/fashion-mnist

fashion-mnist: data  ## Fashion-MNIST into data/FashionMNIST/raw (Debian's dataset-fashion-mnist where apt exists, else a download), md5-verified, then dvc add
	@if [ ! -d $(FMNIST_DEB) ] && command -v apt-get >/dev/null; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$sudo apt-get install -y -q dataset-fashion-mnist || { $$sudo apt-get update -q && $$sudo apt-get install -y -q dataset-fashion-mnist; }; fi
	@if [ -d $(FMNIST_DEB) ]; then \
	  netgeom data import fashion_mnist $(FMNIST_DEB) --origin "Debian package dataset-fashion-mnist $$(dpkg-query -W -f='$${Version}' dataset-fashion-mnist 2>/dev/null)"; \
	else netgeom data fetch fashion_mnist; fi
	dvc add -q data

repro: data  ## Reproduce the whole pipeline: stale stages in parallel on every core (netgeom repro)
	netgeom repro

exp: data  ## Run a seed variation as a DVC experiment: make exp SEED=43
	dvc exp run -S seed=$(or $(SEED),43)

# The preset's -S options go through a variable so that a missing or invalid preset stops here:
# `dvc exp run $$(netgeom preset ...)` would run the default experiment when netgeom fails.
preset: data  ## Run a preset as a DVC experiment: make preset PRESET=mnist1d_double_descent
	@test -n "$(PRESET)" || { echo "make preset: PRESET is required, e.g. make preset PRESET=mnist1d_double_descent; the presets: $$(ls presets | sed -n 's/\.yaml$$//p' | tr '\n' ' ')" >&2; exit 2; }
	options=$$(netgeom preset presets/$(PRESET).yaml) && dvc exp run $$options

test: $(STAMP)  ## Run the test suite
	$(PY) -m pytest tests -n 2 --dist loadfile  # two workers: one per core, a test file each

bench: $(STAMP)  ## Run every benchmark under bench/ (prints ratios against baselines)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

ui: $(STAMP)  ## Serve the MLflow UI on 127.0.0.1 (make ui PORT=5001); prints the runs link once it answers, Ctrl-C stops it
	@netgeom ui --port $(or $(PORT),5000)

pipeline: $(STAMP)  ## Regenerate dvc.yaml from the study registry (after adding a study or changing imports)
	netgeom pipeline --write

sync: $(STAMP)  ## Rebuild missing MLflow runs from the DVC outputs
	netgeom mlflow sync

clean:  ## Remove derived outputs (artifacts/, reports/, mlruns/), keeping data/ and .venv
	rm -rf artifacts reports mlruns .netgeom
