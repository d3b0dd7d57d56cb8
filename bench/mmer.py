"""MMER on the default stream: retention against each modality's own fine-tuned model,
merge time against fine-tuning, and the merge's peak memory against the model's size.

Usage: python bench/mmer.py [--seeds 0 1 2]

Each seed runs `mmer` with export-dir set, so the per-modality fine-tuned models are
kept; the bench (as the evaluator, not the strategy) scores each on its modality's test
split. The merge's memory is measured in a fresh process that merges the saved task
vectors with the strategy's own function (peak of torch's CPU allocations, from
torch's profiler).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MERGE_PROBE = r"""
# Peak of torch's CPU allocations during the merge, from the profiler's memory events.
import json, sys, torch
from safetensors import safe_open
from cl_bench.strategies.mmer.merge import merge_files
paths = sys.argv[1:]
with safe_open(paths[0], framework="pt") as f:
    names = list(f.keys())
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
    star = merge_files(paths, names)
live = peak = 0
for e in sorted(prof.events(), key=lambda e: e.time_range.start):
    if e.name == "[memory]":  # leaf allocation (+) and free (-) events; ops also report their children's
        live += e.cpu_memory_usage
        peak = max(peak, live)
print(json.dumps({"peak_bytes": peak, "merged_bytes": sum(t.numel() * 4 for t in star.values())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from cl_bench import registry
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.api.training import TaskData, accuracy
    from cl_bench.models.encoders import build_encoder
    from cl_bench.run.base import load_base
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.run.runner import RunConfig, run

    cpu = torch.device("cpu")
    out = tempfile.mkdtemp(prefix="clbench-mmer-bench-")
    stream = registry.streams.get("vision-audio")().build(default_cache_dir(), progress=False)
    rows = []
    for seed in args.seeds:
        export = Path(out) / f"seed{seed}"
        r, _ = run(RunConfig(strategy="mmer", seed=seed, device="cpu", results_dir=out,
                             strategy_options={"export-dir": str(export)}), progress=False)
        base = load_base("mixtral-tiny", stream, cpu, default_cache_dir(), progress=False)
        theta0 = dict(base.lm.named_parameters())
        R = r["accuracy_matrix"]
        row = {"seed": seed, "text_retention": r["metrics"]["text_retention"]}
        for j, exp in enumerate(stream.experiences, start=1):
            lm = AutoModelForCausalLM.from_pretrained(export / exp.modality, local_files_only=True)
            lm.set_experts_implementation("eager")
            model = MultimodalLM(lm, base.tokenizer, {exp.modality: build_encoder(exp.modality)})
            from safetensors.torch import load_file

            model.projectors[exp.modality].load_state_dict(load_file(str(export / exp.modality / "projector.safetensors")))
            own = accuracy(model, TaskData(exp.test, model, exp.modality), cpu)
            row[exp.name] = {"mmer": R[-1][j], "own_finetuned": own, "retention_pct": 100 * R[-1][j] / own}
            save_file({n: (p.detach() - theta0[n].detach()).contiguous() for n, p in lm.named_parameters()},
                      str(export / f"tau-{exp.modality}.safetensors"))
        last = r["stages"][-1]["train_stats"]
        row["merge_seconds"] = last["merge_seconds"]
        row["finetune_seconds"] = last["finetune_seconds"]
        row["chosen"] = last["chosen"]
        probe = subprocess.run([sys.executable, "-c", MERGE_PROBE, *[str(export / f"tau-{e.modality}.safetensors")
                                                                     for e in stream.experiences]],
                               capture_output=True, text=True, check=True)
        row["merge_memory"] = json.loads(probe.stdout)
        row["model_bytes"] = sum(p.numel() * 4 for p in base.lm.parameters())
        rows.append(row)
        print(json.dumps(row), flush=True)

    def ms(xs):
        xs = list(xs)
        return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.1f}"

    print("\n| | vision | audio |\n|---|---|---|")
    print(f"| MMER accuracy | {ms(100 * r['vision']['mmer'] for r in rows)}% | {ms(100 * r['audio']['mmer'] for r in rows)}% |")
    print(f"| own fine-tuned model | {ms(100 * r['vision']['own_finetuned'] for r in rows)}% | "
          f"{ms(100 * r['audio']['own_finetuned'] for r in rows)}% |")
    print(f"| retention (MMER / own) | {ms(r['vision']['retention_pct'] for r in rows)}% | "
          f"{ms(r['audio']['retention_pct'] for r in rows)}% |")
    print(f"\ntext retention {ms(r['text_retention'] for r in rows)}%; merge of 2 task vectors "
          f"{ms(r['merge_seconds'] for r in rows)} s vs one fine-tuning {ms(r['finetune_seconds'] for r in rows)} s; "
          f"merge peak memory {ms(r['merge_memory']['peak_bytes'] / 2**20 for r in rows)} MiB of torch allocations, "
          f"model {rows[0]['model_bytes'] / 2**20:.1f} MiB (fp32)")


if __name__ == "__main__":
    sys.exit(main())
