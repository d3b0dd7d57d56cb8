"""Where `clbench publish` spends its time: the whole command's wall time, then, from the result files it
wrote, each strategy's one-time set-up, training, evaluation and the rest, summed over its seeds.

Usage:
  python bench/publish_time.py --run [publish options...]   # time `clbench publish` itself, then decompose
  python bench/publish_time.py --results-dir results         # decompose an existing results directory

With --run the command's own wall time is measured around the subprocess (like /usr/bin/time); the
decomposition reads only result files, so it can be re-run on the published results at any time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path


def group_of(doc: dict, by: str) -> str:
    """The row a result file counts towards: its strategy, or its stream (and order, when not the stream's own)."""
    if by == "strategy":
        return doc["config"]["strategy"]
    s = doc["stream"]
    order = s.get("order")
    own = not order or order == (s.get("default_order") or order)
    return s["name"] if own else f"{s['name']} ({','.join(order)})"


def decompose(results_dir: Path, by: str = "strategy") -> dict[str, dict[str, float]]:
    """strategy (or stream) -> {runs, setup, train, eval, other, total} seconds, from every result file under
    results_dir."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in sorted((results_dir / "runs").rglob("*.json")):
        try:
            doc = json.loads(path.read_text())
            t, stages = doc["timing"], doc["stages"]
        except (OSError, ValueError, KeyError):
            continue
        if doc.get("status") != "complete":
            continue
        row = out[group_of(doc, by)]
        train = sum(s["train_seconds"] for s in stages)
        evaluation = t["row0_eval_seconds"] + sum(s["eval_seconds"] for s in stages)
        total = t["this_process_seconds"]
        row["runs"] += 1
        row["setup"] += t["setup_seconds"]
        row["train"] += train
        row["eval"] += evaluation
        row["other"] += max(0.0, total - t["setup_seconds"] - train - evaluation)
        row["total"] += total
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="run `clbench publish` first (other arguments go to it)")
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--by", choices=("strategy", "stream"), default="strategy", help="one row per strategy or stream")
    args, rest = ap.parse_known_args()
    results_dir = Path(args.results_dir)
    if args.run:
        cmd = [sys.executable, "-m", "cl_bench.cli", "publish", "--results-dir", str(results_dir), *rest]
        print("$", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"clbench publish: {time.perf_counter() - t0:.0f} s wall")
    rows = decompose(results_dir, args.by)
    if not rows:
        sys.exit(f"no finished result files under {results_dir}/runs")
    keys = ("setup", "train", "eval", "other", "total")
    width = max(22, *(len(n) + 2 for n in rows))
    print(f"\n{args.by:<{width}}{'runs':>5}" + "".join(f"{k + ' s':>10}" for k in keys))
    sums = defaultdict(float)
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["total"]):
        print(f"{name:<{width}}{row['runs']:>5.0f}" + "".join(f"{row[k]:>10.0f}" for k in keys))
        for k in ("runs", *keys):
            sums[k] += row[k]
    print(f"{'all':<{width}}{sums['runs']:>5.0f}" + "".join(f"{sums[k]:>10.0f}" for k in keys))
    print("\nshares of the runs' time: " + ", ".join(f"{k} {sums[k] / sums['total']:.0%}" for k in keys[:-1]))


if __name__ == "__main__":
    main()
