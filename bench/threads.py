"""Four tiny runs started at once against one alone: does each take its share of the CPUs and no more?

Usage: python bench/threads.py [--steps 60] [--eval-limit 200] [--runs 4] [--out bench/threads.json]

Each case starts `clbench run` processes on a warm cache (data and base model built first) and times
each process as a whole: one run alone at the default thread count; --runs runs started together at
the default (the CPUs available shared among the runs active in the cache); the same runs started
together with --threads N each, N = the CPUs available (what every process would take without the
sharing). Seeds differ so that each run has its own key. The ratios are each run's wall time over the
lone run's. Numbers depend on the machine: say which when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLBENCH = str(Path(sys.executable).parent / "clbench")


def start(cache: Path, results: Path, seed: int, args, threads: int | None) -> subprocess.Popen:
    cmd = [CLBENCH, "run", "--strategy", "full-ft", "--device", "cpu", "--seed", str(seed), "--steps", str(args.steps),
           "--eval-limit", str(args.eval_limit), "--results-dir", str(results), "-q"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "CLBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "CLBENCH_SHARED_CACHE": "0"}
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def timed(procs: list[subprocess.Popen]) -> list[float]:
    t0 = time.perf_counter()
    out = [0.0] * len(procs)
    pending = dict(enumerate(procs))
    while pending:
        for i, p in list(pending.items()):
            if p.poll() is not None:
                out[i] = time.perf_counter() - t0
                if p.returncode != 0:
                    sys.exit(f"run {i} failed:\n{p.stdout.read()}")
                del pending[i]
        time.sleep(0.05)
    return out


def threads_of(results: Path) -> list[int]:
    return sorted(json.loads(f.read_text())["environment"]["torch_threads"] for f in results.rglob("*.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from cl_bench.run.threads import available_cpus

    cpus = available_cpus()
    root = Path(tempfile.mkdtemp(prefix="clbench-threads-"))
    cache = root / "cache"
    print(f"warming the cache in {cache} (data and base model) ...", flush=True)
    timed([start(cache, root / "warm", 100, args, None)])

    alone = timed([start(cache, root / "alone", 0, args, None)])[0]
    together = timed([start(cache, root / "together", 1 + i, args, None) for i in range(args.runs)])
    fixed = timed([start(cache, root / "fixed", 1 + args.runs + i, args, cpus) for i in range(args.runs)])
    report = {"cpus": cpus, "steps": args.steps, "eval_limit": args.eval_limit, "runs": args.runs,
              "alone_seconds": round(alone, 2), "alone_threads": threads_of(root / "alone"),
              "together_seconds": [round(s, 2) for s in together], "together_threads": threads_of(root / "together"),
              "together_max_ratio": round(max(together) / alone, 2),
              "fixed_threads_seconds": [round(s, 2) for s in fixed], "fixed_threads": threads_of(root / "fixed"),
              "fixed_max_ratio": round(max(fixed) / alone, 2)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
