#!/usr/bin/env bash
# The main job (README: `make demo`): `rlhf demo` on a fresh project in ./demo (or $DEMO_DIR), offline, on
# embedded SQLite and the CPU. Extra arguments go to `rlhf demo` (e.g. --data FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR="${DEMO_DIR:-demo}"
exec "$PWD/.venv/bin/rlhf" demo "$DEMO_DIR" --force "$@"
