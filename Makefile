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

.PHONY: install install-cluster test docs docs-fast docs-check demo study-gkd study-embed study-robust study-toy study-manifold study-selection tune-robust tune-embed bench gpu-check clean

install: $(STAMP)

# Integrations (issue 14): lightning and transformers come with the test extra. torchdistill is installed
# without its dependencies (torchvision would come with it): its loss registry, which geomlat uses, does not
# need torchvision. torchvision is installed pinned to the installed torch and kept only if it imports (PyPI's
# wheels are built for PyPI's CUDA torch; with the CPU wheel `import torchvision` fails, and with it `import
# lightning`); timm, which requires it, only then.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps "torchdistill>=1.1"
	$(PY) -m pip install torchvision "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  && $(PY) -c "import torchvision" 2>/dev/null \
	  && $(PY) -m pip install -e ".[timm]" "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')" \
	  || { echo "torchvision does not import with this torch build: removed (timm and torchdistill's training box are then skipped)"; \
	       $(PY) -m pip uninstall -y torchvision; }
	touch $(STAMP)

# torch-cluster is built from source: about 20 minutes on 2 cores (pip caches the wheel afterwards).
install-cluster: $(STAMP)
	$(PY) -m pip install --no-build-isolation -e ".[cluster]"

test: $(STAMP)
	$(PY) -m pytest -q

# Documentation (docs/, Sphinx): warnings are errors (-W --keep-going) and every cross-reference must resolve
# (-n). `make docs` runs the example gallery (examples/, on the CPU); `make docs-fast` skips those runs (CI).
# Both work offline: intersphinx reads the inventories shipped in docs/_inventories/.
DOCS_STAMP := $(VENV)/.geomlat-docs-installed
SPHINX := $(PY) -m sphinx -b html -W --keep-going -n -q docs docs/_build/html

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(SPHINX)

docs-fast: $(DOCS_STAMP)
	GEOMLAT_DOCS_FAST=1 $(SPHINX)

# The built site in headless Chromium (Debian's chromium and chromium-driver, installed if missing; no browser
# download): pages render with their figures, internal links resolve, the search finds latent_graph.
# Screenshots in docs/_build/screenshots/. Run it after `make docs` when you change the docs.
docs-check: docs
	command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }
	$(PY) docs/check_site.py docs/_build/html

demo: $(STAMP)
	$(VENV)/bin/geomlat demo

# Studies: quick profile (embedded data, CPU). The paper profiles need CIFAR-10 and a GPU:
#   .venv/bin/geomlat study gkd --profile paper --data-dir /path/to/cifar-10-batches-py
STUDY_ARGS = --profile $(or $(PROFILE),quick) $(if $(filter-out 1,$(NPROC)),--nproc $(NPROC))

study-gkd study-embed study-robust study-toy study-manifold study-selection: study-%: $(STAMP)
	$(VENV)/bin/geomlat study $* $(STUDY_ARGS)

# Validation grids of the robust and embed quick profiles (geomlat.studies.tools.tuning): results/tune-NAME/ and
# figures/tune-NAME/; the chosen values are copied into studies/NAME.toml's quick profile by hand.
tune-robust tune-embed: tune-%: $(STAMP)
	$(VENV)/bin/geomlat study $* --tune $(STUDY_ARGS)
	$(if $(filter embed,$*),$(PY) -m geomlat.studies.tools.lv_diagnosis)

# Benchmarks (about 10 minutes on 2 cores): installs the optional faiss-cpu baseline (the `bench` extra) first.
bench: $(STAMP)
	$(PY) -c "import faiss" 2>/dev/null || $(PY) -m pip install -e ".[bench]"
	$(PY) -m benchmarks

# The GPU path (under 10 minutes on one GPU): every method of the gkd, embed and robust paper profiles with
# bf16-mixed on a synthetic CIFAR-10 folder: images/s, step ratios, no host sync in a step, analyses on the
# device. Writes benchmarks/gpu_check.{json,md}. On a CPU it runs at tiny sizes (a smoke test).
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info docs/_build docs/auto_examples docs/sg_execution_times.rst
