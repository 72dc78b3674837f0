# The two commands a newcomer needs:
#   make demo   runs the main job (the pipeline on the built-in examples / toy world)
#   make test   runs the test suite
# Both build (once) and reuse the Python environment kept outside the clone,
# keyed by a hash of the dependency files (scripts/ensure-env.sh).

ENV = $(shell scripts/ensure-env.sh)
PY = $(ENV)/bin/python
OUT ?= runs/demo

.PHONY: demo test env bench

env:
	@scripts/ensure-env.sh

demo:
	$(PY) -m maskdpo.cli demo --out $(OUT) $(ARGS)

test:
	$(PY) -m pytest -q $(ARGS)

bench:
	$(PY) tools/bench_pairs.py
