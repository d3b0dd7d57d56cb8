"""MoExtend's cost against full fine-tuning, decomposed: step time and peak memory on CPU models of three
sizes, the memory plan's estimate beside each measured peak, and the plan extrapolated to Mixtral-8x7B.

Usage: python bench/moextend_cost.py [--hidden 128,512,1024] [--steps 10] [--batch 32] [--out FILE]
       [--page docs/benchmarks.md]     (or --from FILE --page docs/benchmarks.md: the table from an earlier run's JSON)
       python bench/moextend_cost.py --profile 512   (where a step's time goes)

Each (size, strategy) runs in a fresh process: a Mixtral-family LM (4 layers, 8 experts, top-2,
intermediate 3.5 x hidden, as Mixtral-8x7B's 14336 / 4096; random weights: cost does not depend
on them) with vision-audio's vision encoder learns vision-audio's first experience (vision) through
the strategy's own `learn` with the given budget (MoExtend: alignment, router tuning, fine-tuning;
full-ft: alignment, then everything). The process's peak resident memory (VmHWM) minus its
resident memory just before the model is built (after one warm-up step of a tiny model; the kernel's
peak record reset there, /proc/self/clear_refs) is the measured peak, with glibc's mmap threshold
fixed (MALLOC_MMAP_THRESHOLD_=65536) so that it follows the allocations; the peak under the
default allocator is recorded too; cl_bench.run.plan's training peak
for the same configuration is printed beside it. Step times are the medians the training loop
records (s/step of MoExtend's fine-tuning phase and of full-ft's full phase).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

MIXTRAL_8X7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000)


def shape(hidden: int) -> dict:
    heads = max(2, hidden // 64)
    return dict(hidden_size=hidden, intermediate_size=int(3.5 * hidden), num_hidden_layers=4,
                num_attention_heads=heads, num_key_value_heads=max(1, heads // 4), num_local_experts=8,
                num_experts_per_tok=2, max_position_embeddings=512, tie_word_embeddings=False)


def child(hidden: int, strategy: str, steps: int, batch: int) -> dict:
    import psutil
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from cl_bench import registry
    from cl_bench.streams import resolve
    from cl_bench.config import Budget
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import stream_words, word_tokenizer
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.run.plan import make_plan
    from cl_bench.api.strategy import RunContext

    torch.manual_seed(0)
    _, stream = resolve.load("vision-audio", cache_dir=default_cache_dir(), progress=False)
    first = stream.experiences[0].without_test()
    stream = dataclasses.replace(stream, experiences=(first,), mixed=())  # one task: no mixed-modality probe
    tok = word_tokenizer(stream_words(stream))
    config = AutoConfig.for_model("mixtral", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **shape(hidden))
    cls = registry.strategies.get(strategy)
    encoders = {first.modality: build_encoder(first.modality, None)}
    plan = make_plan(f"mixtral-h{hidden}", cls(), config, tok, encoders, stream, batch_size=batch,
                     eval_batch_size=256, dtype=torch.float32, device=torch.device("cpu"))
    _warm_up(config)  # the kernels' code and the allocator's pools belong to the process, not to the model
    baseline = psutil.Process().memory_info().rss
    reset = _reset_peak()  # what the process held before (the stream's loading, the warm-up) is not counted
    lm = AutoModelForCausalLM.from_config(config)
    lm.set_experts_implementation("eager")
    model = MultimodalLM(lm, tok, encoders)
    s = cls()
    s.setup(model, RunContext(device=torch.device("cpu"), seed=0, budget=Budget(steps=steps, batch_size=batch),
                              stream=stream.name, tasks=tuple(t.info for t in stream.tasks), progress=False,
                              base=stream.base.without_test()))
    t0 = time.perf_counter()
    stats = s.learn(first)
    seconds = time.perf_counter() - t0
    peak = _peak(reset) - baseline
    main_phase = stats["finetune"] if strategy == "moextend" else stats
    # FLOPs per training example of the main phase (torch's FlopCounterMode on its first step, cl_bench.api.training)
    phases = s.take_training_record()
    main = next(p for p in phases if p["phase"].endswith("fine-tuning") or p["phase"] == first.name)
    return {"hidden": hidden, "strategy": strategy, "parameters": plan.parameters, "learn_seconds": round(seconds, 2),
            "seconds_per_step": main_phase["seconds_per_step"], "measured_peak": peak,
            "planned_peak": plan.bytes["train"], "plan": plan.bytes, "seq_len": plan.seq_len,
            "flops_per_example": main["flops"] / max(1, main["examples"])}


def _reset_peak() -> bool:
    """Reset the kernel's record of this process's peak resident memory (Linux: /proc/self/clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak(reset: bool) -> int:
    """Peak resident bytes since `_reset_peak` (VmHWM), or over the process's life where it could not reset."""
    if reset:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_up(config) -> None:
    """One training step of a tiny model of the same family, so that the libraries' lazily loaded code (oneDNN,
    MKL, autograd) is resident before the baseline is read."""
    import torch
    from transformers import AutoModelForCausalLM

    small = config.__class__.from_dict({**config.to_dict(), "hidden_size": 64, "intermediate_size": 128,
                                        "num_attention_heads": 2, "num_key_value_heads": 1})
    lm = AutoModelForCausalLM.from_config(small)
    lm.set_experts_implementation("eager")
    ids = torch.randint(0, small.vocab_size, (4, 16))
    opt = torch.optim.AdamW(lm.parameters())
    lm(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    del lm, opt


def profile(hidden: int, batch: int, length: int = 19) -> dict:
    """Seconds of the forward, backward and AdamW step of one training step with every weight trained against
    none (the gradient flowing to the input embeddings only, as in MoExtend's frozen base), median of 3 after one
    warm-up step."""
    import statistics

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model("mixtral", vocab_size=300, **shape(hidden)))
    lm.set_experts_implementation("eager")
    ids = torch.randint(0, 300, (batch, length), generator=torch.Generator().manual_seed(0))
    out = {}
    for mode in ("every weight trained", "nothing trained"):
        lm.requires_grad_(mode == "every weight trained")
        embeds = lm.get_input_embeddings()(ids).detach().requires_grad_(True)
        opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad] or [embeds])
        parts = {"forward": [], "backward": [], "optimizer": []}
        for step in range(4):
            t0 = time.perf_counter()
            loss = lm(inputs_embeds=embeds, labels=ids).loss
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if step:
                for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2)):
                    parts[k].append(v)
        out[mode] = {k: round(statistics.median(v), 3) for k, v in parts.items()}
    return out


def extrapolate() -> list[dict]:
    """cl_bench.run.plan on Mixtral-8x7B's shape (meta device: nothing allocated), bfloat16, LLaVA-like batches."""
    import torch
    from transformers import AutoConfig

    from cl_bench import registry
    from cl_bench.streams import resolve
    from cl_bench.streams.data import default_cache_dir
    from cl_bench.models.encoders import Encoder
    from cl_bench.models.lm import word_tokenizer
    from cl_bench.run.plan import make_plan

    class CLIPL336(Encoder):
        """CLIP ViT-L/14-336's shapes only: 576 tokens of 1024 features, its 303,966,208 frozen parameters on the
        meta device (counted, not allocated)."""

        modality, name, out_dim = "image", "clip-l-336", 1024

        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.Parameter(torch.empty(303_966_208, device="meta"), requires_grad=False)

        def featurize(self, raw: list) -> torch.Tensor:
            return torch.zeros(len(raw), 3, 336, 336)  # pixel values at 336 px

    _, stream = resolve.load("vision-audio", cache_dir=default_cache_dir(), progress=False)
    first = stream.experiences[0].without_test()
    stream = dataclasses.replace(stream, experiences=(dataclasses.replace(first, modality="image"),), mixed=())
    config = AutoConfig.for_model("mixtral", **MIXTRAL_8X7B)
    out = []
    for strategy in ("full-ft", "moextend"):
        for ckpt in (False, True):
            enc = CLIPL336()
            plan = make_plan("mixtral-8x7b", registry.strategies.get(strategy)(), config, word_tokenizer(["a"]),
                             {"image": enc}, stream, batch_size=16, eval_batch_size=16, dtype=torch.bfloat16,
                             device=torch.device("cuda"), checkpointing=ckpt, seq_len=2048)
            b = plan.bytes
            out.append({"strategy": strategy, "checkpointing": ckpt, "parameters": plan.parameters,
                        "states_gb": round((b["weights"] + b["gradients"] + b["optimizer"] + b["held"]) / 1e9, 1),
                        "activations_gb": round(b["activations"] / 1e9, 1),
                        "train_peak_gb": round(b["train"] / 1e9, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="128,512,1024")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32, help="examples per step (clbench's default budget: 32)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--page", "--readme", dest="page", default=None,
                    help=f"write the table into this page between its markers (the published one: {PAGE}; --readme is "
                         "the option's former name)")
    ap.add_argument("--from", dest="source", default=None, help="render --page from this JSON without running")
    ap.add_argument("--child", nargs=2, metavar=("HIDDEN", "STRATEGY"), help=argparse.SUPPRESS)
    ap.add_argument("--profile", type=int, metavar="HIDDEN", default=None,
                    help="only time the forward, backward and optimizer of a step at this hidden size, with every "
                         "weight trained and with none")
    args = ap.parse_args()
    if args.profile:
        for mode, parts in profile(args.profile, args.batch).items():
            print(f"hidden {args.profile}, batch {args.batch} x 19, {mode}: "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in parts.items()))
        return
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.steps, args.batch)))
        return
    if args.page:
        check_page(args.page)  # before the runs (minutes), not after
    if args.source:
        with open(args.source) as f:
            write_page(args.page, json.load(f))
        return
    rows = []
    for h in [int(x) for x in args.hidden.split(",")]:
        for strategy in ("full-ft", "moextend"):
            cmd = [sys.executable, __file__, "--child", str(h), strategy, "--steps", str(args.steps), "--batch",
                   str(args.batch)]
            # timing with the default allocator; memory with glibc's mmap threshold fixed, so that resident memory
            # follows torch's allocations (its dynamic threshold keeps freed blocks resident: up to +20% here)
            timed = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                            env=env).stdout.splitlines()[-1])
            row["default_allocator_peak"] = timed["measured_peak"]
            row["seconds_per_step"], row["learn_seconds"] = timed["seconds_per_step"], timed["learn_seconds"]
            rows.append(row)
            err = row["planned_peak"] / row["measured_peak"] - 1
            print(f"hidden {h:5d} {strategy:9s} params {row['parameters']['total']:>12,} trainable "
                  f"{row['parameters']['trainable']:>12,}  {row['seconds_per_step']:.3f} s/step  measured peak "
                  f"{row['measured_peak'] / 1e6:8.1f} MB "
                  f"(default allocator {row['default_allocator_peak'] / 1e6:.1f})  "
                  f"planned {row['planned_peak'] / 1e6:8.1f} MB ({err:+.0%})",
                  flush=True)
    for h in sorted({r["hidden"] for r in rows}):
        ft, mx = [next(r for r in rows if r["hidden"] == h and r["strategy"] == s) for s in ("full-ft", "moextend")]
        print(f"hidden {h}: full-ft / moextend step time {ft['seconds_per_step'] / mx['seconds_per_step']:.2f}x, "
              f"FLOPs per example {ft['flops_per_example'] / mx['flops_per_example']:.2f}x, "
              f"peak memory {ft['measured_peak'] / mx['measured_peak']:.2f}x")
    big = extrapolate()
    for r in big:
        print(f"Mixtral-8x7B {r['strategy']:9s} checkpointing={r['checkpointing']!s:5}  trainable "
              f"{r['parameters']['trainable'] / 1e9:.2f}B  weights+grads+states {r['states_gb']} GB  activations "
              f"{r['activations_gb']} GB  training peak {r['train_peak_gb']} GB")
    doc = {"rows": rows, "mixtral_8x7b": big, "args": vars(args)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
    if args.page:
        write_page(args.page, doc)


PAGE = "docs/benchmarks.md"  # the published table's page ("Memory plan and MoExtend's cost")
BEGIN, END = "<!-- moextend-cost:begin -->", "<!-- moextend-cost:end -->"


def table(doc: dict) -> str:
    """The page's table, from the bench's JSON."""
    lines = ["| hidden | strategy | parameters | trainable | s/step | FLOPs/example | measured peak | planned | "
             "plan error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        err = r["planned_peak"] / r["measured_peak"] - 1
        lines.append(f"| {r['hidden']} | {r['strategy']} | {r['parameters']['total'] / 1e6:.1f}M | "
                     f"{r['parameters']['trainable'] / 1e6:.2f}M | {r['seconds_per_step']:.3f} | "
                     f"{r['flops_per_example'] / 1e9:.2f} G | {r['measured_peak'] / 1e6:.1f} MB | "
                     f"{r['planned_peak'] / 1e6:.1f} MB | {err:+.0%} |")
    lines += ["", "| hidden | full-ft / MoExtend: step time | FLOPs per example | measured peak |", "|---|---|---|---|"]
    for h in sorted({r["hidden"] for r in doc["rows"]}):
        ft, mx = [next(r for r in doc["rows"] if r["hidden"] == h and r["strategy"] == s)
                  for s in ("full-ft", "moextend")]
        lines.append(f"| {h} | {ft['seconds_per_step'] / mx['seconds_per_step']:.2f}x | "
                     f"{ft['flops_per_example'] / mx['flops_per_example']:.2f}x | "
                     f"{ft['measured_peak'] / mx['measured_peak']:.2f}x |")
    lines += ["", "| Mixtral-8x7B (plan) | checkpointing | trainable | weights + gradients + states | activations | "
              "training peak |", "|---|---|---|---|---|---|"]
    for r in doc["mixtral_8x7b"]:
        lines.append(f"| {r['strategy']} | {'yes' if r['checkpointing'] else 'no'} | "
                     f"{r['parameters']['trainable'] / 1e9:.2f}B | {r['states_gb']} GB | {r['activations_gb']} GB | "
                     f"{r['train_peak_gb']} GB |")
    return "\n".join(lines) + "\n"


def check_page(path: str) -> None:
    from cl_bench.results import check_markers

    check_markers(path, BEGIN, END, "MoExtend cost table", home=PAGE)


def write_page(path: str, doc: dict) -> None:
    from cl_bench.results import write_between

    check_page(path)
    write_between(path, BEGIN, END, table(doc), "MoExtend cost table", home=PAGE)


if __name__ == "__main__":
    from cl_bench.errors import script_main

    script_main(main)
