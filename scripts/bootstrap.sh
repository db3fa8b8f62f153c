#!/usr/bin/env bash
# Set up a fresh machine for `make demo` (what = demo) or `make test` (what = test):
#   - system packages the tests need (Debian chromium, PostgreSQL server) via apt when missing and we are root;
#   - a virtualenv in .venv with the CPU build of torch installed first (so pip never pulls a CUDA build),
#     then this package, editable, with the [test] extra when testing.
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-demo}"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_VERSION="2.13.0"

missing=()
if [ "$what" = "test" ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install ${missing[*]}" >&2
    echo "  (or run as root, and this script installs them)" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "bootstrap: installing torch==$TORCH_VERSION (CPU build)"
  # PyPI's torch wheel for Linux is the CUDA build (several GB); PyTorch's CPU index has $TORCH_VERSION+cpu, which
  # pip prefers to it (a local version sorts above the plain one), as it prefers a +cpu wheel a machine keeps on
  # disk in its pip find-links. A machine that cannot reach that index loses a few seconds of retries.
  "${PIP[@]}" install "torch==$TORCH_VERSION" --extra-index-url "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
fi
extra=""
[ "$what" = "test" ] && extra="[test]"
stamp="$VENV/.installed-${what}-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing rlhf-pipeline${extra} and its dependencies"
  "${PIP[@]}" install -e ".${extra}"
  touch "$stamp"
fi
