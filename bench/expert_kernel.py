"""Seconds per training step of each MoE family under each transformers expert kernel, on the CPU.

Usage: python bench/expert_kernel.py [--steps 20] [--batch 32] [--length 40]
       python bench/expert_kernel.py --steps 3 --batches 4,8,16,32 --length 20 --cap 10   (a sweep)

For every preset family (mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe: hidden 128, 4 layers,
4 experts, top-2, random weights) the script times full training steps (forward, backward, AdamW)
on random token batches with each of transformers' expert implementations (eager, batched_mm,
grouped_mm), after 3 warm-up steps, and prints the median step and the kernel clbench picks for
the CPU (cl_bench.models.lm.experts_implementation). With --batches it sweeps batch sizes; a kernel
whose first warm-up step takes longer than --cap seconds is reported as slower than that and
not timed further at that batch. The presets and local checkpoints are set the
same way, by `_finish` in cl_bench/models/lm.py.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=40)
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes to sweep (instead of --batch)")
    ap.add_argument("--presets", default=None, help="comma-separated presets [default: all]")
    ap.add_argument("--cap", type=float, default=None, help="seconds; see above")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [args.batch]

    import torch
    from transformers import AutoModelForCausalLM

    from cl_bench.models.lm import PRESETS, experts_implementation, preset_config

    chosen = experts_implementation(torch.device("cpu"))
    kernels = ("eager", "batched_mm", "grouped_mm")
    rows = []
    presets = args.presets.split(",") if args.presets else list(PRESETS)
    for batch in batches:
        for preset in presets:
            torch.manual_seed(0)
            lm = AutoModelForCausalLM.from_config(preset_config(preset, 400)).train()
            opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
            x = torch.randint(0, 400, (batch, args.length), generator=torch.Generator().manual_seed(0))
            medians = {}
            for kernel in kernels:
                lm.set_experts_implementation(kernel)
                times = []
                for step in range(3 + args.steps):
                    t0 = time.perf_counter()
                    loss = lm(x, labels=x).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    took = time.perf_counter() - t0
                    if step == 0 and args.cap is not None and took > args.cap:
                        break  # too slow at this batch: not timed further
                    if step >= 3:
                        times.append(took)
                medians[kernel] = statistics.median(times) if times else None
                shown = f"{medians[kernel]:.4f} s/step" if times else f"> {args.cap} s (first step {took:.1f} s)"
                print(f"{preset} batch {batch} {kernel}: {shown}", flush=True)
            rows.append((preset, lm.config.model_type, batch, medians))
    print(f"\n{args.steps} steps (median, after 3 warm-up) of batch x {args.length} tokens, "
          f"torch threads {torch.get_num_threads()}; clbench picks {chosen!r} on the CPU\n")
    print("| preset | model_type | batch | " + " | ".join(f"{k} s/step" for k in kernels) + " | grouped_mm / eager |")
    print("|---|---|---|" + "---|" * (len(kernels) + 1))

    def cell(v):
        return f"{v:.4f}" if v is not None else f"> {args.cap} s"

    for preset, model_type, batch, m in rows:
        ratio = f"{m['grouped_mm'] / m['eager']:.1f}x" if m["grouped_mm"] and m["eager"] else "-"
        print(f"| {preset} | {model_type} | {batch} | " + " | ".join(cell(m[k]) for k in kernels) + f" | {ratio} |")

if __name__ == "__main__":
    main()
