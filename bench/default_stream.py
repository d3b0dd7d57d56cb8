"""Time the default stream from a cold cache, and report strategies over seeds.

Usage: python bench/default_stream.py [--seeds 0 1 2] [--strategies full-ft align-only moextend]

The first run starts from an empty cache, so its set-up time is the one-time data
build plus base pre-training; the run time excludes it. Result files go to a
temporary directory (not results/).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=["full-ft", "align-only", "moextend"])
    args = ap.parse_args()

    import torch

    from cl_bench.run.runner import RunConfig, run

    cache, out = tempfile.mkdtemp(prefix="clbench-cache-"), tempfile.mkdtemp(prefix="clbench-results-")
    print(f"torch threads {torch.get_num_threads()}, cpu: "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores")
    rows = {}
    for strategy in args.strategies:
        for seed in args.seeds:
            t0 = time.perf_counter()
            r, _ = run(RunConfig(strategy=strategy, seed=seed, cache_dir=cache, results_dir=out, device="cpu"),
                       progress=False)
            wall = time.perf_counter() - t0
            t = r["timing"]
            print(f"{strategy} seed {seed}: set-up {t['setup_seconds']:.1f} s, run {wall - t['setup_seconds']:.1f} s "
                  f"(training {t['train_seconds']:.1f} s); R = {r['accuracy_matrix']}", flush=True)
            rows.setdefault(strategy, []).append(r)
    print("\n| strategy | text (base -> end) | vision (after vision -> end) | audio (end) | ACC | BWT | forgetting |")
    print("|---|---|---|---|---|---|---|")
    for strategy, rs in rows.items():
        def ms(values):
            values = list(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} ± {sd:.3f}"

        R = [r["accuracy_matrix"] for r in rs]
        print(f"| {strategy} | {ms(x[0][0] for x in R)} -> {ms(x[-1][0] for x in R)} | "
              f"{ms(x[1][1] for x in R)} -> {ms(x[-1][1] for x in R)} | {ms(x[-1][2] for x in R)} | "
              f"{ms(r['metrics']['acc'] for r in rs)} | {ms(r['metrics']['bwt'] for r in rs)} | "
              f"{ms(r['metrics']['forgetting'] for r in rs)} |")
    print(f"(n = {len(args.seeds)} seeds; mean ± sd)")

    print("\n| strategy | training step (s), stage mean | trainable params, vision stage | fraction of total |")
    print("|---|---|---|---|")
    for strategy, rs in rows.items():
        steps = []
        for r in rs:
            for st in r["stages"]:
                ts = st["train_stats"]
                steps.append(ts["seconds_per_step"])  # MoExtend reports its fine-tuning phase
        c = rs[0]["stages"][0]["cost"]
        print(f"| {strategy} | {statistics.mean(steps):.4f} | {c['trainable']:,} | {c['trainable'] / c['total']:.4f} |")


if __name__ == "__main__":
    sys.exit(main())
