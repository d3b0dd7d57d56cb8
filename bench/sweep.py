"""The sweep's overhead and Ray's scaling on this machine.

Usage: python bench/sweep.py [--cells 6] [--steps 20] [--eval-limit 64]

The same cells (vision-audio, strategies align-only, lora and full-ft, seeds 0..; small budgets
so that each cell is seconds) are run four ways, each into a fresh results directory with the
shared cache (data and base model built before timing):
  1. one after another in one process (runner.run in a loop): the reference;
  2. `clbench sweep --engine local` (the same process, through the sweep);
  3. `clbench sweep --engine ray --cpus-per-cell 2`: one Ray worker at a time with 2 threads;
  4. `clbench sweep --engine ray --cpus-per-cell 1`: two Ray workers at once with 1 thread each.
Wall time of each (whole commands, Ray's start and stop included) and the ratios to 1.

    python bench/sweep.py --shared-cache [--steps 5]

times what sharing row 0 saves: `clbench sweep` of every registered strategy, one seed, full
evaluation (as `clbench publish` evaluates), with CLBENCH_SHARED_CACHE=0 and with sharing on
(a seed with nothing stored yet, so that its first run computes the entry).

    python bench/sweep.py --publish SEED

the same at clbench publish's defaults: `clbench publish --seeds SEED` (the default stream, every
strategy, 400 steps, full evaluation, then the leaderboard and figures) into a fresh results
directory, once with CLBENCH_SHARED_CACHE=0 and once with sharing on (the first run of the seed
computes the entry: pick a seed with no entry stored, e.g. one not published). It prints both
wall times and, from the result files, the row 0 evaluation's seconds summed over the runs.

    python bench/sweep.py --fits SEED

what sharing fits saves where settings agree: `clbench sweep --strategies full-ft,mmer,single-ft --set lr=3e-4`
(MMER's default learning rate, a point of all three tuning grids; default budgets, full evaluation), with
CLBENCH_SHARED_CACHE=0 and with sharing on (a seed with nothing stored). It prints both wall times, each
stage's fits (computed or stored, from the result files) and what sharing cost (overhead_seconds: hashing the
state, writing or reading the entries).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STRATEGIES = ("align-only", "lora", "full-ft")


def reference(cells: list[tuple[str, int]], steps: int, eval_limit: int, results: str) -> None:
    from cl_bench.config import Budget
    from cl_bench.run.runner import RunConfig, run

    for strategy, seed in cells:
        run(RunConfig(strategy=strategy, seed=seed, budget=Budget(steps=steps), eval_limit=eval_limit,
                      results_dir=results, device="cpu"), progress=False, echo=lambda s: None)


def shared_cache(steps: int) -> None:
    import os

    root = Path(tempfile.mkdtemp(prefix="clbench-shared-bench-"))
    times = {}
    for name, seed, env in (("sharing off (CLBENCH_SHARED_CACHE=0)", "7", {"CLBENCH_SHARED_CACHE": "0"}),
                            ("sharing on, nothing stored before", "8", {})):
        t0 = time.perf_counter()
        subprocess.run(["clbench", "sweep", "--strategies", "all", "--seeds", seed, "--steps", str(steps), "--device",
                        "cpu", "-q", "--results-dir", str(root / seed)], check=True, capture_output=True,
                       env={**os.environ, **env})
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.1f} s", flush=True)
    off, on = times.values()
    print(f"saved {off - on:.1f} s of {off:.1f} s ({(off - on) / off:.1%})")


def publish(seed: int) -> None:
    import json
    import os

    root = Path(tempfile.mkdtemp(prefix="clbench-publish-bench-"))
    times, row0 = {}, {}
    for name, env in (("sharing off (CLBENCH_SHARED_CACHE=0)", {"CLBENCH_SHARED_CACHE": "0"}),
                      ("sharing on, nothing stored before", {})):
        out = root / ("off" if env else "on")
        t0 = time.perf_counter()
        subprocess.run(["clbench", "publish", "--seeds", str(seed), "--device", "cpu", "--results-dir", str(out)],
                       check=True, capture_output=True, env={**os.environ, **env})
        times[name] = time.perf_counter() - t0
        files = [json.loads(f.read_text()) for f in (out / "runs").rglob("*.json")]
        sources = sorted({str(d["timing"].get("row0_source")) for d in files})
        row0[name] = sum(d["timing"]["row0_eval_seconds"] for d in files)
        print(f"{name}: {times[name]:.1f} s, {len(files)} runs, row 0 {row0[name]:.1f} s in all "
              f"(row0_source: {', '.join(sources)})", flush=True)
    (off, on), (r_off, r_on) = times.values(), row0.values()
    print(f"saved {off - on:.1f} s of {off:.1f} s ({(off - on) / off:.1%}); row 0 took {r_off:.1f} s "
          f"without sharing and {r_on:.1f} s with it")


def fits(seed: int) -> None:
    import json
    import os

    root = Path(tempfile.mkdtemp(prefix="clbench-fits-bench-"))
    times = {}
    for name, env in (("sharing off (CLBENCH_SHARED_CACHE=0)", {"CLBENCH_SHARED_CACHE": "0"}),
                      ("sharing on, nothing stored before", {})):
        out = root / ("off" if env else "on")
        t0 = time.perf_counter()
        subprocess.run(["clbench", "sweep", "--strategies", "full-ft,mmer,single-ft", "--set", "lr=3e-4", "--seeds",
                        str(seed), "--device", "cpu", "-q", "--results-dir", str(out)], check=True, capture_output=True,
                       env={**os.environ, **env})
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.1f} s", flush=True)
        if not env:
            overhead = []
            for f in sorted((out / "runs").rglob("*.json"), key=lambda f: f.stat().st_mtime):
                d = json.loads(f.read_text())
                log = [x for s in d["stages"] for x in s.get("shared_fits", [])]
                overhead += [x["overhead_seconds"] for x in log]
                print(f"  {d['config']['strategy']}: " + ", ".join(f"{x['phase']} {x['source']} ({x['seconds']} s)"
                                                                   for x in log))
            print(f"  sharing's cost per fit: {min(overhead):.3f}-{max(overhead):.3f} s")
    off, on = times.values()
    print(f"saved {off - on:.1f} s of {off:.1f} s ({(off - on) / off:.1%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-limit", type=int, default=64)
    ap.add_argument("--reference", nargs=1, help=argparse.SUPPRESS)
    ap.add_argument("--shared-cache", action="store_true", help="time what sharing row 0 saves (see above)")
    ap.add_argument("--publish", type=int, metavar="SEED", help="time what sharing saves in clbench publish (above)")
    ap.add_argument("--fits", type=int, metavar="SEED", help="time what sharing fits saves where settings agree")
    args = ap.parse_args()
    if args.fits is not None:
        fits(args.fits)
        return
    if args.publish is not None:
        publish(args.publish)
        return
    if args.shared_cache:
        shared_cache(args.steps)
        return
    cells = [(STRATEGIES[i % len(STRATEGIES)], i // len(STRATEGIES)) for i in range(args.cells)]
    if args.reference:
        reference(cells, args.steps, args.eval_limit, args.reference[0])
        return
    seeds = ",".join(str(s) for s in sorted({s for _, s in cells}))
    if args.cells % len(STRATEGIES):
        raise SystemExit(f"--cells must be a multiple of {len(STRATEGIES)} (one per strategy and seed)")
    root = Path(tempfile.mkdtemp(prefix="clbench-sweep-bench-"))
    sweep = ["clbench", "sweep", "--strategies", ",".join(STRATEGIES), "--seeds", seeds, "--steps", str(args.steps),
             "--eval-limit", str(args.eval_limit), "--device", "cpu", "-q"]
    # warm the shared cache (data, base model) outside the timings
    subprocess.run([*sweep[:2], "--strategies", "align-only", "--seeds", "0", "--steps", "1", "--eval-limit", "8",
                    "--device", "cpu", "-q", "--results-dir", str(root / "warm")], check=True, capture_output=True)
    ways = {"one process, runner.run in a loop": [sys.executable, __file__, "--cells", str(args.cells), "--steps",
                                                   str(args.steps), "--eval-limit", str(args.eval_limit),
                                                   "--reference", str(root / "ref")],
            "clbench sweep --engine local": [*sweep, "--results-dir", str(root / "local")],
            "--engine ray, 1 worker x 2 threads": [*sweep, "--engine", "ray", "--cpus-per-cell", "2",
                                                   "--results-dir", str(root / "ray2")],
            "--engine ray, 2 workers x 1 thread": [*sweep, "--engine", "ray", "--cpus-per-cell", "1",
                                                   "--results-dir", str(root / "ray1")]}
    times = {}
    for name, cmd in ways.items():
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times[name] = time.perf_counter() - t0
        print(f"{name}: {times[name]:.1f} s", flush=True)
    first = next(iter(times.values()))
    print(f"\n{args.cells} cells (steps {args.steps}, eval-limit {args.eval_limit})\n")
    print("| how | wall s | / one process |\n|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {t:.1f} | {t / first:.2f}x |")


if __name__ == "__main__":
    main()
