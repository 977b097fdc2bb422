# ner_lit: common tasks. Run from the repository root.
PYTHON ?= python
SHARED ?= ../shared
KLUE ?= $(SHARED)/data/klue-ner

.PHONY: install install-bench wheel test test-all lint tiny tiny-test tiny-serve klue clean

install:            ## torch's CPU build first (an unpinned torch pulls CUDA), the project with test deps, the CLI's recorded answers
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m ner_lit --warm-cache

wheel:              ## build dist/ner_lit-*.whl (carries templates/, configs/ as recipes and the sample corpus)
	$(PYTHON) -m pip wheel --no-deps -w dist .

install-bench:      ## the bench-only extras (accelerate for the Hugging Face Trainer side by side)
	$(PYTHON) -m pip install -e ".[bench]"

test:               ## the fast tier: every module, no long trainings, benchmarks or browser (a few minutes on 2 cores)
	$(PYTHON) -m pytest -q -m 'not slow'

test-all:           ## everything, the slow end-to-end, benchmark-smoke and browser tests included (what CI runs), the 20 slowest listed
	$(PYTHON) -m pytest -q --durations=20

lint:               ## ruff with the rules in pyproject.toml (what CI runs)
	$(PYTHON) -m ruff check ner_lit tests bench

tiny:               ## the offline quickstart: train the tiny recipe on the shipped sample corpus
	$(PYTHON) -m ner_lit fit --config tiny

tiny-test:          ## score the best tiny checkpoint on the sample dev split (written beside the checkpoint)
	$(PYTHON) -m ner_lit test --config tiny --ckpt_path best

tiny-serve:         ## serve the best tiny checkpoint on http://127.0.0.1:5000
	$(PYTHON) -m ner_lit serve --config tiny --ckpt_path best

klue:               ## the published recipe (klue/roberta-base; needs the hub or local files, and a GPU)
	$(PYTHON) -m ner_lit fit --config configs/klue.yaml

clean:
	rm -rf runs lightning_logs .pytest_cache test-artifacts build dist ner_lit.egg-info

# --- benchmarks: the targets behind every figure in bench/README.md ------------------------------------
# Real measurements on this machine: run one at a time (bench/README.md lists each script, its target, its
# runtime and what it compares). SHARED is the workplace's shared folder (KLUE-NER data, the reference-model
# and multilingual-e5-small tools).
BENCH_SCRIPTS := metric_speed train_throughput accuracy eval_speed profile_step precision

.PHONY: bench bench-quick bench-report bench-serve bench-budget bench-startup bench-pretrained bench-pretrained-quick bench-serve-memory bench-serve-profile bench-adamw bench-scale-train bench-boundaries bench-quantize bench-serve-restart $(addprefix bench-,$(BENCH_SCRIPTS))

bench: $(addprefix bench-,$(BENCH_SCRIPTS)) bench-serve
	$(PYTHON) bench/report.py

# accuracy before eval_speed (which scores accuracy's trained weights) and precision (which reuses its fp32 run)
$(addprefix bench-,$(BENCH_SCRIPTS)): bench-%:
	$(PYTHON) bench/$*.py --shared $(SHARED)

bench-report:       ## bench/results/*.json -> bench/results/RESULTS.md
	$(PYTHON) bench/report.py

bench-quick:        ## the bench smoke test: each script's --quick run writes its JSON (figures mean nothing)
	$(PYTHON) -m pytest -q tests/bench/test_bench_smoke.py

bench-budget:       ## best dev F1e within a 10-minute training budget against the HF Trainer's 16 epochs; not part of `make bench`
	$(PYTHON) bench/budget.py --shared $(SHARED)
	$(PYTHON) bench/report.py

bench-startup:      ## start-up time of --help and usage errors; not part of `make bench`
	$(PYTHON) bench/startup.py

bench-scale-train:  ## reading, encoding (cold and cached) and a few training steps on a large corpus; not part of `make bench`
	$(PYTHON) bench/scale_train.py --shared $(SHARED)

bench-serve:        ## serving latency and throughput against the naive path
	$(PYTHON) bench/serve_bench.py --shared $(SHARED)

bench-pretrained:   ## multilingual-e5-small (configs/me5.yaml): ner_lit vs HF Trainer, then serve vs a pipeline app; not part of `make bench`
	$(PYTHON) bench/pretrained.py --shared $(SHARED)

bench-pretrained-quick: ## the same end to end on 64 + 64 sentences, 1 epoch (bench/work/quick-results only)
	$(PYTHON) bench/pretrained.py --quick --shared $(SHARED)

bench-serve-memory: ## serve's resident memory per runtime on multilingual-e5-small; not part of `make bench`
	$(PYTHON) bench/serve_memory.py --shared $(SHARED)

bench-serve-profile: ## a served request's stages and batching, in-process, on the model bench-pretrained exports; not part of `make bench`
	$(PYTHON) bench/serve_profile.py --shared $(SHARED)

bench-adamw:        ## the optimizer step's share of a training step per AdamW implementation, multilingual-e5-small; not part of `make bench`
	$(PYTHON) bench/adamw_step.py --shared $(SHARED)

bench-quantize:     ## int8 against float on a trained checkpoint (CKPT=...): F1, latency, memory, bytes; not part of `make bench`
	$(PYTHON) bench/quantize.py --shared $(SHARED) --ckpt $(CKPT)

bench-serve-restart: ## serve started 3 times per --quantize kind on a checkpoint (CKPT=...): first answer, RSS; not part of `make bench`
	$(PYTHON) bench/serve_restart.py --shared $(SHARED) --ckpt $(CKPT)

bench-boundaries:   ## exact entity boundaries: token vs Kiwi trim vs morpheme pre-split vs char tagging, ceilings and trained reference + me5, then their serve latency interleaved; not part of `make bench`
	$(PYTHON) bench/boundaries.py --shared $(SHARED)
	$(PYTHON) bench/boundaries_serve.py --shared $(SHARED)
