# make run   : set up .venv and run the MNIST pipeline at the seed's recipe
# make test  : set up .venv and run the test suite
# Options for the run go in ARGS, e.g.  make run ARGS="--epochs 1 --train-limit 2048"

PYTHON ?= python3
PYTEST_ARGS ?= -n auto
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/denoiser run $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
