#!/usr/bin/env bash
# The main job, offline on embedded SQLite: a fresh project in ./demo (or $DEMO_DIR) taken through the stages
# that exist so far, then a summary from `rlhf status`.
set -euo pipefail
cd "$(dirname "$0")/.."
RLHF="$PWD/.venv/bin/rlhf"
DEMO_DIR="${DEMO_DIR:-demo}"
SAMPLE="$(.venv/bin/python -c 'from pipeline.sample_data import SAMPLE_RESPONSES; print(SAMPLE_RESPONSES)')"

rm -rf "$DEMO_DIR"
"$RLHF" init "$DEMO_DIR" --name demo
cd "$DEMO_DIR"
"$RLHF" import responses "$SAMPLE" --source sample
"$RLHF" comparisons create --batch demo-pairs --k 2 --overlap 2
"$RLHF" comparisons create --batch demo-rank3 --k 3 --overlap 1 --split train
printf 'demo-admin-password\n' | "$RLHF" annotators add admin --role admin --password-stdin
printf 'demo-alice-password\n' | "$RLHF" annotators add alice --password-stdin
"$RLHF" models tiny models/tiny-lm --force
"$RLHF" annotators list
"$RLHF" status
echo
echo "Demo project: $PWD (database rlhf.db, tiny policy in models/tiny-lm)."
echo "Logins: admin / demo-admin-password, alice / demo-alice-password."
echo "Rank by hand: cd $DEMO_DIR && ../.venv/bin/rlhf label serve   (then open http://127.0.0.1:7860/)"
