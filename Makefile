# ner_lit: common tasks. Run from the repository root.
PYTHON ?= python
SHARED ?= ../shared
KLUE ?= $(SHARED)/data/klue-ner

.PHONY: install test lint tiny tiny-test tiny-serve klue bench clean

install:            ## torch's CPU build first (an unpinned torch pulls CUDA), then the project with test deps
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

test:               ## the test suite (what CI runs)
	$(PYTHON) -m pytest -q

lint:               ## byte-compile everything and run pyflakes-style checks if ruff is installed
	$(PYTHON) -m compileall -q ner_lit tests bench
	@if command -v ruff >/dev/null; then ruff check ner_lit tests bench; else echo "ruff not installed: compile check only"; fi

tiny:               ## the offline quickstart: train the tiny recipe on the shipped sample corpus
	$(PYTHON) -m ner_lit fit --config configs/tiny.yaml

tiny-test:          ## score the best tiny checkpoint on the sample dev split
	$(PYTHON) -m ner_lit test --config configs/tiny.yaml --ckpt_path best

tiny-serve:         ## serve the best tiny checkpoint on http://127.0.0.1:5000
	$(PYTHON) -m ner_lit serve --config configs/tiny.yaml --ckpt_path best

klue:               ## the published recipe (klue/roberta-base; needs the hub or local files, and a GPU)
	$(PYTHON) -m ner_lit fit --config configs/klue.yaml

clean:
	rm -rf runs lightning_logs .pytest_cache test-artifacts
