"""``rlhf export`` at scale: K=4 rankings, 3 annotators per comparison, in an SQLite store.

Synthesizes the store directly (bulk INSERTs), then runs ``rlhf export`` as a subprocess and reports wall time,
pairs/s and the export process's peak memory, at two sizes, so that "flat in the number of rankings" is visible.

    .venv/bin/python benchmarks/export_scale.py                    # 25,000 and 100,000 rankings
    .venv/bin/python benchmarks/export_scale.py --rankings 100000

Goal (issue 5): 100,000 rankings exported in < 10 s; peak memory flat in the number of rankings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from db import make_engine, sqlite_url, upgrade  # noqa: E402
from db.content import prompt_hash, response_hash, response_key, stable_split  # noqa: E402
from db.models import Annotator, Comparison, Prompt, Ranking, Response, utcnow  # noqa: E402

K = 4
ANNOTATORS = 3


def synthesize(path: Path, rankings: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    engine = make_engine(sqlite_url(path))
    upgrade(engine)
    comparisons = rankings // ANNOTATORS
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(insert(Annotator), [
            {"id": n + 1, "name": f"h{n}", "kind": "human", "role": "annotator", "password_hash": None,
             "config": {}, "active": True, "created_at": now} for n in range(ANNOTATORS)
        ])
        for start in range(0, comparisons, 5000):
            ids = range(start + 1, min(comparisons, start + 5000) + 1)
            prompts, responses, comps, ranks = [], [], [], []
            for c in ids:
                messages = [{"role": "user", "content": f"Synthetic instruction number {c}: explain a topic."}]
                h = prompt_hash(messages)
                prompts.append({"id": c, "content_hash": h, "messages": messages, "source": "synthetic", "tags": [],
                                "split": stable_split(h, 0.1), "meta": {}, "created_at": now})
                rids = []
                for j in range(K):
                    rid = (c - 1) * K + j + 1
                    text = f"Response {j} to instruction {c}. " + "Some words of content. " * rng.randint(2, 12)
                    responses.append({"id": rid, "prompt_id": c, "text": text, "generator": f"m{j}", "gen_params": {},
                                      "content_hash": response_hash(text, f"m{j}"), "created_at": now})
                    rids.append(rid)
                comps.append({"id": c, "prompt_id": c, "response_ids": rids, "response_key": response_key(rids),
                              "k": K, "required_overlap": ANNOTATORS, "batch": "synthetic", "status": "complete",
                              "created_at": now})
                truth = list(range(1, K + 1))
                rng.shuffle(truth)
                for a in range(ANNOTATORS):
                    noisy = truth[:]
                    if rng.random() < 0.3:  # some disagreement
                        i, j = rng.sample(range(K), 2)
                        noisy[i], noisy[j] = noisy[j], noisy[i]
                    ranks.append({"comparison_id": c, "annotator_id": a + 1, "ranks": noisy, "skipped": False,
                                  "all_bad": False, "shown_order": rids, "created_at": now})
            conn.execute(insert(Prompt), prompts)
            conn.execute(insert(Response), responses)
            conn.execute(insert(Comparison), comps)
            conn.execute(insert(Ranking), ranks)
    engine.dispose()


MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
result = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.perf_counter() - started, "rc": result.returncode, "out": result.stdout,
                  "err": result.stderr, "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def run_export(path: Path, out: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS of the export process in MB, its summary line), each export measured on its own."""
    rlhf = Path(sys.executable).parent / "rlhf"
    command = [sys.executable, "-c", MEASURE, str(rlhf), "--db", sqlite_url(path), "export", "--out", str(out)]
    measured = json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                         env={**os.environ, "COLUMNS": "200"}).stdout)
    if measured["rc"]:
        raise RuntimeError(measured["out"] + measured["err"])
    return measured["seconds"], measured["peak_kb"] // 1024, measured["out"].strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rankings", type=int, nargs="+", default=[25_000, 100_000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rlhf-export-bench-"))
    rows = []
    for n in sorted(args.rankings):
        db = work / f"store-{n}.db"
        started = time.perf_counter()
        synthesize(db, n)
        made = time.perf_counter() - started
        seconds, peak, summary = run_export(db, work / f"out-{n}")
        pairs = int(summary.split(":", 1)[1].split()[0])
        rows.append((n, made, seconds, pairs, peak))
    print("\nrlhf export of K=4 rankings, 3 annotators per comparison (SQLite, 2 cores)\n")
    print(f"{'rankings':>9}{'pairs':>9}{'export s':>10}{'pairs/s':>10}{'peak MB':>9}   (synthesis s)")
    for n, made, seconds, pairs, peak in rows:
        print(f"{n:>9}{pairs:>9}{seconds:>10.1f}{pairs / seconds:>10.0f}{peak:>9}   ({made:.1f})")
    print("\ngoal: 100,000 rankings in < 10 s; peak memory flat in the number of rankings")
    print("(export s and peak MB are the whole `rlhf export` process: interpreter start, imports, datasets)")


if __name__ == "__main__":
    main()
