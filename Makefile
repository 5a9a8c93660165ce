# Two entry points for a fresh clone: `make test` and `make demo`.
# Each creates the project's virtual environment (.venv) on first use.
# `make test` also runs the backend tests on JAX, in .venv-jax (Keras and JAX
# without TensorFlow); `make test-torch` runs them on PyTorch in .venv-torch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: venv test

$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The layers computed, trained and saved on each backend, against the
# TensorFlow backend's reference (tests/test_backends.py).
BACKEND_TESTS := tests/test_backends.py

.venv-%/.installed: requirements-%.txt
	$(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -r requirements-$*.txt
	touch $@

# Two pytest processes (pytest-xdist), one per core of the 2-core machines the
# suite is sized for; worksteal moves queued tests to whichever process frees
# up, so that the slow ones do not end up queued behind each other.
PYTEST_PARALLEL := -n 2 --dist worksteal

test: venv test-jax
	$(PY) -m pytest -q $(PYTEST_PARALLEL) tests

.PHONY: test-jax test-torch
test-jax: .venv-jax/.installed
	KERAS_BACKEND=jax .venv-jax/bin/python -m pytest -q $(PYTEST_PARALLEL) $(BACKEND_TESTS)

test-torch: .venv-torch/.installed
	KERAS_BACKEND=torch .venv-torch/bin/python -m pytest -q $(BACKEND_TESTS)

.PHONY: demo
demo: venv
	$(PY) -m example.demo

# Self-supervised demo: COLA pre-training of four frontends on the corpus,
# linear probes and untrained floors (README, "Self-supervised pre-training").
.PHONY: ssl-demo
ssl-demo: venv
	$(PY) -m example.ssl_demo
