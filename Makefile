# geomlat: every target installs what it needs first (through the .venv stamp), so on a fresh clone
# `make test` or `make study-gkd` alone is enough.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.geomlat-installed
# CPU machines: pin the CPU wheel (a plain `torch` pulls gigabytes of CUDA packages). With a GPU
# (nvidia-smi present) the registry's default CUDA build is taken. Override with TORCH_SPEC=...
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
NPROC ?= 1

.PHONY: install install-cluster test demo study-gkd study-embed study-robust study-toy study-manifold study-selection bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

# torch-cluster is built from source: about 20 minutes on 2 cores (pip caches the wheel afterwards).
install-cluster: $(STAMP)
	$(PY) -m pip install --no-build-isolation -e ".[cluster]"

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/geomlat demo

# Studies: quick profile (embedded data, CPU). The paper profiles need CIFAR-10 and a GPU:
#   .venv/bin/geomlat study gkd --profile paper --data-dir /path/to/cifar-10-batches-py
STUDY_ARGS = --profile $(or $(PROFILE),quick) $(if $(filter-out 1,$(NPROC)),--nproc $(NPROC))

study-gkd study-embed study-robust study-toy study-manifold study-selection: study-%: $(STAMP)
	$(VENV)/bin/geomlat study $* $(STUDY_ARGS)

# Benchmarks (about 10 minutes on 2 cores): installs the optional faiss-cpu baseline (the `bench` extra) first.
bench: $(STAMP)
	$(PY) -c "import faiss" 2>/dev/null || $(PY) -m pip install -e ".[bench]"
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
