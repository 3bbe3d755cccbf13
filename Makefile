# The two commands of the README: `make run` (train MBPO on InvertedPendulum-v5) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints-cpu.txt
STEPS ?= 5000
SEED ?= 0
OUT ?= runs/InvertedPendulum-v5-seed$(SEED)-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install run test bench clean

$(BIN)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/mbpo-ray train --env InvertedPendulum-v5 --steps $(STEPS) --seed $(SEED) --out $(OUT)

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
