# The two commands of the README: `make run` (train MBPO on InvertedPendulum-v5) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints-cpu.txt
STEPS ?= 5000
SEED ?= 0
OUT ?= runs/InvertedPendulum-v5-seed$(SEED)-$(shell date +%Y%m%d-%H%M%S)

# `make docker`: the cluster images (docker/, docs/clusters.md), tagged
# <IMAGE>:<version>-ray<Ray version>-<Python tag>-gpu and -cpu, the tag that cluster/ files name.
IMAGE ?= mbpo-ray
MBPO_VERSION = $(shell sed -n 's/^version = //p' setup.cfg)
RAY_VERSION = $(shell sed -n 's/^ray==//p' constraints.txt)
PY_TAG = $(shell sed -n 's/^FROM rayproject\/ray:[^-]*-\(py[0-9]*\)-gpu.*/\1/p' docker/Dockerfile.gpu)
IMAGE_TAG = $(MBPO_VERSION)-ray$(RAY_VERSION)-$(PY_TAG)

.PHONY: install run test test-fast bench clean docker

$(BIN)/.installed: setup.cfg pyproject.toml $(CONSTRAINTS) constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/mbpo-ray train --env InvertedPendulum-v5 --steps $(STEPS) --seed $(SEED) --out $(OUT)

# Every test: the Ray tests (in two parts) and the others side by side (tests/run_all.sh says why).
test: install
	PYTHON=$(BIN)/python tests/run_all.sh

# The edit loop: everything but the learning runs and the tests that start Ray, Tune or RLlib.
test-fast: install
	$(BIN)/python -m pytest -q --durations=10 -m "not slow and not ray" tests

docker:
	docker build -f docker/Dockerfile.gpu -t $(IMAGE):$(IMAGE_TAG)-gpu .
	docker build -f docker/Dockerfile.cpu -t $(IMAGE):$(IMAGE_TAG)-cpu .

clean:
	rm -rf $(VENV) runs
