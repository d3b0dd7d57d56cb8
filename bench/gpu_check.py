"""One GPU check of the whole path: a run of the default stream in bf16 on a mid-size Mixtral, its plan against the
measured peak memory, and the leaderboard's metrics computed on the device, printed as one table.

Usage: bench/gpu_check.sh [--cpu] [--model random:mixtral-medium | PRESET | DIR] [--steps N] [--batch-size N]
       [--eval-limit N] [--strategy full-ft] [--cache-dir DIR] [--threads N]
       (or CLBENCH_GPU_CHECK_DEVICE=cpu bench/gpu_check.sh)

On cuda: --dtype bfloat16 and the default budget (400 steps x 32 per stage); --cpu runs the same path in float32
with a tiny budget (2 steps x 8, 16 test items per task) to check the script itself. Steps:
1. The model: "random:PRESET" (the default) saves a Mixtral of that preset's shape with random weights and the
   stream's word tokenizer (save_pretrained) into a temporary directory and runs it as a checkpoint (--model DIR),
   so that no pre-training is timed; a preset name is pre-trained (and cached) as any run's base.
2. `clbench plan --json` for the same configuration: the planned peak (bytes.peak). The result file records the
   run's own plan too (result["plan"]); both are printed.
3. The run, in this process (cl_bench.run.runner.run, results to a temporary directory): steps per second from the
   stages' train_stats, and the measured peak: torch.cuda.max_memory_allocated() over the run (reset before it).
   Result files do not record a measured peak, hence in-process. On the CPU the process's peak resident memory
   (ru_maxrss) stands in, which counts everything the process holds: not comparable with the plan.
4. The leaderboard of that result built with device=<the run's device> (cl_bench.reporting.leaderboard.build): its
   ACC against the one the run computed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_ENV = "CLBENCH_GPU_CHECK_DEVICE"
DEFAULT_MODEL = "random:mixtral-medium"


def random_checkpoint(preset: str, stream_name: str, cache_dir: str | None, out: Path) -> Path:
    """A Mixtral of `preset`'s shape with random weights and `stream_name`'s word tokenizer, saved to `out`."""
    import torch
    from transformers import AutoModelForCausalLM

    from cl_bench.models.lm import preset_config, stream_words, word_tokenizer
    from cl_bench.streams import resolve
    from cl_bench.streams.data import default_cache_dir

    _, stream = resolve.load(stream_name, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                             progress=False)
    tok = word_tokenizer(stream_words(stream))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(preset_config(preset, len(tok), tok))
    lm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def planned(model: str, args, device: str, dtype: str) -> dict:
    """`clbench plan --json` of the check's configuration."""
    cmd = [sys.executable, "-m", "cl_bench.cli", "plan", "--stream", args.stream, "--strategy", args.strategy,
           "--model", model, "--device", device, "--dtype", dtype, "--batch-size", str(args.batch_size), "--json"]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"clbench plan failed ({out.returncode}):\n{out.stderr or out.stdout}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", default=os.environ.get(DEVICE_ENV, "").lower() == "cpu",
                    help=f"run the same path on the CPU with a tiny budget (or {DEVICE_ENV}=cpu)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="random:PRESET (random weights, saved as a checkpoint), "
                                                           "a preset, or a checkpoint directory")
    ap.add_argument("--stream", default="vision-audio")
    ap.add_argument("--strategy", default="full-ft")
    ap.add_argument("--steps", type=int, default=None, help="steps per stage [cuda 400, cpu 2]")
    ap.add_argument("--batch-size", type=int, default=None, help="[cuda 32, cpu 8]")
    ap.add_argument("--eval-limit", type=int, default=None, help="test items per task [cuda all, cpu 16]")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="for a preset [cuda: the default, cpu 2]")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from cl_bench.config import Budget, PretrainConfig
    from cl_bench.reporting import leaderboard
    from cl_bench.run.plan import human
    from cl_bench.run.runner import RunConfig, _quiet_libraries, run

    _quiet_libraries()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA GPU; pass --cpu (or set "
                         f"{DEVICE_ENV}=cpu) to check the same path on the CPU")
    dtype = "float32" if args.cpu else "bfloat16"
    steps = args.steps or (2 if args.cpu else Budget().steps)
    batch = args.batch_size or (8 if args.cpu else Budget().batch_size)
    args.batch_size = batch
    eval_limit = args.eval_limit or (16 if args.cpu else None)
    pretrain = PretrainConfig(steps=args.pretrain_steps) if args.pretrain_steps else (
        PretrainConfig(steps=2, batch_size=8) if args.cpu else PretrainConfig())

    with tempfile.TemporaryDirectory(prefix="clbench-gpu-check-") as tmp:
        model, shown = args.model, args.model
        if model.startswith("random:"):
            preset = model.partition(":")[2]
            model = str(random_checkpoint(preset, args.stream, args.cache_dir, Path(tmp) / preset))
            shown = f"{preset} shape, random weights"
        plan = planned(model, args, device, dtype)
        config = RunConfig(stream=args.stream, strategy=args.strategy, model=model, device=device, dtype=dtype,
                           budget=Budget(steps=steps, batch_size=batch), pretrain=pretrain,
                           results_dir=str(Path(tmp) / "results"), cache_dir=args.cache_dir, eval_limit=eval_limit,
                           threads=args.threads, shared_cache=False)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result, _ = run(config, progress=False, echo=lambda s: print(s, file=sys.stderr))
        wall = time.perf_counter() - t0
        if device == "cuda":
            measured, how = torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        else:  # ru_maxrss: KiB on Linux
            measured, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS, not comparable"
        board = leaderboard.build(Path(tmp) / "results", device=device)
        board_acc = board.tables[0].rows[0].values["acc"][0]

    per_step = [s["train_stats"]["seconds_per_step"] for s in result["stages"]
                if (s.get("train_stats") or {}).get("seconds_per_step")]
    sps = len(per_step) / sum(per_step) if per_step else float("nan")
    env = result.get("environment") or {}
    plan_peak, recorded_peak = plan["bytes"]["peak"], (result.get("plan") or {}).get("bytes", {}).get("peak")
    acc = result["metrics"]["acc"]
    rows = [("device", f"{device} ({env.get('device', device)})"),
            ("model", f"{shown}, {plan['parameters']['total']:,} parameters"),
            ("dtype", dtype),
            ("budget", f"{steps} steps x {batch} per stage, {len(result['stages'])} stages"
                       + (f", {eval_limit} test items per task" if eval_limit else "")),
            ("steps/s", f"{sps:.2f} (training loop; run {wall:.0f} s in all)"),
            ("planned peak", (f"{human(plan_peak)} (clbench plan; the run's recorded plan "
                              f"{'n/a' if recorded_peak is None else human(recorded_peak)})")),
            ("measured peak", f"{human(measured)} ({how})"),
            ("measured/planned", f"{measured / plan_peak:.2f}" if device == "cuda" else
             "n/a on the CPU (resident memory counts the whole process)"),
            ("ACC", f"{acc:.4f} (run), {board_acc:.4f} (leaderboard metrics on {device})")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    if abs(acc - board_acc) > 1e-6:
        print(f"ACC differs between the run and the leaderboard on {device}: {acc} != {board_acc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
