# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv and install edgecl (with the CPU-tested torch pair) when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgecl-installed
PYTEST_ARGS ?=

.PHONY: demo test install browser clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[torch,dev,fleet]'
	touch $(STAMP)

demo: $(STAMP)
	YOLO_OFFLINE=1 $(VENV)/bin/edgecl demo --state-dir state/demo

# Two workers, each test file whole in one of them (its module fixtures train once); the
# README's Tests section gives the times. PYTEST_XDIST=-n0 runs it in one process.
PYTEST_XDIST ?= -n 2 --dist loadfile

test: $(STAMP) browser
	YOLO_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_XDIST) $(PYTEST_ARGS)

# Headless Chromium for tests/web (apt-get as root when missing; the tests skip without it).
browser:
	.ci/install-browser

clean-venv:
	rm -rf $(VENV)
