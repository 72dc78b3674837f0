# The two commands a newcomer needs:
#   make demo   runs the main job (the whole method on the CPU toy world)
#   make test   runs the test suite
# Both build (once) and then reuse the Python environments kept outside the
# clone, keyed by a hash of the dependency files (scripts/ensure-env.sh).
#
# `make test` runs the whole suite in the training environment (xtuner 0.2.0,
# transformers 4.48), then the inference-side tests (`-m inference`, listed in
# tests/conftest.py) again in the inference environment (the newest
# transformers LMDeploy allows, and the real lmdeploy package for its contract
# test). `make test-train` / `make test-infer` run one of the two.

OUT ?= runs/demo
TRAIN_PY = env=$$(scripts/ensure-env.sh train) && "$$env/bin/python"
INFER_PY = env=$$(scripts/ensure-env.sh infer) && "$$env/bin/python"
# Test models saved by one transformers line are rebuilt, not shared, by the other;
# the contract test must not skip there.
INFER_TEST_ENV = export MASKDPO_TEST_CACHE="$${MASKDPO_TEST_CACHE:-$$HOME/.cache/maskdpo/test-models}-infer" \
	MASKDPO_REQUIRE_REAL_LMDEPLOY=1

.PHONY: demo test test-train test-infer env bench

env:
	@scripts/ensure-env.sh train
	@scripts/ensure-env.sh infer

demo:
	@$(TRAIN_PY) -m maskdpo.cli demo --out $(OUT) $(ARGS)

test: test-train test-infer

test-train:
	@$(TRAIN_PY) -m pytest -q $(ARGS)

test-infer:
	@$(INFER_PY) -c "import transformers, lmdeploy; print('inference environment: transformers', transformers.__version__, '/ lmdeploy', lmdeploy.__version__)"
	@$(INFER_TEST_ENV) && $(INFER_PY) -m pytest -q -m inference $(ARGS)
