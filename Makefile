# Two entry points for a fresh machine: `make demo` and `make test`. Both install into .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: install demo lint test test-fast clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel setuptools
	# torch first, pinned: the local CPU wheel, never a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -e '.[dev]'
	# tinysoundfont's declared playback dependency (pyaudio) needs portaudio headers; rendering does not use it
	$(BIN)/python -m pip install -q --no-deps tinysoundfont==0.3.7
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/musicmoe demo --out $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check musicmoe tests experiments

# lint first: a style or import error fails the run before the (long) test suite starts
test: lint
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not slurm" tests

clean:
	rm -rf $(VENV) runs
