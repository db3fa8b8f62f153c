"""Judge throughput against a loopback OpenAI-compatible server with a fixed latency per call.

For each concurrency it measures, in the same run:
- ``rlhf judge run`` (``pipeline.judge.service.run_judge``, the function the CLI calls): calls/s with template
  rendering, cache lookups, parsing, combining both orders and storing calls, rankings and links included;
- a bare ``AsyncOpenAI`` + semaphore loop making the same calls and nothing else (the floor of this stack);
- the ideal, ``concurrency / latency``.
Then a re-run of the finished batch, which must make 0 calls.

    .venv/bin/python benchmarks/judge_throughput.py                      # 200 ms latency, concurrency 1 8 32 64
    .venv/bin/python benchmarks/judge_throughput.py --latency 0 --concurrency 32

Goal (issue 4): >= 0.9 x the bare loop at every concurrency; a re-run makes 0 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db import make_engine, make_session_factory, sqlite_url, upgrade  # noqa: E402
from db.comparisons import NewComparison, ensure_comparisons  # noqa: E402
from db.prompts import NewPrompt, NewResponse, ensure_prompts, ensure_responses  # noqa: E402
from pipeline.judge.config import JudgeConfig  # noqa: E402
from pipeline.judge.core import Case, Job  # noqa: E402
from pipeline.judge.service import RunOptions, add_judge, judge_context, run_judge  # noqa: E402
from pipeline.llm.openai_backend import request_body  # noqa: E402
from tests.fake_openai import free_port  # noqa: E402


def seed(sessions, batch: str, n: int) -> list[Case]:  # noqa: ANN001
    cases = []
    with sessions.begin() as session:
        for i in range(n):
            messages = [{"role": "user", "content": f"[{batch}] Question {i}: explain something useful."}]
            [(pid, _)] = ensure_prompts(session, [NewPrompt(messages)], test_fraction=0)
            texts = [f"Answer one to {i}, good.", f"Answer two to {i}, good good, with more detail."]
            rids = [r for r, _ in ensure_responses(session, [NewResponse(pid, t, f"g{j}") for j, t in enumerate(texts)])]
            ensure_comparisons(session, [NewComparison(pid, tuple(rids), batch, 0)])
            cases.append(Case(0, messages, list(zip(rids, texts, strict=True))))
    return cases


async def bare_loop(base_url: str, bodies: list[dict], concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=60)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> None:
        async with semaphore:
            await client.chat.completions.create(**body)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(bodies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=15.0, help="about how long each measurement runs")
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--port", str(port), "--latency", str(args.latency)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    work = Path(tempfile.mkdtemp(prefix="rlhf-judge-bench-"))
    engine = make_engine(sqlite_url(work / "bench.db"))
    upgrade(engine)
    sessions = make_session_factory(engine)
    rows = []
    try:
        for _ in range(100):
            try:
                httpx.post(base_url + "/chat/completions", json={"messages": []}, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with sessions.begin() as session:
            add_judge(session, "bench", JudgeConfig(model="fake-judge", base_url=base_url, api_key_env=None))
        for concurrency in args.concurrency:
            ideal = concurrency / args.latency if args.latency else float("inf")
            expected_rate = min(ideal, 200.0)
            comparisons = max(10, int(expected_rate * args.seconds / 2))
            batch = f"c{concurrency}"
            cases = seed(sessions, batch, comparisons)
            with sessions() as session:
                ctx = judge_context(session, "bench")
            bodies = [
                request_body("fake-judge", job.request(i))
                for case in cases
                for job in [Job(case, ctx.config, ctx.template)]
                for i in range(len(job.orders))
            ]
            bare = asyncio.run(bare_loop(base_url, bodies, concurrency))
            report = run_judge(sessions, "bench", RunOptions(batch=batch, concurrency=concurrency))
            ours = report.calls / report.seconds
            rerun = run_judge(sessions, "bench", RunOptions(batch=batch, concurrency=concurrency))
            rows.append((concurrency, ideal, bare, ours, report.calls, rerun.calls))
    finally:
        server.terminate()
        server.wait(timeout=10)
        engine.dispose()
    print(f"\nloopback server latency {args.latency * 1000:.0f} ms per call; 2 cores shared by client and server\n")
    print(f"{'concurrency':>11}{'ideal/s':>10}{'bare loop/s':>13}{'judge run/s':>13}{'vs bare':>9}{'calls':>8}"
          f"{'re-run calls':>14}")
    for concurrency, ideal, bare, ours, calls, rerun_calls in rows:
        ideal_text = f"{ideal:.0f}" if ideal != float("inf") else "inf"
        print(f"{concurrency:>11}{ideal_text:>10}{bare:>13.1f}{ours:>13.1f}{ours / bare:>9.2f}{calls:>8}"
              f"{rerun_calls:>14}")
    print("\ngoal: judge run >= 0.9 x bare loop at every concurrency; re-run makes 0 calls")


if __name__ == "__main__":
    main()
