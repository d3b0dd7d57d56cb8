"""Seconds per training step of each MoE family under each transformers expert kernel, on the CPU.

Usage: python bench/expert_kernel.py [--steps 20] [--batch 32] [--length 40]

For every preset family (mixtral, olmoe, qwen2_moe, qwen3_moe, granitemoe: hidden 128, 4 layers,
4 experts, top-2, random weights) the script times full training steps (forward, backward, AdamW)
on random token batches with each of transformers' expert implementations (eager, batched_mm,
grouped_mm), after 3 warm-up steps, and prints the median step and the kernel clbench picks for
the CPU (cl_bench.models.lm.experts_implementation). The presets and local checkpoints are set the
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
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from cl_bench.models.lm import PRESETS, experts_implementation, preset_config

    chosen = experts_implementation(torch.device("cpu"))
    kernels = ("eager", "batched_mm", "grouped_mm")
    rows = []
    for preset in PRESETS:
        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(preset_config(preset, 400)).train()
        opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
        x = torch.randint(0, 400, (args.batch, args.length), generator=torch.Generator().manual_seed(0))
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
                if step >= 3:
                    times.append(time.perf_counter() - t0)
            medians[kernel] = statistics.median(times)
            print(f"{preset} {kernel}: {medians[kernel]:.4f} s/step", flush=True)
        rows.append((preset, lm.config.model_type, medians))
    print(f"\n{args.steps} steps (median, after 3 warm-up) of batch {args.batch} x {args.length} tokens, "
          f"torch threads {torch.get_num_threads()}; clbench picks {chosen!r} on the CPU\n")
    print("| preset | model_type | " + " | ".join(f"{k} s/step" for k in kernels) + " | grouped_mm / eager |")
    print("|---|---|" + "---|" * (len(kernels) + 1))
    for preset, model_type, m in rows:
        print(f"| {preset} | {model_type} | " + " | ".join(f"{m[k]:.4f}" for k in kernels)
              + f" | {m['grouped_mm'] / m['eager']:.1f}x |")


if __name__ == "__main__":
    main()
