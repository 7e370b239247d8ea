# PowerFlow: `make demo` runs the main job, `make test` runs every check.
# Both set up what they need first (a virtualenv in .venv from pyproject.toml).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
STUBS  := $(VENV)/stubs

.PHONY: setup demo demo-site test acceptance firmware typecheck bench clean sysdeps

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# the two boards' stubs both install a top-level machine.pyi: one folder each
	$(PY) -m pip install -q --target $(STUBS)/rp2 'micropython-rp2-stubs>=1.29'
	$(PY) -m pip install -q --target $(STUBS)/stm32 'micropython-stm32-stubs>=1.29'
	# compile the grid engine's kernel once (numba caches it beside its source), so the first
	# `powerflow reconfigure` a user runs does not pay the ~2 s compilation
	$(VENV)/bin/powerflow reconfigure ieee33 > /dev/null
	touch $@

# Compile the node firmware to .mpy for both targets (what gets deployed to a board).
firmware: $(STAMP)
	$(PY) -m powerflow.tools.build_firmware --out build/firmware

# The node code against each board's MicroPython stubs (their stdlib replaces CPython's).
NODE_CODE := firmware/pfnode protocol/pfproto/defs.py protocol/pfproto/fields.py
typecheck: $(STAMP)
	@for board in rp2 stm32; do \
	  echo "type-checking the firmware against micropython-$$board-stubs"; \
	  MYPYPATH=$(STUBS)/$$board $(PY) -m mypy --config-file firmware/mypy.ini \
	    --custom-typeshed-dir $(STUBS)/$$board $(NODE_CODE) || exit 1; \
	done
	@echo "type-checking the host"
	$(PY) -m mypy --ignore-missing-imports host/powerflow

# The main job: the small example rack emulated (real firmware in MicroPython processes,
# over ptys and TCP) under the host controller, for 30 s. Its API serves the CLI meanwhile.
demo: $(STAMP)
	$(VENV)/bin/powerflow run examples/racks/small.toml --emulate --duration 30 \
	  --db build/demo-telemetry.sqlite3

# A site: its own Mosquitto (passwords and ACL generated), a site controller and the four
# racks under two PDUs of examples/sites/two-pdus.toml, each an emulated rack (fast mode) under
# its own rack controller in a process of its own, for 60 s.
# The dashboard of the tree is at http://127.0.0.1:8480/.
demo-site: $(STAMP) sysdeps
	$(VENV)/bin/powerflow site run examples/sites/two-pdus.toml --emulate --duration 60

# The tests run on every usable CPU at once (pytest-xdist); then the chaos tests, which make
# their own CPU starvation and pauses, run alone, so that the disturbance each one measures
# is the one it made and not another test's.
test: $(STAMP) sysdeps
	$(MAKE) typecheck
	$(PY) -m pytest -q -n auto --ignore=tests/chaos
	$(PY) -m pytest -q tests/chaos

# The Robot Framework acceptance suites on the emulated rack (also run by `make test`, through
# tests/acceptance/test_robot_suites.py); Robot's log.html, report.html and output.xml go to
# build/acceptance. On real boards: make acceptance ROBOT_ARGS="--variable RACK:my-boards.toml"
# (a rack file whose nodes name their serial or TCP links).
acceptance: $(STAMP)
	$(PY) -m robot --outputdir build/acceptance --pythonpath . $(ROBOT_ARGS) tests/acceptance

# Debian packages the tests run for real: Chromium and its driver (the dashboard test),
# Prometheus (scrapes the host's /metrics), systemd (systemd-analyze checks the example
# unit) and Mosquitto (the site tier's broker). Installed once, when missing (needs root).
SYSDEPS := chromium chromium-driver prometheus systemd mosquitto
sysdeps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
	    || ! command -v prometheus >/dev/null || ! command -v systemd-analyze >/dev/null \
	    || ! command -v mosquitto >/dev/null; then \
	  echo "installing $(SYSDEPS) with apt-get"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSDEPS); \
	fi

bench: $(STAMP)
	$(PY) bench/bench_protocol.py
	$(PY) bench/fuzz_firmware.py
	$(PY) bench/bench_grid.py
	$(PY) bench/bench_emulator.py
	$(PY) bench/bench_forecast.py
	$(PY) bench/bench_control.py
	$(PY) bench/bench_scenarios.py
	$(PY) bench/bench_api.py

clean:
	rm -rf build .pytest_cache .mypy_cache
