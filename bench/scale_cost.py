"""Parameters and seconds per training step of the default family's presets at each size (the scale axis).

Usage: python bench/scale_cost.py [--presets mixtral-tiny mixtral-small mixtral-medium] [--steps 6]
       [--batch 32] [--threads 1] [--stages 3] [--json FILE]

Each preset is built from its config with random weights (a step's cost does not depend on them) and the
default stream's vocabulary, wrapped with the stream's encoders as a run does, and fully fine-tuned (LM and
projector, full-ft's recipe) on the stream's vision training split with batch 32 on the CPU. Seconds per step
are (time of 2 + N steps - time of 2 steps) / N: the first step of every loop runs under torch's FLOP counter and
the first steps warm the allocator, so both cancel. The last column extrapolates one seed of the default budget
(--stages stages, default the stream's new tasks, x 400 steps; training only: evaluation and
pre-training not included) at that rate.
"""

from __future__ import annotations

import argparse
import json
import time

DEFAULT_PRESETS = ("mixtral-tiny", "mixtral-small", "mixtral-medium")
WARMUP = 2


def measure(preset: str, stream, steps: int, batch: int) -> dict:
    """Parameters of `preset` (LM, and the run's model with encoders and projectors) and its seconds per step."""
    import torch
    from transformers import AutoModelForCausalLM

    from cl_bench.api.training import TaskData, train
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import (
        _set_experts,
        preset_config,
        stream_words,
        word_tokenizer,
    )
    from cl_bench.models.multimodal import MultimodalLM

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    tok = word_tokenizer(stream_words(stream))
    config = preset_config(preset, len(tok), tok)
    lm = AutoModelForCausalLM.from_config(config)
    _set_experts(lm, cpu)  # eager experts on the CPU, as a run
    exp = stream.experiences[0]  # the default stream's first new task (vision)
    model = MultimodalLM(lm, tok, {exp.modality: build_encoder(exp.modality)})
    data = TaskData(exp.train, model, exp.modality)
    params = list(model.parameters())
    times = []
    for n in (WARMUP, WARMUP + steps):  # the difference is `steps` steps without either loop's first-step costs
        s = train(model, data, [{"params": params, "lr": 3e-5}], steps=n, batch_size=batch, seed=0, device=cpu,
                  progress=False)
        times.append(s.seconds)
    n_experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    return {"preset": preset, "hidden": config.hidden_size, "layers": config.num_hidden_layers,
            "experts": n_experts, "top_k": config.num_experts_per_tok,
            "lm_parameters": sum(p.numel() for p in lm.parameters()),
            "parameters": sum(p.numel() for p in params),
            "seconds_per_step": max(0.0, times[1] - times[0]) / steps}


def table(rows: list[dict], batch: int, threads: int, stages: int, steps_per_stage: int) -> str:
    head = (f"| preset | hidden | layers | experts (top-k) | LM parameters | run parameters | s/step (batch {batch}, "
            f"{threads} thread{'s' if threads > 1 else ''}) | vs first | training h/seed ({stages} x "
            f"{steps_per_stage} steps) |")
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ref = rows[0]["seconds_per_step"] if rows else 0
    for r in rows:
        sps = r["seconds_per_step"]
        out.append(f"| {r['preset']} | {r['hidden']} | {r['layers']} | {r['experts']} ({r['top_k']}) | "
                   f"{r['lm_parameters']:,} | {r['parameters']:,} | {sps:.3f} | "
                   f"{sps / ref if ref else float('nan'):.1f}x | {sps * stages * steps_per_stage / 3600:.2f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS))
    ap.add_argument("--steps", type=int, default=6, help=f"timed steps per preset (after {WARMUP} warm-up steps)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stages", type=int, default=None, help="stages of one run, for the hours column [default: "
                                                             "the stream's new tasks]; pre-training not included")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    import torch

    from cl_bench.config import Budget
    from cl_bench.run.runner import _quiet_libraries
    from cl_bench.streams import resolve
    from cl_bench.streams.data import default_cache_dir

    torch.set_num_threads(args.threads)
    _quiet_libraries()
    _, stream = resolve.load("vision-audio", cache_dir=args.cache_dir or default_cache_dir(), progress=False)
    rows = []
    for preset in args.presets:
        t0 = time.perf_counter()
        rows.append(measure(preset, stream, args.steps, args.batch))
        print(f"{preset}: {rows[-1]['seconds_per_step']:.3f} s/step ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\nfull fine-tuning on vision-audio's vision split, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)\n")
    print(table(rows, args.batch, args.threads, args.stages or len(stream.experiences), Budget().steps))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": args.batch, "threads": args.threads, "steps": args.steps, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
