# The two commands a fresh clone needs:  `make demo`  and  `make test`.
# Both create the virtual environment (.venv) from requirements.txt when it is missing; `make test`
# adds requirements-test.txt (CPU torch + transformers, the peer the checkpoint tests compare with).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
WORKDIR ?= workdir/demo
CONFIG ?= configs/echovlm.py

.PHONY: demo test test-fast install install-test clean

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-checkpoints.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Builds the synthetic dataset on first use, trains, evaluates and writes a report.
demo: $(VENV)/.installed
	$(PY) -m echovlm_jax.main --config $(CONFIG) --workdir $(WORKDIR)

# The whole suite, slow tests included (this is what CI runs).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -ra --durations=25

# Local iteration: skip the slow end-to-end tests.
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -q -ra -m "not slow"

clean:
	rm -rf $(VENV) workdir data/tfds_runlocal .pytest_cache
