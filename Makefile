# nlc — two commands do everything on a fresh machine:
#   make demo   create .venv, install, run the best end-to-end demo that exists
#   make test   install if needed, run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
NLC     = $(VENV)/bin/nlc
STAMP   = $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: install test test-all demo bench results results-quick fmt generated clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU build lies on disk; an unpinned torch would pull gigabytes
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -m "not compile"

test-all: install
	$(PY) -m pytest -q

demo: install
	$(NLC) check examples/*.nl
	$(NLC) fmt --check examples/*.nl
	$(NLC) graph examples/*.nl -o $(OUT)/graphs
	$(NLC) bench frontend --quick --out $(OUT)/bench
	@echo "level graphs written to $(OUT)/graphs/"
	# Transformer++ vs Titans (MAG) vs Hope at a tiny size, same data, seed and token budget (docs/training.md).
	# Two processes of one torch thread each: these models run many small ops, which more threads slow down.
	# MQAR and NIAH get their own, larger budgets: recall appears only after a thousand steps or more, and
	# the copy of a pass key after about a thousand (NIAH trains at 128 tokens and is read at 128-512).
	rm -rf $(OUT)/compare
	OMP_NUM_THREADS=1 $(NLC) compare examples/transformer.nl examples/titans_mag.nl examples/hope.nl \
		--task lm,mqar:kv=4,seq=64,budget=2M,niah:budget=1500k --budget 500k --batch 16 --seq 128 \
		-p dim=32 -p layers=2 -p chunk=8 --match-params hope --niah-lengths 128,256,512 --jobs 2 \
		--out $(OUT)/compare
	@echo "comparison: $(OUT)/compare/compare.md; plots: $(OUT)/compare/loss_*.png, $(OUT)/compare/niah.png"

results: install  # docs/results.md: the models and Hope's ablations at the full size (about 1.5 hours; the page says how long)
	OMP_NUM_THREADS=1 $(PY) -m nlc.train.results --size full --out $(OUT)/results-full --doc docs/results.md

results-quick: install  # the same page at a small size (about half an hour), to see the pipeline work
	OMP_NUM_THREADS=1 $(PY) -m nlc.train.results --size quick --out $(OUT)/results --doc docs/results.md

bench: install  # every suite, default sizes: tables on stdout, benchmarks/results/bench.json and bench.md
	$(NLC) bench

fmt: install
	$(NLC) fmt examples/*.nl

generated: install  # refresh the checked-in compiled examples
	for f in examples/*.nl; do $(NLC) compile $$f -o generated/$$(basename $$f .nl).py || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache .hypothesis
