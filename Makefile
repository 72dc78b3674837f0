# The two commands a newcomer needs:
#   make demo   runs the main job (the whole method on the CPU toy world)
#   make test   runs the test suite
# Both build (once) and then reuse the Python environment kept outside the
# clone, keyed by a hash of the dependency files (scripts/ensure-env.sh).

OUT ?= runs/demo
ENV_PY = env=$$(scripts/ensure-env.sh) && "$$env/bin/python"

.PHONY: demo test env bench

env:
	@scripts/ensure-env.sh

demo:
	@$(ENV_PY) -m maskdpo.cli demo --out $(OUT) $(ARGS)

test:
	@$(ENV_PY) -m pytest -q $(ARGS)
