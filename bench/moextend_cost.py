"""MoExtend's cost against full fine-tuning, decomposed: step time and peak memory on CPU models of three
sizes, the memory plan's estimate beside each measured peak, and the plan extrapolated to Mixtral-8x7B.

Usage: python bench/moextend_cost.py [--hidden 128,512,1024] [--steps 10] [--batch 8] [--out FILE]

Each (size, strategy) runs in a fresh process: a Mixtral-family LM (4 layers, 8 experts, top-2,
intermediate 3.5 x hidden, as Mixtral-8x7B's 14336 / 4096; random weights: cost does not depend
on them) with vision-audio's vision encoder learns vision-audio's first experience (vision) through
the strategy's own `learn` with the given budget (MoExtend: alignment, router tuning, fine-tuning;
full-ft: alignment, then everything). The process's peak resident memory (getrusage) minus its
resident memory just before the model is built (after one warm-up step of a tiny model) is the measured
peak, with glibc's mmap threshold fixed (MALLOC_MMAP_THRESHOLD_=65536) so that it follows the
allocations; the peak under the default allocator is recorded too; cl_bench.plan's training peak
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
    from cl_bench import stream as streams
    from cl_bench.config import Budget
    from cl_bench.data import default_cache_dir
    from cl_bench.models.encoders import build_encoder
    from cl_bench.models.lm import stream_words, word_tokenizer
    from cl_bench.models.multimodal import MultimodalLM
    from cl_bench.plan import make_plan
    from cl_bench.strategy import RunContext

    torch.manual_seed(0)
    _, stream = streams.load("vision-audio", cache_dir=default_cache_dir(), progress=False)
    first = stream.experiences[0].without_test()
    stream = dataclasses.replace(stream, experiences=(first,))
    tok = word_tokenizer(stream_words(stream))
    config = AutoConfig.for_model("mixtral", vocab_size=len(tok), pad_token_id=tok.pad_token_id, **shape(hidden))
    cls = registry.strategies.get(strategy)
    encoders = {first.modality: build_encoder(first.modality, None)}
    plan = make_plan(f"mixtral-h{hidden}", cls(), config, tok, encoders, stream, batch_size=batch,
                     eval_batch_size=256, dtype=torch.float32, device=torch.device("cpu"))
    _warm_up(config)  # the kernels' code and the allocator's pools belong to the process, not to the model
    baseline = psutil.Process().memory_info().rss
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    main_phase = stats["finetune"] if strategy == "moextend" else stats
    return {"hidden": hidden, "strategy": strategy, "parameters": plan.parameters, "learn_seconds": round(seconds, 2),
            "seconds_per_step": main_phase["seconds_per_step"], "measured_peak": peak,
            "planned_peak": plan.bytes["train"], "plan": plan.bytes, "seq_len": plan.seq_len}


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


def extrapolate() -> list[dict]:
    """cl_bench.plan on Mixtral-8x7B's shape (meta device: nothing allocated), bfloat16, LLaVA-like batches."""
    import torch
    from transformers import AutoConfig

    from cl_bench import registry
    from cl_bench.plan import make_plan
    from cl_bench.models.lm import word_tokenizer
    from cl_bench.models.encoders import Encoder

    class CLIPL336(Encoder):  # shapes only: 576 tokens of 1024 features, 304M frozen parameters
        modality, name, out_dim = "image", "clip-l-336", 1024

    import dataclasses as dc
    from cl_bench import stream as streams
    from cl_bench.data import default_cache_dir

    _, stream = streams.load("vision-audio", cache_dir=default_cache_dir(), progress=False)
    first = stream.experiences[0].without_test()
    stream = dc.replace(stream, experiences=(dc.replace(first, modality="image"),))
    config = AutoConfig.for_model("mixtral", **MIXTRAL_8X7B)
    out = []
    for strategy in ("full-ft", "moextend"):
        for ckpt in (False, True):
            enc = CLIPL336()
            enc.featurize = lambda raw: torch.zeros(len(raw), 3, 336, 336)
            plan = make_plan("mixtral-8x7b", registry.strategies.get(strategy)(), config, word_tokenizer(["a"]),
                             {"image": enc}, stream, batch_size=16, eval_batch_size=16, dtype=torch.bfloat16,
                             device=torch.device("cuda"), checkpointing=ckpt, seq_len=2048)
            b = plan.bytes
            out.append({"strategy": strategy, "checkpointing": ckpt, "parameters": plan.parameters,
                        "states_gb": round((b["weights"] + b["gradients"] + b["optimizer"] + b["held"]) / 1e9, 1),
                        "activations_gb": round(b["activations"] / 1e9, 1), "train_peak_gb": round(b["train"] / 1e9, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="128,512,1024")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    ap.add_argument("--child", nargs=2, metavar=("HIDDEN", "STRATEGY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.steps, args.batch)))
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
                  f"{row['measured_peak'] / 1e6:8.1f} MB (default allocator {row['default_allocator_peak'] / 1e6:.1f})  "
                  f"planned {row['planned_peak'] / 1e6:8.1f} MB ({err:+.0%})",
                  flush=True)
    for h in sorted({r["hidden"] for r in rows}):
        ft, mx = [next(r for r in rows if r["hidden"] == h and r["strategy"] == s) for s in ("full-ft", "moextend")]
        print(f"hidden {h}: full-ft / moextend step time {ft['seconds_per_step'] / mx['seconds_per_step']:.2f}x, "
              f"peak memory {ft['measured_peak'] / mx['measured_peak']:.2f}x")
    big = extrapolate()
    for r in big:
        print(f"Mixtral-8x7B {r['strategy']:9s} checkpointing={r['checkpointing']!s:5}  trainable "
              f"{r['parameters']['trainable'] / 1e9:.2f}B  weights+grads+states {r['states_gb']} GB  activations "
              f"{r['activations_gb']} GB  training peak {r['train_peak_gb']} GB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "mixtral_8x7b": big, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
