# Two entry points, both self-installing into ./.venv on first use:
#   make demo   -> the main job (`surftune demo`)
#   make test   -> the test suite
# torch is installed first and pinned through constraints.txt so that no
# dependency can pull a multi-GB CUDA build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.surftune-installed
DEMO_ARGS ?=

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,m3gnet]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/surftune demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the fast lane while developing: everything but the tests marked slow (CI runs all)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build *.egg-info
