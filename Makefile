# Two commands set everything up on a fresh machine with Python >= 3.11 and a C compiler:
#   make demo   - create .venv if missing, install perfjax with its test and bench extras, run `perfjax demo`
#   make test   - the same setup, then the full test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.perfjax-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/perfjax demo

# one pytest worker per core (pytest-xdist); tests/conftest.py gives the run one JAX compilation
# cache and one C kernel cache, shared by the workers and new for each run
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/space_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
