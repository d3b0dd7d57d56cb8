"""MMER on the default stream: each modality's accuracy against its own fine-tuned model (retention), with the
masks and without them (`-o masks=off`, the masks' ablation), merge time against fine-tuning, and the merge's peak
memory against the model's size.

Usage: python bench/mmer.py [--seeds 0 1 2 3 4] [--threads 2] [--results-dir results/ablations]
                            [--page docs/strategies.md --page README.md]

Each seed runs `mmer` at its defaults with export-dir set, so the per-modality fine-tuned models are kept, and
`mmer -o masks=off` (the same fine-tunes: MMER's fits are shared through the cache, so the second run only merges
and selects). The bench, as the evaluator and not the strategy, scores each exported model on its modality's test
split; those scores are kept in RESULTS_DIR/mmer.json by run key, so a rerun that reuses the result files needs no
export. Finished runs are reused, so the bench can be stopped and run again. Writes RESULTS_DIR/mmer.json and .md
and, with --page (repeatable), each page's MMER table and finding (one sentence) between their markers. The
merge's memory is measured in a fresh process that merges the saved task vectors with the strategy's own function
(peak of torch's CPU allocations, from torch's profiler).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
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
PAGE = "docs/strategies.md"  # the published table's page (MMER, "Measured")
BEGIN = f"<!-- mmer:begin (python bench/mmer.py --page {PAGE}) -->"
END = "<!-- mmer:end -->"
# A page gets whichever of the two sections it has markers for: the table (mmer) and the finding (mmer-findings,
# the README's "<!-- mmer-findings:begin ... -->")
SECTIONS = ("mmer", "mmer-findings")


def own_accuracies(export: Path, stream, base, threads: int, eval_limit: int | None = None) -> dict[str, float]:
    """Each exported per-modality model's accuracy on its own modality's test split (its first `eval_limit` items,
    as the runs score them; the bench as evaluator)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from cl_bench.api.training import TaskData, accuracy
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.multimodal import MultimodalLM

    torch.set_num_threads(threads)
    out = {}
    for exp in stream.experiences:
        lm = AutoModelForCausalLM.from_pretrained(export / exp.modality, local_files_only=True)
        lm.set_experts_implementation("eager")
        model = MultimodalLM(lm, base.tokenizer, {exp.modality: build_encoder(exp.modality)})
        model.projectors[exp.modality].load_state_dict(load_file(str(export / exp.modality / "projector.safetensors")))
        test = exp.test if eval_limit is None else exp.test.select(range(min(eval_limit, len(exp.test))))
        out[exp.name] = accuracy(model, TaskData(test, model, exp.modality), torch.device("cpu"))
    return out


def merge_memory(export: Path, stream, theta0: dict) -> dict:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    paths = []
    for exp in stream.experiences:
        lm = AutoModelForCausalLM.from_pretrained(export / exp.modality, local_files_only=True)
        path = export / f"tau-{exp.modality}.safetensors"
        save_file({n: (p.detach() - theta0[n].detach()).contiguous() for n, p in lm.named_parameters()}, str(path))
        paths.append(str(path))
    probe = subprocess.run([sys.executable, "-c", MERGE_PROBE, *paths], capture_output=True, text=True, check=True)
    return json.loads(probe.stdout)


def measure(seeds, threads: int, results_dir: Path, cache_dir: str | None, steps: int = 400,
            eval_limit: int | None = None) -> dict:
    """Per seed: both runs' final accuracies, the own models' accuracies, times and the merge's memory."""
    import torch

    from cl_bench import registry
    from cl_bench.config import Budget
    from cl_bench.run.base import load_base
    from cl_bench.run.runner import RunConfig, run
    from cl_bench.streams.data import default_cache_dir

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    store = results_dir / "mmer.json"
    kept = json.loads(store.read_text()).get("own", {}) if store.exists() else {}
    stream = registry.streams.get("vision-audio")().build(cache, progress=False)
    base = None
    rows = []
    for seed in seeds:
        export = cache / "bench-mmer" / f"seed{seed}"
        docs = {}
        for masks, options in (("on", {"export-dir": str(export)}), ("off", {"masks": "off"})):
            print(f"mmer masks={masks} seed {seed}", file=sys.stderr, flush=True)
            docs[masks], _ = run(RunConfig(strategy="mmer", seed=seed, device="cpu", results_dir=str(results_dir),
                                           cache_dir=cache_dir, strategy_options=options, threads=threads,
                                           budget=Budget(steps=steps), eval_limit=eval_limit),
                                 progress=False, reuse=True, echo=lambda s: print(s, file=sys.stderr))
        key = docs["on"]["run_key"]
        if key not in kept:
            if not (export / stream.experiences[0].modality / "config.json").exists():
                raise SystemExit(f"the result of mmer seed {seed} was reused but its exported models ({export}) and "
                                 f"their scores ({store}) are gone: delete that run's result file under "
                                 f"{results_dir}/runs and run the bench again")
            if base is None:
                base = load_base("mixtral-tiny", stream, torch.device("cpu"), cache, progress=False)
            kept[key] = {"own": own_accuracies(export, stream, base, threads, eval_limit),
                         "merge_memory": merge_memory(export, stream, dict(base.lm.named_parameters())),
                         "model_bytes": sum(p.numel() * 4 for p in base.lm.parameters())}
        last = {m: d["stages"][-1]["train_stats"] for m, d in docs.items()}
        rows.append({"seed": seed, "run_keys": {m: d["run_key"] for m, d in docs.items()},
                     "final": {m: dict(zip([t["name"] for t in d["stream"]["tasks"]], d["accuracy_matrix"][-1]))
                               for m, d in docs.items()},
                     "acc": {m: d["metrics"]["acc"] for m, d in docs.items()},
                     "own": kept[key]["own"], "merge_memory": kept[key]["merge_memory"],
                     "model_bytes": kept[key]["model_bytes"],
                     "merge_seconds": last["on"]["merge_seconds"], "finetune_seconds": last["on"]["finetune_seconds"],
                     "chosen": {m: s["chosen"] for m, s in last.items()}})
    return {"seeds": list(seeds), "threads": threads, "own": kept, "rows": rows}


def _masks_test(rows):
    """ACC with masks minus without, paired over the rows' seeds, as text, and its verdict."""
    import numpy as np

    from cl_bench.analysis.stats import paired_comparison

    c = paired_comparison(np.array([r["acc"]["on"] for r in rows]), np.array([r["acc"]["off"] for r in rows]))
    verdict = ("a tie" if not c.p_value < 0.05 else ("masks better" if c.mean_diff > 0 else "masks worse"))
    return (f"{c.mean_diff:+.3f}" if math.isnan(c.low) else
            f"{c.mean_diff:+.3f} [{c.low:+.3f}, {c.high:+.3f}], p = {c.p_value:.2g}: {verdict}")


def _retention(rows, masks: str, task: str) -> list[float | None]:
    """Per seed: the task's final accuracy over its own fine-tuned model's (None where that is 0)."""
    return [r["final"][masks][task] / r["own"][task] if r["own"][task] > 0 else None for r in rows]


def table(report: dict) -> str:
    import numpy as np

    from cl_bench.analysis.stats import bootstrap_ci

    rows = report["rows"]
    tasks = [t for t in rows[0]["own"]]

    def cell(values, scale=100.0, unit="%"):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        ci = bootstrap_ci(np.array(values, dtype=float) * scale)  # inside the seeds' range, so the metric's
        if math.isnan(ci.low):
            return f"{ci.mean:.1f}{unit}"
        return f"{ci.mean:.1f}{unit} [{ci.low:.1f}, {ci.high:.1f}]"

    lines = ["| | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines.append("| the modality's own fine-tuned model | "
                 + " | ".join(cell([r["own"][t] for r in rows]) for t in tasks) + " |")
    for masks, label in (("on", "MMER (masks), after the stream"), ("off", "masks off, after the stream")):
        lines.append(f"| {label} | " + " | ".join(cell([r["final"][masks][t] for r in rows]) for t in tasks) + " |")
        lines.append(f"| retention, {'masks' if masks == 'on' else 'masks off'} (over own model) | "
                     + " | ".join(cell(_retention(rows, masks, t)) for t in tasks) + " |")  # n/a: own 0
    mem = [r["merge_memory"]["peak_bytes"] / 2**20 for r in rows]
    seeds = ", ".join(str(r["seed"]) for r in rows)
    lines += ["", f"MMER at its defaults on vision-audio, seeds {seeds}, {report['threads']} threads; mean [95% "
              "bootstrap interval over seeds]. Own model: each per-modality fine-tune (`-o export-dir`) scored on its "
              "modality's test split by the bench. Masks off (`-o masks=off`): an input of modality i runs "
              "theta_0 + alpha * tau*, alpha chosen on validation as with masks; text runs theta_0 either way (its "
              f"retention is 100% by construction). ACC with masks minus without (paired over seeds): "
              f"{_masks_test(rows)}. "
              f"Merging the task vectors took {np.mean([r['merge_seconds'] for r in rows]):.2f} s against "
              f"{np.mean([r['finetune_seconds'] for r in rows]):.1f} s of fine-tuning (mean over seeds); the "
              f"merge's peak of torch's CPU allocations {np.mean(mem):.1f} MiB for a "
              f"{rows[0]['model_bytes'] / 2**20:.1f} MiB model (fp32)."]
    return "\n".join(lines) + "\n"


def findings_markdown(report: dict) -> str:
    """The masks' ablation as one sentence (the README's): each modality's retention over its own fine-tuned
    model with the masks and without them, and ACC with masks minus without, paired over seeds."""
    import numpy as np

    rows = report["rows"]

    def mean(values):
        kept = [v for v in values if v is not None]
        return f"{100 * np.mean(kept):.1f}%" if kept else "n/a"

    tasks = list(rows[0]["own"])
    on = ", ".join(f"{t} {mean(_retention(rows, 'on', t))}" for t in tasks)
    off = ", ".join(f"{t} {mean(_retention(rows, 'off', t))}" for t in tasks)
    return (f"- MMER at its defaults ({len(rows)} seeds) keeps, of each modality's own fine-tuned model's test "
            f"accuracy, {on} with its masks and {off} without them (`-o masks=off`); ACC with masks minus without: "
            f"{_masks_test(rows)}. Text runs the base either way (100% by construction).\n")


def main() -> None:
    from cl_bench.reporting.page import sections_present, write_sections

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every run (part of its key)")
    ap.add_argument("--results-dir", type=Path, default=Path("results/ablations"))
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--steps", type=int, default=400, help="training steps per stage (the published: the default)")
    ap.add_argument("--eval-limit", type=int, default=None, help="score only the first N test items (quick looks)")
    ap.add_argument("--page", dest="pages", type=Path, action="append", default=[],
                    help="write the table and/or the finding into this page between their markers (repeatable; "
                         f"the published ones: {PAGE} and README.md)")
    a = ap.parse_args()
    for page in a.pages:
        sections_present(page, SECTIONS, "MMER table or finding", home=PAGE)
    report = measure(a.seeds, a.threads, a.results_dir, a.cache_dir, a.steps, a.eval_limit)
    text = table(report)
    from cl_bench.results import atomic_write_json, atomic_write_text

    atomic_write_json(a.results_dir / "mmer.json", report)
    bodies = {"mmer": text, "mmer-findings": findings_markdown(report)}
    atomic_write_text(a.results_dir / "mmer.md", text + "\n" + bodies["mmer-findings"])
    print(text + "\n" + bodies["mmer-findings"])
    for page in a.pages:
        write_sections(page, bodies, "MMER table or finding", home=PAGE)


if __name__ == "__main__":
    from cl_bench.errors import script_main

    script_main(main)
