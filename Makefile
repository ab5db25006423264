# One entry point for people and CI: `make run`, `make test`, `make lint`, `make docs`, `make bench-accuracy`.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= all,dev

.PHONY: install install-teacher system-deps run test test-parallel test-fast lint security docs bench bench-accuracy analyze clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

## PyTorch's CPU build for the GPU teacher's test (the teacher itself runs on a GPU machine)
install-teacher: install
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q 'torch==2.13.0'

## the main job: embedded Redis + 2 workers + the sample file through the queue -> results.jsonl
run: install
	$(VENV)/bin/sentiment-run samples/reviews.txt -o results.jsonl

## system packages the tests use (apt, as root or with sudo); says loudly what it cannot install
system-deps:
	bash .ci/system-deps

## the whole suite, after installing what it needs; anything still skipped is listed at the end
test: install system-deps
	$(PY) -m pytest -q -rs

## the same tests on two processes (a file per process at a time): 10 min against 16 on 2 cores
test-parallel: install system-deps
	$(PY) -m pytest -q -rs -n 2 --dist loadfile

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## static analysis (bandit; skips justified in pyproject.toml) and known vulnerabilities (pip-audit)
security: install
	$(VENV)/bin/bandit -q -c pyproject.toml -r shared worker bot api
	$(PY) .ci/audit.py

## the documentation site (docs/, mkdocs.yml) into site/; strict: a broken link or anchor fails
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

bench-accuracy: install
	$(PY) bench/accuracy.py

## every benchmark, one after the other (needs ../shared/data and redis-server): about 32 minutes
## on 2 cores, the longest bench/region_embeddings.py (about 13)
bench: install
	$(PY) bench/accuracy.py
	$(PY) bench/explain.py --greedy 400
	$(PY) bench/region_embeddings.py
	$(PY) bench/stacking.py
	$(PY) bench/bag.py
	$(PY) bench/throughput.py
	$(PY) bench/reload.py
	$(PY) bench/bot_latency.py
	$(PY) bench/scaling.py
	$(PY) bench/faults.py
	$(PY) bench/api_latency.py
	$(PY) bench/producer_memory.py
	$(PY) bench/capacity.py

## the analysis report of the served model on the 25k test split (about a minute)
analyze: install
	$(VENV)/bin/sentiment-analyze

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache results.jsonl site
